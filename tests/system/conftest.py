"""System tests: every process as a real subprocess, driven over loopback HTTP, with processes and
servers killed and restarted underneath.

The stacks reuse the end-to-end launcher (``tests.e2e.read_side.launch``: command API, projector,
query API on one SQLite log, own MongoDB database, own Redis key prefix) and add the relay (and
the expirer) with a unique broker prefix. Each test owns its servers where it needs to stop them:
its own SecantusDB (``stories.embedded.start_secantus`` in tmp) and, for the outage test, its own
Valkey (``stories.embedded.start_valkey``); the machine's Redis is never stopped.

``Load`` drives a mixed workload through the command API with an async client and counts every
accepted command by kind; the tests compare those counts with the read models at the end.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest
import redis
from pymongo import MongoClient

from projections.redis_schema import VIEW_NAME
from stories import embedded
from stories.backends import connect_redis, is_cluster_url
from tests.conftest import REDIS_TEST_URL
from tests.e2e.read_side import STORIES, Process, ReadSide, cleanup, launch
from tests.read_models import dump_mongo, dump_redis

S = "/api/v1/stories"
POLL = {
    "sticker_type": "poll",
    "x": 0.5,
    "y": 0.7,
    "width": 0.6,
    "height": 0.2,
    "poll": {"question": "Swim?", "options": [{"text": "yes"}, {"text": "later"}]},
}
CATCH_UP_TIMEOUT_S = 60.0
# Keys under the Redis prefix that are not projector read models: the relay's position and the
# expirer's own schedule view (a replay does not build them).
NON_READ_MODEL_KEYS = ("relay:", "expiry:", "position:")


# -- servers the test owns -------------------------------------------------------------------


@dataclass
class OwnedServer:
    """An embedded server this test started, which it may stop and start again on the same port
    and storage (the exact command line it was first started with)."""

    server: embedded.EmbeddedServer
    data_dir: Path
    log_name: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def process(self) -> subprocess.Popen:
        return self.server.process

    def stop(self) -> None:
        """SIGTERM, as an operator (or an orchestrator) stops it."""
        self.server.stop()

    def start_again(self, ready, timeout: float = 30.0) -> None:
        assert self.process.poll() is not None, "still running"
        log = open(self.data_dir / self.log_name, "ab")  # noqa: SIM115  # the restarted server writes to it until it stops
        proc = subprocess.Popen(
            self.process.args,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=embedded._die_with_parent,
        )
        self.server = embedded.EmbeddedServer(self.server.name, self.server.url, proc)
        embedded._wait(proc, ready, self.server.name, timeout)


# The readiness checks are the embedded servers' own.
mongo_ready, redis_ready = embedded.mongo_ready, embedded.redis_ready


@pytest.fixture
def own_secantus(tmp_path: Path) -> Iterator[OwnedServer]:
    """A SecantusDB only this test uses (and may stop)."""
    data_dir = tmp_path / "mongo"
    data_dir.mkdir()
    server = OwnedServer(embedded.start_secantus(data_dir), data_dir, "secantus.log")
    yield server
    server.stop()


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[OwnedServer]:
    """A Valkey only this test uses (and may stop): never the machine's Redis service."""
    data_dir = tmp_path / "valkey-data"
    data_dir.mkdir()
    server = OwnedServer(embedded.start_valkey(data_dir), data_dir, "valkey.log")
    yield server
    server.stop()


# -- the stack --------------------------------------------------------------------------------


class Stack:
    """command API + query API + projector (+ relay, + expirer) as subprocesses."""

    def __init__(self, side: ReadSide, broker_prefix: str) -> None:
        self.side = side
        self.broker_prefix = broker_prefix
        self.current: dict[str, Process] = {p.name: p for p in side.processes}
        self.kills: Counter = Counter()
        self.mid_batch_kills = 0

    # processes
    def start(self, name: str) -> Process:
        proc = self.side.start(name, name)
        self.current[name] = proc
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL: no clean-up, no flush."""
        proc = self.current[name]
        if proc.process.poll() is None:
            proc.process.send_signal(signal.SIGKILL)
            proc.process.wait(timeout=10)
            self.kills[name] += 1

    def alive(self, name: str) -> bool:
        return self.current[name].process.poll() is None

    def check_alive(self, *names: str) -> None:
        for name in names or tuple(self.current):
            proc = self.current[name]
            assert proc.process.poll() is None, f"{name} exited with {proc.process.returncode}:\n{proc.log()}"

    # stores
    @property
    def env(self) -> dict[str, str]:
        return self.side.env

    def mongo(self) -> MongoClient:
        return MongoClient(self.side.mongodb_url, serverSelectionTimeoutMS=3000, tz_aware=True)

    def redis(self) -> redis.Redis:
        return connect_redis(self.side.redis_url, socket_connect_timeout=3, socket_timeout=10)

    def head(self) -> int:
        from commands.event_store import EventStore

        store = EventStore(self.side.event_store_url)
        try:
            return store.head()
        finally:
            store.close()

    def positions(self) -> dict[str, int]:
        """Where each follower of the log stands: Mongo views, Redis views, relay, and the head."""
        from projections.mongo_schema import POSITIONS

        with self.mongo() as client:
            doc = client[self.side.mongodb_database][POSITIONS].find_one({"_id": "mongo_views"})
        r = self.redis()
        try:
            p = self.side.redis_prefix
            redis_views, relay = r.get(p + "position:" + VIEW_NAME), r.get(p + "relay:position:redis")  # any slots
        finally:
            r.close()
        return {
            "mongo": doc["position"] if doc else 0,
            "redis": int(redis_views or 0),
            "relay": int(relay or 0),
            "head": self.head(),
        }

    def wait_caught_up(self, timeout: float = CATCH_UP_TIMEOUT_S, relay: bool = True) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.positions()
                wanted = ("mongo", "redis", "relay") if relay else ("mongo", "redis")
                if all(last[k] == last["head"] for k in wanted):
                    return last
            except Exception as error:  # a store restarting
                last = {"error": repr(error)}
            time.sleep(0.2)
        raise AssertionError(f"not caught up after {timeout}s: {last}\n{self.side.logs()}")

    def export(self) -> list[dict]:
        out = subprocess.run(
            [STORIES, "export", "--no-progress"], env=self.env, capture_output=True, timeout=60, cwd=self.side.data_dir
        )
        assert out.returncode == 0, out.stderr.decode()[-2000:]
        return [json.loads(line) for line in out.stdout.decode().splitlines() if line.strip()]

    def broker_events(self) -> list[dict]:
        """Every envelope in ``<broker_prefix>.events``, as delivered (duplicates included)."""
        from brokers.tail import decode_redis_entry

        broker = connect_redis(self.env["STORIES_BROKER_URL"], socket_timeout=10)
        out, start = [], "-"
        try:
            while True:
                entries = broker.xrange(f"{self.broker_prefix}.events", min=start, max="+", count=5000)
                if start != "-":
                    entries = entries[1:]  # XRANGE is inclusive
                if not entries:
                    return out
                out.extend(decode_redis_entry(fields) for _id, fields in entries)
                start = entries[-1][0]
        finally:
            broker.close()

    def read_models(self, database: str | None = None, prefix: str | None = None) -> tuple[dict, dict]:
        database = database or self.side.mongodb_database
        prefix = prefix or self.side.redis_prefix
        with self.mongo() as client:
            mongo = dump_mongo(client, database)
        r = self.redis()
        try:
            keys = {k: v for k, v in dump_redis(r, prefix).items() if not k.startswith(NON_READ_MODEL_KEYS)}
        finally:
            r.close()
        return mongo, keys

    def replay(self, database: str, prefix: str) -> str:
        out = subprocess.run(
            [STORIES, "replay", "--database", database, "--prefix", prefix],
            env=self.env,
            capture_output=True,
            timeout=90,
            cwd=self.side.data_dir,
        )
        assert out.returncode == 0, out.stderr.decode()[-3000:]
        return out.stdout.decode()


def launch_stack(data_dir: Path, mongodb_url: str, redis_url: str, *, expirer: bool = True, **settings: Any) -> Stack:
    tag = uuid.uuid4().hex[:10]
    broker_prefix = f"stories-sys-{tag}"
    # The synthetic load keeps a few users posting for minutes: more live stories each than the
    # contract's default limit (the limit itself is tested in tests/e2e).
    settings.setdefault("limit_live_stories", 100_000)
    broker_url = REDIS_TEST_URL if is_cluster_url(redis_url) else redis_url  # Redis Streams: one server
    side = launch(
        data_dir,
        mongodb_url,
        redis_url,
        broker_url=broker_url,
        broker_prefix=broker_prefix,
        rate_limit_per_s=0,
        **settings,
    )
    stack = Stack(side, broker_prefix)
    try:
        stack.start("relay")
        if expirer:
            stack.start("expirer")
    except BaseException:
        side.stop()
        cleanup(side)
        raise
    return stack


def teardown_stack(stack: Stack, extra_databases: tuple[str, ...] = (), extra_prefixes: tuple[str, ...] = ()) -> None:
    stack.side.stop()
    cleanup(stack.side)
    try:
        with MongoClient(stack.side.mongodb_url, serverSelectionTimeoutMS=3000) as client:
            for name in extra_databases:
                client.drop_database(name)
    except Exception:
        pass
    try:
        r = connect_redis(stack.side.redis_url, socket_connect_timeout=3)
        r.delete(f"{stack.broker_prefix}.events")
        for prefix in extra_prefixes:
            keys = list(r.scan_iter(match=prefix + "*", count=1000))
            if keys:
                r.delete(*keys)
        r.close()
    except Exception:
        pass


# -- the load ---------------------------------------------------------------------------------


class Unexpected(Exception):
    pass


@dataclass
class Load:
    """A mixed workload through the command API; counts what the API accepted."""

    stack: Stack
    users: list[str]
    seed: int
    rng: random.Random = field(init=False)
    stories: list[tuple[str, str]] = field(default_factory=list)  # (story id, owner)
    owned: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    accepted: Counter = field(default_factory=Counter)  # kind -> accepted commands
    statuses: Counter = field(default_factory=Counter)  # (kind, status) -> count
    views: Counter = field(default_factory=Counter)  # story -> recorded (counted) views
    owner_views: int = 0
    votes: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # story -> option -> votes
    replies: Counter = field(default_factory=Counter)  # story -> accepted replies
    follows: set = field(default_factory=set)  # (follower, followee) accepted
    highlights: int = 0
    highlight_ids: list[tuple[str, str]] = field(default_factory=list)  # (highlight id, owner)
    problems: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    WEIGHTS: ClassVar[dict[str, int]] = {"create": 8, "follow": 10, "view": 37, "vote": 20, "reply": 17, "highlight": 8}
    EXPECTED: ClassVar[dict[str, set[int]]] = {  # refusals the workload can provoke legitimately
        "create": {201},
        "follow": {200},
        "view": {202, 404},
        "vote": {200, 403, 404, 409},
        "reply": {201, 403, 404},
        "highlight": {201, 422},
    }

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.tokens = {u: self.stack.side.token(u, ttl=3600) for u in self.users}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.stack.side.command_port}"

    async def _send(
        self, session: aiohttp.ClientSession, kind: str, method: str, path: str, user: str, body: Any = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        started = time.monotonic()
        try:
            async with session.request(method, self.base + path, json=body, headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError) as error:
            # The command may or may not have been stored: the counts can no longer be trusted.
            self.problems.append(f"{kind} {method} {path}: {error!r}")
            raise Unexpected(kind) from error
        self.latencies.append(time.monotonic() - started)
        self.statuses[(kind, status)] += 1
        data = json.loads(raw) if raw else None
        if status not in self.EXPECTED[kind]:
            self.problems.append(f"{kind} {method} {path} -> {status} {raw[:300]!r}")
        elif 200 <= status < 300:
            self.accepted[kind] += 1
            assert int(resp.headers["X-Stories-Position"]) > 0
        return status, data

    async def create(self, session, user: str) -> None:
        body = {
            "story_type": "text",
            "text_content": f"story by {user}",
            "stickers": [POLL],
            "privacy": self.rng.choice(["public", "public", "followers"]),
        }
        status, data = await self._send(session, "create", "POST", S, user, body)
        if status == 201:
            self.stories.append((data["story_id"], user))
            self.owned[user].append(data["story_id"])

    async def one(self, session) -> None:
        kind = self.rng.choices(list(self.WEIGHTS), weights=list(self.WEIGHTS.values()))[0]
        user = self.rng.choice(self.users)
        if kind == "create" or not self.stories:
            await self.create(session, user)
        elif kind == "follow":
            other = self.rng.choice([u for u in self.users if u != user])
            status, _ = await self._send(session, kind, "PUT", f"/api/v1/following/{other}", user)
            if status == 200:
                self.follows.add((user, other))
        elif kind == "view":
            story, owner = self.rng.choice(self.stories)
            status, data = await self._send(session, kind, "POST", f"{S}/{story}/view", user)
            if status == 202:
                if data["counted"]:
                    self.views[story] += 1
                else:
                    self.owner_views += 1
                    if user != owner:
                        self.problems.append(f"view of {story} by {user} not counted: {data}")
        elif kind == "vote":
            story, owner = self.rng.choice(self.stories)
            option = self.rng.randrange(2)
            status, _ = await self._send(
                session, kind, "POST", f"{S}/{story}/interact", user, {"sticker_index": 0, "option_index": option}
            )
            if status == 200:
                self.votes[story][option] += 1
        elif kind == "reply":
            story, owner = self.rng.choice(self.stories)
            status, _ = await self._send(session, kind, "POST", f"{S}/{story}/reply", user, {"text": "nice!"})
            if status == 201:
                self.replies[story] += 1
        elif kind == "highlight":
            mine = self.owned.get(user)
            if not mine:
                await self.create(session, user)
                return
            picked = self.rng.sample(mine, min(len(mine), self.rng.randint(1, 2)))
            status, data = await self._send(
                session, kind, "POST", "/api/v1/highlights", user, {"title": "best of", "story_ids": picked}
            )
            if status == 201:
                self.highlights += 1
                self.highlight_ids.append((data["highlight_id"], user))

    async def run(
        self, seconds: float | None = None, workers: int = 12, pause_s: float = 0.0, stop: asyncio.Event | None = None
    ) -> None:
        """Drive the load for ``seconds``, or until ``stop`` is set."""
        deadline = time.monotonic() + (seconds if seconds is not None else 3600.0)
        stop = stop or asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=workers)) as session:
            for user in self.users:  # everyone starts with one story
                await self.create(session, user)

            async def worker() -> None:
                while time.monotonic() < deadline and not stop.is_set():
                    await self.one(session)
                    if pause_s:
                        await asyncio.sleep(pause_s)

            await asyncio.gather(*(worker() for _ in range(workers)))

    def summary(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        return (
            f"accepted {dict(self.accepted)}; statuses {dict(sorted(self.statuses.items()))}; "
            f"p50 {lat[len(lat) // 2] * 1000:.1f} ms, max {lat[-1] * 1000:.0f} ms"
        )


def assert_counts_match(stack: Stack, load: Load) -> None:
    """Every counter in both read models equals what the command API accepted, and the log holds
    one event per accepted command that changed something."""
    db = stack.side.mongodb_database
    with stack.mongo() as client:
        docs = {d["_id"]: d for d in client[db].stories.find({})}
        highlight_count = client[db].highlights.count_documents({})
    expected_stories = {story for story, _owner in load.stories}
    assert set(docs) == expected_stories, (len(docs), len(expected_stories))
    for story in expected_stories:
        doc = docs[story]
        assert doc.get("view_count", 0) == load.views[story], (story, doc.get("view_count"), load.views[story])
        assert doc.get("reply_count", 0) == load.replies[story], (story, doc.get("reply_count"))
        results = doc.get("results", {}).get("0", {})
        assert results.get("total", 0) == sum(load.votes[story].values()), (story, results, load.votes[story])
        for option in (0, 1):
            assert results.get("options", {}).get(str(option), 0) == load.votes[story][option], (story, results)
    assert sum(d.get("view_count", 0) for d in docs.values()) == sum(load.views.values())
    assert highlight_count == load.highlights
    # Redis: each story's counters hash and its answers hash (every story of the load is live:
    # Redis keeps per-story state for the live window only), and the follow graph.
    from projections.redis_schema import CounterField, Keys

    keys = Keys(stack.side.redis_prefix)
    r = stack.redis()
    try:
        views, replies, votes = {}, {}, {}
        for story in expected_stories:
            counters = {f.decode(): v for f, v in r.hgetall(keys.counters(story)).items()}
            assert counters, f"no Redis counters for live story {story}"
            views[story] = int(counters.get(CounterField.VIEWS, 0))
            replies[story] = int(counters.get(CounterField.REPLIES, 0))
            votes[story] = (
                int(counters.get(CounterField.total(0), 0)),
                [int(counters.get(CounterField.option(0, k), 0)) for k in (0, 1)],
            )
            answers = [f for f in r.hkeys(keys.answers(story)) if f.decode().startswith("0:")]
            assert len(answers) == sum(load.votes[story].values()), story
        followers = sum(r.scard(keys.followers(u)) for u in load.users)
    finally:
        r.close()
    assert views == {s: load.views[s] for s in expected_stories}, "Redis view counters"
    assert replies == {s: load.replies[s] for s in expected_stories}, "Redis reply counters"
    assert votes == {
        s: (sum(load.votes[s].values()), [load.votes[s][0], load.votes[s][1]]) for s in expected_stories
    }, "Redis poll tallies"
    assert followers == len(load.follows)


def assert_query_api_counts(stack: Stack, load: Load) -> None:
    """The same counts as the query API serves them to each story's owner."""
    from tests.e2e.read_side import http_request

    tokens = {u: stack.side.token(u) for u in load.users}
    for story, owner in load.stories:
        resp = http_request(
            "127.0.0.1",
            stack.side.query_port,
            "GET",
            f"{S}/{story}",
            headers={"Authorization": f"Bearer {tokens[owner]}"},
        )
        assert resp.status == 200, resp
        served = resp.body
        assert served["view_count"] == load.views[story], (story, served["view_count"], load.views[story])
        assert served["reply_count"] == load.replies[story], story
        poll = served["stickers"][0]["poll"]
        assert poll["total_votes"] == sum(load.votes[story].values()), (story, poll)
        assert [o["votes"] for o in poll["options"]] == [load.votes[story][0], load.votes[story][1]], poll


def event_counts(events: list[dict]) -> Counter:
    return Counter(e["event_type"] for e in events)


def assert_log_matches(events: list[dict], load: Load) -> None:
    counts = event_counts(events)
    assert counts["StoryCreated"] == load.accepted["create"]
    assert counts["StoryViewed"] == sum(load.views.values())
    assert counts["PollVoted"] == sum(sum(c.values()) for c in load.votes.values())
    assert counts["StoryReplied"] == sum(load.replies.values())
    assert counts["UserFollowed"] == len(load.follows)
    assert counts["HighlightCreated"] == load.highlights


def assert_subscriber_saw_everything_once(stack: Stack, logged: list[dict]) -> dict[str, int]:
    """The broker's stream, deduplicated on event_id, is exactly the log, in position order."""
    delivered = stack.broker_events()
    seen: set[str] = set()
    unique = []
    for envelope in delivered:
        if envelope["event_id"] not in seen:
            seen.add(envelope["event_id"])
            unique.append(envelope)
    positions = [e["position"] for e in unique]
    assert positions == sorted(positions), "not in position order after dedupe"
    assert [e["event_id"] for e in unique] == [e["event_id"] for e in logged]
    assert unique == logged, "published envelopes differ from `stories export`"
    return {"delivered": len(delivered), "unique": len(unique), "duplicates": len(delivered) - len(unique)}
