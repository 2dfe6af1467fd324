"""Erasure benchmark (issue 15): what per-person encryption costs, and how fast an erased person
is forgotten. One run, real processes, loopback only, every ratio against a baseline measured in
the same run on the same machine:

1. view command rate, sealed vs clear: ``stories command-api`` on a fresh SQLite log, started with
   ``STORIES_ENCRYPT_PERSONAL_DATA=true`` and ``=false`` in turns (A B B A ..., BENCH_ERASURE_ROUNDS
   pairs), each under write_side's view load (the same tokens, stories and load generator); the
   medians are compared (goal >= 0.9). Each log is checked afterwards for sealed (or clear) views,
   so a setting that did not take is caught rather than reported as "no cost";
2. projector rate, sealed vs clear: two logs of the same generated workload (``SyntheticLoad`` with
   the same seed through the application service in-process, ``EventStore(encrypt=True/False)``),
   each projected from position 0 into fresh read models on the embedded SecantusDB + Valkey by the
   incremental ``ProjectionRunner``s (MongoViewStore and RedisViewStore, batch 1000, one thread
   each, as ``stories projector`` runs them), on a fresh ``EventStore`` per run (a cold key cache,
   like a projector just started); alternated A B B A, medians compared (goal >= 0.9);
3. erasing a person with BENCH_ERASURE_PERSON_EVENTS events (their views, poll votes and question
   answers on other people's stories, follows both ways, close friends, mutes, and stories of their
   own that other people viewed and answered) among other people's events: the log is seeded
   through the application service, ``stories run`` projects it, then the person's
   ``DELETE /api/v1/account`` is sent; measured: the call itself, and the time from sending it
   until both read models' positions are past the ``AccountErased`` and no MongoDB document
   (every collection of the read-model database) and no Redis key under the prefix (name or
   content) names the person. Baseline, same stack just before: the lag of one ordinary event
   (a view by a new user: from sending it until both read models' positions cover it), sampled
   BENCH_ERASURE_LAG_SAMPLES times; goal: forgotten within that lag's p99 (ratio <= 1).

Beside each headline rate, the CPU its process spent per view / per event, sealed vs clear: on a
busy 2-core machine the rates swing with other work, the CPU per unit much less.

Nothing asserts on timing; the rows only report. Knobs (environment): BENCH_ERASURE_DURATION_S (8),
BENCH_ERASURE_ROUNDS (5: pairs of runs for rows 1 and 2; fewer pairs left the ratio to noise), BENCH_CONNECTIONS (64), BENCH_USERS (10000),
BENCH_ERASURE_LOG_EVENTS (12000), BENCH_ERASURE_PERSON_EVENTS (10000), BENCH_ERASURE_LAG_SAMPLES (40),
BENCH_LOADGEN=python.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    CpuMeter,
    EmbeddedBackends,
    LoadResult,
    LoadSpec,
    Process,
    Row,
    Stack,
    free_port,
    generator_name,
    http_request,
    log,
    median,
    mint_tokens,
    percentile,
    run_load,
    seeding_application,
)
from bench.write_side import (
    CONNECTIONS,
    LOAD_STORIES,
    PLAIN_STORY,
    SECRET,
    STORIES_BIN,
    USERS,
    server_env,
    view_requests,
)

DURATION_S = float(os.environ.get("BENCH_ERASURE_DURATION_S", "8"))
WARMUP_S = float(os.environ.get("BENCH_ERASURE_WARMUP_S", "5"))  # long enough for one view by each user
ROUNDS = max(1, int(os.environ.get("BENCH_ERASURE_ROUNDS", "5")))
LOG_EVENTS = int(os.environ.get("BENCH_ERASURE_LOG_EVENTS", "12000"))
PERSON_EVENTS = int(os.environ.get("BENCH_ERASURE_PERSON_EVENTS", "10000"))
LAG_SAMPLES = int(os.environ.get("BENCH_ERASURE_LAG_SAMPLES", "40"))
GENERATE_LIMIT_S = 120.0
PROJECT_LIMIT_S = 120.0
CATCH_UP_LIMIT_S = 180.0
FORGET_LIMIT_S = 30.0
POLL_S = 0.002  # how often positions are read while timing a lag

DATABASE, PREFIX = "stories", "stories:"  # what ``stories run`` projects into (settings' defaults)


def alternating(rounds: int) -> list[bool]:
    """True (sealed) / False (clear) in A B B A order, so a drift of the machine weighs on both."""
    order: list[bool] = []
    for r in range(rounds):
        order += [True, False] if r % 2 == 0 else [False, True]
    return order


def label(sealed: bool) -> str:
    return "sealed" if sealed else "clear"


def sealed_share(sqlite_path: Path, topic_suffix: str) -> tuple[int, int]:
    """(events of that type whose stored state holds a sealed value, events of that type)."""
    with sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True) as c:
        rows = c.execute("SELECT state FROM stored_events WHERE topic LIKE ?", (f"%{topic_suffix}",)).fetchall()
    return sum(1 for (state,) in rows if b'"$pd"' in bytes(state)), len(rows)


# -- 1. the view command rate, sealed vs clear ------------------------------------------------


@dataclass
class ViewRun:
    sealed: bool
    load: LoadResult
    cores: float
    sealed_views: int
    views: int


def measure_views(sealed: bool, tokens: list[str], n: int) -> ViewRun:
    with tempfile.TemporaryDirectory(prefix="stories-bench-erasure-views-") as tmp:
        data_dir = Path(tmp)
        port = free_port()
        env = server_env(data_dir, port)
        env["STORIES_ENCRYPT_PERSONAL_DATA"] = "true" if sealed else "false"
        server = Process(f"command-api-erasure-{label(sealed)}-{n}", [str(STORIES_BIN), "command-api"], env=env)
        try:
            server.wait_http(port)
            stories = []
            for owner in mint_tokens(SECRET, [f"owner-{i}" for i in range(LOAD_STORIES)]):
                status, body = http_request("POST", port, "/api/v1/stories", body=PLAIN_STORY, token=owner)
                if status != 201:
                    raise RuntimeError(f"creating a story answered {status}: {body[:300]!r}")
                stories.append(json.loads(body)["story_id"])
            requests = view_requests(stories, tokens)
            # Warm-up: a view by every user, so that each has written before (their key exists, as
            # for anyone but a brand-new account, whose first event costs one more insert).
            run_load(
                LoadSpec(port, requests[: len(tokens)], duration_s=WARMUP_S, connections=CONNECTIONS),
                f"erasure-views-warmup-{n}",
            )
            cpu = CpuMeter(server.pid).start()
            result = run_load(
                LoadSpec(port, requests, duration_s=DURATION_S, connections=CONNECTIONS),
                f"erasure-views-{label(sealed)}-{n}",
            )
            cpu.stop()
        finally:
            server.stop()
        sealed_views, views = sealed_share(data_dir / "events.sqlite3", "StoryViewed")
    return ViewRun(sealed, result, cpu.process_cores, sealed_views, views)


def view_rows(tokens: list[str]) -> list[Row]:
    runs: list[ViewRun] = []
    for n, sealed in enumerate(alternating(ROUNDS)):
        log(
            f"views, {label(sealed)} (STORIES_ENCRYPT_PERSONAL_DATA={str(sealed).lower()}), run {n + 1}/{2 * ROUNDS}: "
            f"{generator_name()}, {CONNECTIONS} connections, {DURATION_S:g} s"
        )
        run = measure_views(sealed, tokens, n)
        runs.append(run)
        log(
            f"  {run.load.ok_rps:,.0f} 2xx req/s ({run.load.non_2xx} non-2xx, {run.load.socket_errors} socket errors), "
            f"server {run.cores:.2f} cores; {run.sealed_views:,} of {run.views:,} StoryViewed sealed in the log"
        )
    by = {s: [r for r in runs if r.sealed == s] for s in (True, False)}
    rate = {s: median([r.load.ok_rps for r in by[s]]) for s in by}
    wrong = [r for r in runs if (r.sealed_views != r.views if r.sealed else r.sealed_views > 0)]

    def trail(s: bool) -> str:
        return ", ".join(f"{r.load.ok_rps:,.0f}" for r in by[s])

    def per_view_us(s: bool) -> float:
        return median([r.cores / r.load.ok_rps * 1e6 for r in by[s] if r.load.ok_rps])

    errors = sum(r.load.non_2xx + r.load.socket_errors for r in runs)
    note = (
        f"median of {ROUNDS} runs each, alternated A B B A, a fresh SQLite log and server per run, after a "
        f"warm-up of one view by every user (their keys exist); sealed runs "
        f"{trail(True)} req/s, clear runs {trail(False)} req/s; CPU per view {per_view_us(True):.0f} µs sealed / "
        f"{per_view_us(False):.0f} µs clear; {errors} non-2xx + socket errors in all; log check: "
        + (
            "every sealed run's StoryViewed sealed, no clear run's"
            if not wrong
            else "SETTING DID NOT TAKE in "
            + ", ".join(f"{label(r.sealed)} run ({r.sealed_views}/{r.views} sealed)" for r in wrong)
        )
    )
    return [
        Row(
            f"erasure cost: views POST /stories/{{id}}/view with per-person encryption, {USERS:,} users",
            rate[True],
            "req/s",
            baseline=rate[False],
            baseline_name="same load, encryption off, same run",
            goal=(">=", 0.9),
            note=note,
        ),
        Row(
            "erasure cost: command API CPU per view with per-person encryption",
            per_view_us(True),
            "µs",
            baseline=per_view_us(False),
            baseline_name="encryption off, same run",
            note="server process CPU (all threads) / 2xx views, medians of the same runs",
        ),
    ]


# -- 2. the projector rate, sealed vs clear -----------------------------------------------------


async def _generate(path: Path, sealed: bool, events: int, users: int, stories: int, seed: int) -> dict:
    from commands.application import StoriesApplication
    from commands.event_store import EventStore
    from commands.group_commit import GroupCommitter
    from commands.synthetic_load import SyntheticLoad
    from domain.platform import Platform

    class MostlyPublic(SyntheticLoad):  # as bench.replay's log: most random views are accepted
        def _privacy(self) -> str:
            r = self.rng.random()
            return (
                "public"
                if r < 0.7
                else self.app.platform.audience
                if r < 0.8
                else "close_friends"
                if r < 0.9
                else "custom"
            )

    store = EventStore(f"sqlite:///{path.resolve()}", encrypt=sealed)
    committer = GroupCommitter(store)
    app = StoriesApplication(store, committer, Platform.VIGNETTE)
    load = MostlyPublic(app, users, seed)
    started = time.perf_counter()
    try:
        await load.social()
        await load.stories(stories)
        head = store.head()
        while True:  # engagement (views, replies, sticker answers) fills the log, at least one round of it
            await load.engagement(max(1000, min(20_000, int((events - head) * 1.5))))
            head = store.head()
            if head >= events or time.perf_counter() - started > GENERATE_LIMIT_S:
                break
    finally:
        committer.close()
        store.close()
    return {"head": head, "seconds": time.perf_counter() - started}


@dataclass
class ProjectionRun:
    sealed: bool
    events: int
    seconds: float
    cores: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else float("nan")


def project(path: Path, sealed: bool, mongo, client, n: int) -> ProjectionRun:
    """Project the whole log into fresh read models with the incremental runners, as the projector does."""
    from commands.event_store import EventStore
    from projections.mongo_views import MongoViewStore
    from projections.redis_views import RedisViewStore
    from projections.runner import ProjectionRunner

    store = EventStore(f"sqlite:///{path.resolve()}")  # fresh: its key cache starts cold
    head = store.head()
    database, prefix = f"erasure_{label(sealed)}_{n}", f"erasure{n}:"
    runners = [
        ProjectionRunner(store, MongoViewStore(mongo, database), 1000),
        ProjectionRunner(store, RedisViewStore(client, prefix), 1000),
    ]
    deadline = time.monotonic() + PROJECT_LIMIT_S

    def follow(runner) -> None:
        while (runner.position or 0) < head and time.monotonic() < deadline and runner.run_once(head):
            pass

    threads = [threading.Thread(target=follow, args=(r,), name=f"project-{r.view.name}") for r in runners]
    me = CpuMeter(os.getpid()).start()
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(PROJECT_LIMIT_S + 30)
    seconds = time.perf_counter() - t0
    me.stop()
    reached = min(r.position or 0 for r in runners)
    if reached < head:
        log(f"  projection stopped at {reached:,} of {head:,} (time limit)")
    events = min(r.applied for r in runners)
    store.close()
    mongo.drop_database(database)
    client.flushdb()
    return ProjectionRun(sealed, events, seconds, me.process_cores)


def projector_rows() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="stories-bench-erasure-proj-") as tmp:
        tmp_dir = Path(tmp)
        users, stories = 200, max(100, LOG_EVENTS // 20)
        paths, info = {}, {}
        for sealed in (True, False):
            paths[sealed] = tmp_dir / f"log-{label(sealed)}.sqlite3"
            log(
                f"generating a {LOG_EVENTS:,}-event log, {label(sealed)} (SyntheticLoad seed 7, {users} users, "
                f"{stories:,} stories, through the application service)"
            )
            info[sealed] = asyncio.run(_generate(paths[sealed], sealed, LOG_EVENTS, users, stories, 7))
            share = sealed_share(paths[sealed], "StoryViewed")
            info[sealed]["share"] = share
            log(
                f"  head {info[sealed]['head']:,} in {info[sealed]['seconds']:.1f} s; {share[0]:,} of {share[1]:,} "
                f"StoryViewed sealed"
            )
        import redis
        from pymongo import MongoClient

        runs: list[ProjectionRun] = []
        with EmbeddedBackends(tmp_dir / "backends") as backends:
            mongo = MongoClient(backends.mongo_url, tz_aware=True)
            client = redis.Redis.from_url(backends.redis_url)
            try:
                for n, sealed in enumerate(alternating(ROUNDS)):
                    log(
                        f"projector, {label(sealed)} log, run {n + 1}/{2 * ROUNDS}: ProjectionRunner x2 (MongoDB, Redis), "
                        f"batch 1000, positions 1..{info[sealed]['head']:,}"
                    )
                    run = project(paths[sealed], sealed, mongo, client, n)
                    runs.append(run)
                    log(
                        f"  {run.rate:,.0f} events/s ({run.events:,} events in {run.seconds:.1f} s, "
                        f"this process {run.cores:.2f} cores)"
                    )
            finally:
                mongo.close()
                client.close()
    rate = {s: median([r.rate for r in runs if r.sealed == s]) for s in (True, False)}
    trail = {s: ", ".join(f"{r.rate:,.0f}" for r in runs if r.sealed == s) for s in (True, False)}
    note = (
        f"incremental ProjectionRunner (MongoViewStore + RedisViewStore, batch 1000, a thread each, in the bench "
        f"process, embedded SecantusDB + Valkey, fresh databases and a fresh EventStore per run); logs of the same "
        f"SyntheticLoad (seed 7): sealed head {info[True]['head']:,} ({info[True]['share'][0]:,}/"
        f"{info[True]['share'][1]:,} views sealed), clear head {info[False]['head']:,} ({info[False]['share'][0]:,}/"
        f"{info[False]['share'][1]:,} sealed); median of {ROUNDS} runs each, A B B A: sealed {trail[True]}, "
        f"clear {trail[False]} events/s"
    )
    cpu = {
        s: median([r.cores * r.seconds / r.events * 1e6 for r in runs if r.sealed == s and r.events])
        for s in (True, False)
    }
    return [
        Row(
            f"erasure cost: projector rate on a log with per-person encryption ({LOG_EVENTS:,} events)",
            rate[True],
            "events/s",
            baseline=rate[False],
            baseline_name="same workload logged in clear, same run",
            goal=(">=", 0.9),
            note=note,
        ),
        Row(
            "erasure cost: projector CPU per event with per-person encryption (reading, decrypting, applying)",
            cpu[True],
            "µs",
            baseline=cpu[False],
            baseline_name="log in clear, same run",
            note="the projecting process's CPU (both runner threads) / events, medians of the same runs; "
            "SecantusDB's and Valkey's own CPU not included",
        ),
    ]


# -- 3. erasing a person ------------------------------------------------------------------------

PERSON = "erasee-7f3a9c"  # unique: no other id or value contains it
POLL_QUESTION_STORY = {
    "story_type": "text",
    "text_content": "ask and vote",
    "privacy": "public",
    "stickers": [
        {"sticker_type": "poll", "poll": {"question": "pick one", "options": [{"text": "a"}, {"text": "b"}]}},
        {"sticker_type": "question", "question": {"text": "ask me anything"}},
    ],
}


@dataclass
class Seeded:
    target: str  # a story of someone else's, for the ordinary-lag samples
    person_events: int
    head: int
    seconds: float
    plan: str


def seed_person(data_dir: Path) -> Seeded:
    """A person with about PERSON_EVENTS events among other people's, through the application service."""
    from commands import models
    from commands import use_cases as uc

    store, committer, app = seeding_application(data_dir)
    others = [f"other-{i}" for i in range(300)]
    own_count = 10
    views_on_own = min(int(0.3 * PERSON_EVENTS), own_count * len(others))
    answers_on_own = min(int(0.1 * PERSON_EVENTS), own_count * len(others))
    follows, followers, friends, mutes = 200, 100, 20, 10
    rest = max(0, PERSON_EVENTS - views_on_own - answers_on_own - follows - followers - friends - mutes - 2 * own_count)
    their_stories = max(1, math.ceil(rest / 3))  # a view, a poll vote and a question answer on each
    per_owner = 50
    owners = others[: math.ceil(their_stories / per_owner)]
    vote = lambda i: models.Interact(sticker_index=0, option_index=i % 2)  # noqa: E731
    answer = models.Interact(sticker_index=1, text="a question for you")
    body = models.CreateStory.model_validate(POLL_QUESTION_STORY)

    async def run_all(jobs: list, window: int = 512) -> list:
        """The results of the commands, in order (a refused one raises)."""
        out = []
        for i in range(0, len(jobs), window):
            out += [result for result, _ in await asyncio.gather(*(app.execute(cmd) for cmd in jobs[i : i + window]))]
        return out

    async def go() -> str:
        own = [str(r.story_id) for r in await run_all([uc.CreateStory(PERSON, body) for _ in range(own_count)])]
        jobs = [uc.CreateStory(o, body) for k in range(per_owner) for o in owners][:their_stories]
        theirs = [str(r.story_id) for r in await run_all(jobs)]
        social = [uc.Follow(PERSON, o) for o in others[:follows]]
        social += [uc.Follow(o, PERSON) for o in others[-followers:]]
        social += [uc.AddCloseFriend(PERSON, o) for o in others[:friends]]
        social += [uc.Mute(PERSON, o) for o in others[-mutes:]]
        await run_all(social)
        # their engagement on other people's stories, with other people's around it
        jobs = []
        for i, story in enumerate(theirs):
            jobs += [
                uc.ViewStory(PERSON, story),
                uc.Interact(PERSON, story, vote(i)),
                uc.Interact(PERSON, story, answer),
            ]
            for k in range(2):
                viewer = others[(i * 7 + k * 131) % len(others)]
                jobs.append(uc.ViewStory(viewer, story))
            voter = others[(i * 11 + 57) % len(others)]
            jobs.append(uc.Interact(voter, story, vote(i + 1)))
        await run_all(jobs)
        # other people on their stories
        jobs = [uc.ViewStory(o, s) for o in others for s in own][:views_on_own]
        jobs += [uc.Interact(o, s, answer) for o in others for s in own][:answers_on_own]
        await run_all(jobs)
        return theirs[0]

    started = time.perf_counter()
    try:
        target = asyncio.run(go())
        seconds = time.perf_counter() - started
        head = store.head()
        import orjson

        needle = PERSON.encode()
        naming = sum(
            1 for logged in store.read(0, head, 5000) if needle in orjson.dumps(logged.event.data(), default=str)
        )
    finally:
        committer.close()
        store.close()
    plan = (
        f"{own_count} stories of their own (poll + question) viewed {views_on_own:,} times and answered "
        f"{answers_on_own:,} times by others; a view, a vote and an answer on {their_stories:,} stories of "
        f"{len(owners)} others; {follows} follows, {followers} followers, {friends} close friends, {mutes} mutes"
    )
    return Seeded(target, naming, head, seconds, plan)


class Positions:
    """Both read models' positions, read directly (what the query API serves at is their minimum)."""

    def __init__(self, mongo_url: str, redis_url: str) -> None:
        import redis
        from pymongo import MongoClient

        from projections.redis_schema import VIEW_NAME

        self.mongo = MongoClient(mongo_url)
        self.db = self.mongo[DATABASE]
        self.redis = redis.Redis.from_url(redis_url)
        self.redis_key = f"{PREFIX}position:{VIEW_NAME}"

    def applied(self) -> int:
        doc = self.db["projection_positions"].find_one({"_id": "mongo_views"})
        return min((doc or {}).get("position", 0), int(self.redis.get(self.redis_key) or 0))

    def wait(self, position: int, limit_s: float) -> float | None:
        """Seconds (perf_counter) at which both reached ``position``; None past the limit. When each
        one got there is left in ``self.reached`` (view -> perf_counter)."""
        self.reached: dict[str, float] = {}
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            doc = self.db["projection_positions"].find_one({"_id": "mongo_views"})
            now = time.perf_counter()
            if (doc or {}).get("position", 0) >= position:
                self.reached.setdefault("MongoDB", now)
            if int(self.redis.get(self.redis_key) or 0) >= position:
                self.reached.setdefault("Redis", now)
            if len(self.reached) == 2:
                return max(self.reached.values())
            time.sleep(POLL_S)
        return None

    def naming(self, person: str) -> tuple[dict[str, int], dict[str, int]]:
        """Where the read models still name ``person``: MongoDB documents per collection (any field,
        at any depth) and Redis keys under the prefix per kind (in the key's name or its content)."""
        import bson

        needle = person.encode()
        self.examples: list[str] = []  # a few of the Redis keys found, with their content
        docs: dict[str, int] = {}
        for name in self.db.list_collection_names():
            n = sum(1 for doc in self.db[name].find({}) if needle in bson.encode(doc))
            if n:
                docs[name] = n
        keys: dict[str, int] = {}
        batch: list[bytes] = []

        def check(names: list[bytes]) -> None:
            pipe = self.redis.pipeline(transaction=False)
            for key in names:
                pipe.type(key)
            types = pipe.execute()
            pipe = self.redis.pipeline(transaction=False)
            for key, kind in zip(names, types):
                kind = kind.decode() if isinstance(kind, bytes) else kind
                {
                    "string": lambda k: pipe.get(k),
                    "set": lambda k: pipe.smembers(k),
                    "zset": lambda k: pipe.zrange(k, 0, -1),
                    "hash": lambda k: pipe.hgetall(k),
                    "list": lambda k: pipe.lrange(k, 0, -1),
                }.get(kind, lambda k: pipe.exists(k))(key)
            for key, value in zip(names, pipe.execute()):
                if isinstance(value, dict):
                    blob = b"".join(a + b"\0" + b for a, b in value.items())
                elif isinstance(value, (set, list)):
                    blob = b"\0".join(value)
                else:
                    blob = value if isinstance(value, bytes) else b""
                if needle in key or needle in blob:
                    kind = key[len(PREFIX) :].split(b":", 1)[0].decode(errors="replace")
                    keys[kind] = keys.get(kind, 0) + 1
                    if len(self.examples) < 3:
                        shown = value if not isinstance(value, (set, list)) else sorted(value)[:5]
                        self.examples.append(f"{key.decode(errors='replace')} = {str(shown)[:160]}")

        for key in self.redis.scan_iter(match=f"{PREFIX}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                check(batch)
                batch = []
        if batch:
            check(batch)
        return docs, keys

    def close(self) -> None:
        self.mongo.close()
        self.redis.close()


def describe(where: tuple[dict[str, int], dict[str, int]]) -> str:
    docs, keys = where
    parts = [f"MongoDB {name} {n:,}" for name, n in sorted(docs.items())]
    parts += [f"Redis {kind}: {n:,}" for kind, n in sorted(keys.items())]
    return ", ".join(parts) or "nothing"


def erasure_rows() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="stories-bench-erasure-person-") as tmp:
        data_dir = Path(tmp)
        log(f"seeding a person with ~{PERSON_EVENTS:,} events among other people's (application service, in-process)")
        seeded = seed_person(data_dir)
        log(f"  head {seeded.head:,}, {seeded.person_events:,} events name {PERSON}, in {seeded.seconds:.1f} s")
        log("starting `stories run` on that log (embedded SecantusDB + Valkey) and waiting for the projector")
        with Stack(data_dir, name="stories-run-erasure") as stack:
            positions = Positions(stack.mongo_url, stack.redis_url)
            try:
                t0 = time.perf_counter()
                done = positions.wait(seeded.head, CATCH_UP_LIMIT_S)
                if done is None:
                    raise RuntimeError(f"the projector did not reach {seeded.head:,} within {CATCH_UP_LIMIT_S:.0f} s")
                log(f"  caught up with {seeded.head:,} positions in {done - t0:.1f} s")
                before = positions.naming(PERSON)
                log(f"  before erasure the read models name them in: {describe(before)}")

                log(
                    f"ordinary lag: {LAG_SAMPLES} views by new users, one at a time, each until both read models have it"
                )
                lags: list[float] = []
                for _i, token in enumerate(mint_tokens(SECRET, [f"lag-{i}" for i in range(LAG_SAMPLES)])):
                    t0 = time.perf_counter()
                    status, body = http_request(
                        "POST", stack.command_port, f"/api/v1/stories/{seeded.target}/view", token=token
                    )
                    if status != 202:
                        raise RuntimeError(f"a view answered {status}: {body[:300]!r}")
                    reached = positions.wait(json.loads(body)["position"], 30)
                    if reached is not None:
                        lags.append(reached - t0)
                    time.sleep(0.02)
                lag_p50, lag_p99 = percentile(lags, 50), percentile(lags, 99)
                log(f"  p50 {lag_p50 * 1000:.0f} ms, p99 {lag_p99 * 1000:.0f} ms ({len(lags)} samples)")

                log(f"erasure: DELETE /api/v1/account as {PERSON}")
                token = mint_tokens(SECRET, [PERSON])[0]
                t0 = time.perf_counter()
                status, body = http_request("DELETE", stack.command_port, "/api/v1/account", token=token, timeout=60)
                call_s = time.perf_counter() - t0
                if status != 202:
                    raise RuntimeError(f"DELETE /api/v1/account answered {status}: {body[:300]!r}")
                erased_at = json.loads(body)["position"]
                reached = positions.wait(erased_at, FORGET_LIMIT_S)
                past_s = (reached - t0) if reached is not None else float("nan")
                each = ", ".join(f"{view} {(at - t0) * 1000:,.0f} ms" for view, at in sorted(positions.reached.items()))
                after = positions.naming(PERSON)
                forgotten_s = past_s if not (after[0] or after[1]) else float("nan")
                checked = 1
                while (after[0] or after[1]) and time.perf_counter() - t0 < FORGET_LIMIT_S:
                    time.sleep(0.5)
                    after = positions.naming(PERSON)
                    checked += 1
                    if not (after[0] or after[1]):
                        forgotten_s = time.perf_counter() - t0  # to within one scan
                log(
                    f"  call {call_s * 1000:.0f} ms (AccountErased at {erased_at:,}); positions past it "
                    f"{past_s * 1000:.0f} ms after sending ({each}); read models name them in: {describe(after)}"
                )
                left = list(positions.examples)
                status, _ = http_request(
                    "POST", stack.command_port, f"/api/v1/stories/{seeded.target}/view", token=token
                )
                refused = status
            finally:
                positions.close()

    scan_note = (
        f"no MongoDB document (every collection of `{DATABASE}`) or Redis key under `{PREFIX}` (name or "
        f"content) names them"
        if not (after[0] or after[1])
        else f"NOT FORGOTTEN after {FORGET_LIMIT_S:.0f} s ({checked} scans); still named in: {describe(after)}"
        + (f" (e.g. {'; '.join(left)})" if left else "")
    )
    return [
        Row(
            f"erasure: a person with {seeded.person_events:,} events: read models past the AccountErased "
            f"(DELETE /api/v1/account sent -> both positions past it)",
            past_s * 1000,
            "ms",
            baseline=lag_p99 * 1000,
            baseline_name="ordinary event's projection lag p99, same stack",
            note=f"each read model past it: {each} after sending (the purge is applied in the AccountErased's own "
            f"batch, before that view's position moves past it)",
        ),
        Row(
            f"erasure: a person with {seeded.person_events:,} events forgotten by the read models "
            f"(DELETE /api/v1/account sent -> both positions past AccountErased, nothing names them)",
            forgotten_s * 1000,
            "ms",
            baseline=lag_p99 * 1000,
            baseline_name="ordinary event's projection lag p99, same stack",
            goal=("<=", 1.0),
            note=f"`stories run` on a SQLite log of {seeded.head:,} positions ({seeded.plan}); positions past the "
            f"AccountErased {past_s * 1000:.0f} ms after sending; then {scan_note}; before it they were named in: "
            f"{describe(before)}; the erased token then got {refused} on a view",
        ),
        Row(
            "erasure: DELETE /api/v1/account call (key destroyed, AccountErased appended)",
            call_s * 1000,
            "ms",
            note="one request on a fresh connection, measured at the client",
        ),
        Row(
            "erasure baseline: one ordinary event's projection lag (view sent -> both read models have it), p50",
            lag_p50 * 1000,
            "ms",
            note=f"{len(lags)} sequential views by new users on the same stack just before the "
            f"erasure; p99 {lag_p99 * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms",
        ),
    ]


# -- the benchmark ------------------------------------------------------------------------------


def run() -> list[Row]:
    rows: list[Row] = []
    log(f"minting {USERS:,} HS256 tokens")
    tokens = mint_tokens(SECRET, [f"user-{i}" for i in range(USERS)])
    for part in (lambda: view_rows(tokens), projector_rows, erasure_rows):
        try:
            rows += part()
        except Exception as error:  # one part failing leaves the others' rows
            import traceback

            traceback.print_exc()
            rows.append(
                Row(
                    f"erasure bench part failed: {getattr(part, '__name__', 'views')}",
                    float("nan"),
                    "",
                    note=f"{type(error).__name__}: {error}"[:300],
                )
            )
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_rows

    print_rows(run())
