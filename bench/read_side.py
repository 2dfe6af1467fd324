"""Read-side benchmark on the embedded default (SQLite log, SecantusDB, Valkey).

(a) projector throughput: a mixed log (follows, creates, views, votes, replies... written through
    the real write path by ``bench.replay.generated_log``) applied by two ProjectionRunners
    (MongoViewStore + RedisViewStore, one thread each, batch 1000: what ``stories projector``
    runs) into fresh databases, vs the ceiling: the same servers' raw write rate for the same
    work, i.e. exactly as many MongoDB ``UpdateOne($inc, upsert)`` ops in ``bulk_write`` calls
    of the same sizes as the projector's batches produced, and as many Redis commands in
    MULTI/EXEC pipelines of the same sizes, also one thread each. The ceiling's wall time is
    converted to events/s by dividing the projector's event count by it (that is: ops/s divided
    by the projector's own ops per event). Each store is also measured alone.
(b) projection lag under load: ``stories run`` (every real process) with views and poll votes
    offered at a steady rate (open loop) for BENCH_LAG_S; every 50 ms the log head (SQLite) and
    both read models' recorded positions are sampled; lag in events and in seconds (how long ago
    the oldest not-yet-applied event was appended) p50/p99.
(c) feed page: one viewer following BENCH_FEED_AUTHORS authors with BENCH_FEED_STORIES live
    stories, and a second following BENCH_FEED_WIDE_AUTHORS (the follows limit: the first
    viewer's authors plus as many more, one story each), seeded through the write path
    in-process before the stack starts, projected by the stack's projector; then sequential
    GET /api/v1/stories/feed?limit=20 (the first page) over HTTP against the real query API, vs
    GET /health on the same process.

Knobs: BENCH_READ_EVENTS (10000), BENCH_LAG_RATE (300 commands/s), BENCH_LAG_S (15),
BENCH_FEED_AUTHORS (1000), BENCH_FEED_STORIES (5000), BENCH_FEED_REQUESTS (200).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from pathlib import Path

from bench.common import (
    SECRET,
    CpuMeter,
    EmbeddedBackends,
    LagSampler,
    PositionReader,
    Row,
    Stack,
    http_request,
    loadavg,
    log,
    median,
    mint_tokens,
    percentile,
    run_paced,
    sequential_get,
)

READ_EVENTS = int(os.environ.get("BENCH_READ_EVENTS", "10000"))
LAG_RATE = float(os.environ.get("BENCH_LAG_RATE", "300"))
LAG_S = float(os.environ.get("BENCH_LAG_S", "15"))
FEED_AUTHORS = int(os.environ.get("BENCH_FEED_AUTHORS", "1000"))
FEED_STORIES = int(os.environ.get("BENCH_FEED_STORIES", "5000"))
FEED_REQUESTS = int(os.environ.get("BENCH_FEED_REQUESTS", "200"))
FEED_WIDE_AUTHORS = int(os.environ.get("BENCH_FEED_WIDE_AUTHORS", "7500"))  # the follows limit
FEED_PAGE = 20
PROJECT_LIMIT_S = 600.0
PROJECTOR_BATCH = 1000


# -- (a) projector vs raw writes ---------------------------------------------------------------


def projector_work(store, until: int, batch: int = PROJECTOR_BATCH) -> dict:
    """What the projector issues for the log up to ``until`` in batches of ``batch``: per batch,
    the MongoDB writes as (inserts, guarded updates) and the Redis command count; plus the event count."""
    from projections.document_writes import DocumentWrites
    from projections.mongo_views import HANDLERS as MONGO
    from projections.redis_views import HANDLERS as REDIS
    from projections.redis_views import BatchWrites, Keys

    keys = Keys("count:")
    live: dict = {}  # what Redis holds of live stories, carried from batch to batch as the real store does
    mongo_batches: list[tuple[int, int]] = []
    redis_batches: list[int] = []
    docs: set = set()
    events = 0
    after = 0
    while after < until:
        batch_events, reached = store.read_batch(after, batch, until)
        if reached == after:
            break
        writes = DocumentWrites()
        redis_writes = BatchWrites(live=live)
        for logged in batch_events:
            MONGO[type(logged.event)](writes, logged.event, logged)
            handler = REDIS.get(type(logged.event))
            if handler is not None:
                handler(redis_writes, keys, logged.event)
        redis_writes.set_expiries()
        plan = writes.plan(reached)
        mongo_batches.append((sum(len(p.inserts) for p in plan.values()), sum(len(p.updates) for p in plan.values())))
        for collection, entries in writes._entries.items():
            docs.update((collection, e.key) for e in entries)
        redis_batches.append(len(redis_writes.calls) + 1)  # + the position SET
        events += len(batch_events)
        after = reached
    return {
        "events": events,
        "mongo_batches": mongo_batches,
        "redis_batches": redis_batches,
        "distinct_docs": len(docs),
    }


def _threads(*targets) -> tuple[float, list[float]]:
    """Run each target in its own thread; (wall time, each target's own time)."""
    own = [0.0] * len(targets)
    errors: list[BaseException] = []

    def wrap(i, fn):
        t0 = time.perf_counter()
        try:
            fn()
        except BaseException as error:  # reported below
            errors.append(error)
        own[i] = time.perf_counter() - t0

    threads = [threading.Thread(target=wrap, args=(i, fn)) for i, fn in enumerate(targets)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(PROJECT_LIMIT_S + 60)
    if errors:
        raise errors[0]
    return time.perf_counter() - t0, own


def _runner_job(runner, until: int):
    def job():
        deadline = time.monotonic() + PROJECT_LIMIT_S
        while (runner.position or 0) < until and time.monotonic() < deadline:
            if not runner.run_once(until):
                break

    return job


def _mongo_ceiling_job(mongo, database: str, batches: list[tuple[int, int]], distinct: int):
    """The same shapes with the least work each: per batch one unordered insert_many of small new
    documents and one bulk_write of $inc upserts on existing ones."""
    from pymongo import UpdateOne

    def job():
        col = mongo[database]["ceiling"]
        n = 0
        for inserts, updates in batches:
            if inserts:
                col.insert_many([{"_id": f"i{n + i}", "n": 1, "_v": n + i} for i in range(inserts)], ordered=False)
            if updates:
                col.bulk_write(
                    [
                        UpdateOne(
                            {"_id": f"d{(n + i) % max(distinct, 1)}"},
                            {"$inc": {"n": 1}, "$set": {"_v": n + i}},
                            upsert=True,
                        )
                        for i in range(updates)
                    ],
                    ordered=True,
                )
            n += inserts + updates

    return job


def _redis_ceiling_job(client, prefix: str, batches: list[int]):
    def job():
        n = 0
        for size in batches:
            with client.pipeline(transaction=True) as pipe:
                for i in range(size):
                    pipe.hincrby(f"{prefix}ceiling", f"f{(n + i) % 50000}", 1)
                pipe.execute()
            n += size

    return job


def measure_projector(tmp: Path) -> list[Row]:
    import redis
    from pymongo import MongoClient

    from bench.replay import generated_log
    from commands.event_store import EventStore
    from projections.mongo_views import MongoViewStore
    from projections.redis_views import RedisViewStore
    from projections.runner import ProjectionRunner

    path, _info = generated_log(READ_EVENTS, users=300, stories=1000)
    store = EventStore(f"sqlite:///{path.resolve()}")
    until = store.head()
    t0 = time.perf_counter()
    read_events = sum(1 for _ in store.read(0, until, PROJECTOR_BATCH))
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    work = projector_work(store, until)
    work_s = time.perf_counter() - t0
    events = work["events"]
    mongo_inserts = sum(i for i, _ in work["mongo_batches"])
    mongo_ops, redis_cmds = sum(i + u for i, u in work["mongo_batches"]), sum(work["redis_batches"])
    log(
        f"(a) log {path.name}: {events:,} events up to {until:,}; the projector issues {mongo_ops:,} MongoDB ops "
        f"({mongo_ops / events:.2f}/event, {work['distinct_docs']:,} documents) and {redis_cmds:,} Redis commands "
        f"in {len(work['mongo_batches'])} batches"
    )
    rows: list[Row] = []
    with EmbeddedBackends(tmp / "embedded") as backends:
        mongo = MongoClient(backends.mongo_url)
        client = redis.Redis.from_url(backends.redis_url)
        sec_pid = backends.mongo.process.pid

        def runners(tag: str):
            return (
                ProjectionRunner(store, MongoViewStore(mongo, f"p_{tag}"), PROJECTOR_BATCH),
                ProjectionRunner(store, RedisViewStore(client, f"p{tag}:"), PROJECTOR_BATCH),
            )

        # warm-up: a small slice, so imports, indexes and connections are not timed
        m, r = runners("warm")
        warm_until = min(until, 2000)
        _threads(_runner_job(m, warm_until), _runner_job(r, warm_until))

        log("(a) projector: both view stores, one thread each (as `stories projector`)")
        m, r = runners("both")
        cpu = CpuMeter(sec_pid).start()
        both_s, _ = _threads(_runner_job(m, until), _runner_job(r, until))
        cpu.stop()
        if m.position != until or r.position != until:
            log(f"  projector stopped short: mongo {m.position}, redis {r.position} of {until} (time limit)")
        applied = min(m.applied, r.applied)
        log(f"  {applied / both_s:,.0f} events/s ({both_s:.1f} s; SecantusDB used {cpu.process_cores:.2f} cores)")

        log("(a) ceiling: raw bulk_write + MULTI/EXEC pipelines of the same sizes, one thread each")
        ceil_s, _ = _threads(
            _mongo_ceiling_job(mongo, "ceiling_both", work["mongo_batches"], work["distinct_docs"]),
            _redis_ceiling_job(client, "ceilboth:", work["redis_batches"]),
        )
        log(f"  {events / ceil_s:,.0f} events/s equivalent ({ceil_s:.1f} s)")

        log("(a) each store alone")
        m, _ = runners("mongo")
        mongo_s, _ = _threads(_runner_job(m, until))
        mongo_ceil_s, _ = _threads(
            _mongo_ceiling_job(mongo, "ceiling_mongo", work["mongo_batches"], work["distinct_docs"])
        )
        _, r = runners("redis")
        redis_s, _ = _threads(_runner_job(r, until))
        redis_ceil_s, _ = _threads(_redis_ceiling_job(client, "ceilredis:", work["redis_batches"]))
        mongo.close()
        client.close()
    store.close()

    rows.append(
        Row(
            f"(a) projector: mixed log, Mongo+Redis views ({events:,} events)",
            applied / both_s,
            "events/s",
            baseline=events / ceil_s,
            baseline_name="raw writes, same ops",
            goal=(">=", 0.5),
            note=f"{mongo_ops / events:.2f} MongoDB ops + {redis_cmds / events:.2f} Redis commands per event "
            f"(batch {PROJECTOR_BATCH}); ceiling = {mongo_inserts:,} documents in insert_many and "
            f"{mongo_ops - mongo_inserts:,} UpdateOne($inc, upsert) in bulk_writes of "
            f"the projector's batch sizes + {redis_cmds:,} HINCRBY in MULTI/EXEC of its sizes, two threads, "
            f"converted to events/s as events / ceiling wall time; SecantusDB used "
            f"{cpu.process_cores:.2f} cores during the projector run",
        )
    )
    rows.append(
        Row(
            "(a) projector: MongoDB view store alone",
            events / mongo_s,
            "events/s",
            baseline=events / mongo_ceil_s,
            baseline_name="raw bulk_write",
            note=f"raw bulk_write = {mongo_ops / mongo_ceil_s:,.0f} ops/s on SecantusDB",
        )
    )
    rows.append(
        Row(
            "(a) projector: Redis view store alone",
            events / redis_s,
            "events/s",
            baseline=events / redis_ceil_s,
            baseline_name="raw pipelines",
            note=f"raw MULTI/EXEC pipelines = {redis_cmds / redis_ceil_s:,.0f} commands/s on Valkey",
        )
    )
    rows.append(
        Row(
            "(a) projector's in-process work alone (read + decode log, build writes; no I/O)",
            events / work_s,
            "events/s",
            baseline=read_events / read_s,
            baseline_name="log read + decode alone",
            note="diagnostic: the projector cannot beat this on one core; the ceiling above leaves it out",
        )
    )
    return rows


# -- (c) feed seeding, (b) lag --------------------------------------------------------------------


POLL_STORY = {
    "story_type": "text",
    "text_content": "which one?",
    "privacy": "public",
    "stickers": [{"sticker_type": "poll", "poll": {"question": "pick one", "options": [{"text": "a"}, {"text": "b"}]}}],
}


def seed_feed(data_dir: Path, viewer: str, wide_viewer: str) -> dict:
    """Through the write path (application service + group commit, in-process): the viewer follows
    FEED_AUTHORS authors who post FEED_STORIES stories between them (public and followers-only);
    the wide viewer follows those and FEED_WIDE_AUTHORS - FEED_AUTHORS more, who post one each."""
    from commands import models
    from commands import use_cases as uc
    from commands.application import StoriesApplication
    from commands.event_store import EventStore
    from commands.group_commit import GroupCommitter
    from domain.platform import Platform

    data_dir.mkdir(parents=True, exist_ok=True)
    store = EventStore(f"sqlite:///{(data_dir / 'events.sqlite3').resolve()}")
    committer = GroupCommitter(store)
    app = StoriesApplication(store, committer, Platform.VIGNETTE)
    authors = [f"author-{i}" for i in range(FEED_AUTHORS)]
    more = [f"author-{i}" for i in range(FEED_AUTHORS, FEED_WIDE_AUTHORS)]

    async def go() -> int:
        started = time.perf_counter()
        jobs = [app.execute(uc.Follow(viewer, a)) for a in authors]
        jobs += [app.execute(uc.Follow(wide_viewer, a)) for a in authors + more]
        for i in range(0, len(jobs), 512):
            await asyncio.gather(*jobs[i : i + 512])
        bodies = []
        for k in range(FEED_STORIES):
            privacy = "public" if k % 2 else "followers"
            body = {"story_type": "image", "media_url": f"https://cdn.example.org/{k}.jpg", "privacy": privacy}
            if k % 10 == 0:
                body["stickers"] = [POLL_STORY["stickers"][0]]
            bodies.append((authors[k % len(authors)], models.CreateStory.model_validate(body)))
        for k, author in enumerate(more):
            body = {
                "story_type": "image",
                "media_url": f"https://cdn.example.org/w{k}.jpg",
                "privacy": "public" if k % 2 else "followers",
            }
            bodies.append((author, models.CreateStory.model_validate(body)))
        created = 0
        for i in range(0, len(bodies), 512):
            answers = await asyncio.gather(*(app.execute(uc.CreateStory(a, b)) for a, b in bodies[i : i + 512]))
            created += sum(1 for result, _ in answers if isinstance(result, uc.StoryPosted))
            if time.perf_counter() - started > 600:
                log("feed seeding hit its time limit")
                break
        return created

    try:
        created = asyncio.run(go())
        head = store.head()
    finally:
        committer.close()
        store.close()
    return {"created": created, "head": head}


def lag_requests(stories: list[str], tokens: list[str]) -> list[tuple[str, str, str, dict | None]]:
    """Alternating views and poll votes; each vote by a different user (one vote per user per poll)."""
    out = []
    for k, token in enumerate(tokens):
        story = stories[k % len(stories)]
        out.append(("POST", f"/api/v1/stories/{story}/view", token, None))
        out.append(("POST", f"/api/v1/stories/{story}/interact", token, {"sticker_index": 0, "option_index": k % 2}))
    return out


def create_poll_stories(port: int, count: int) -> list[str]:
    tokens = mint_tokens(SECRET, [f"poll-owner-{i}" for i in range(count)])
    ids = []
    for token in tokens:
        status, body = http_request("POST", port, "/api/v1/stories", POLL_STORY, token)
        if status != 201:
            raise RuntimeError(f"create answered {status}: {body[:300]!r}")
        import json

        ids.append(json.loads(body)["story_id"])
    return ids


def write_to_visible(answers: list[tuple[float, int]], samples: list[tuple[float, int, int, int]]) -> list[float]:
    """Per answered command: seconds from its answer until a sample showed both read models at its position."""
    import bisect

    times = [s[0] for s in samples]
    applied = [min(s[2], s[3]) for s in samples]
    # running max from each index onward is not needed: positions only grow
    out = []
    for t, position in answers:
        i = bisect.bisect_left(times, t)
        while i < len(samples) and applied[i] < position:
            i += 1
        if i < len(samples):
            out.append(samples[i][0] - t)
    return out


def measure_feed_page(stack, viewer: str, authors: int, head: int, health_lat: list[float], goal: float) -> list[Row]:
    import json

    token = mint_tokens(SECRET, [viewer])[0]
    path = f"/api/v1/stories/feed?limit={FEED_PAGE}"
    # the query API refreshes its served position every 50 ms; make sure it serves the seed
    http_request("GET", stack.query_port, f"{path}&min_position={head}", token=token)
    log(f"(c) feed page: {FEED_REQUESTS} sequential GET {path} as {viewer}")
    lat, statuses, size = sequential_get(stack.query_port, path, token, FEED_REQUESTS, warmup=10)
    status, body = http_request("GET", stack.query_port, path, token=token, timeout=30)
    page = json.loads(body) if status == 200 else {"items": []}
    entries, items = len(page["items"]), sum(len(e["stories"]) for e in page["items"])
    log(
        f"  p50 {median(lat) * 1000:.1f} ms p99 {percentile(lat, 99) * 1000:.1f} ms; {entries} entries, "
        f"{items} stories, {size:,} bytes; statuses {statuses}"
    )
    return [
        Row(
            f"(c) feed page (limit {FEED_PAGE}), {authors:,} followed authors: p99",
            percentile(lat, 99) * 1000,
            "ms",
            baseline=percentile(health_lat, 99) * 1000,
            baseline_name="GET /health p99",
            goal=("<=", goal),
            goal_on_value=True,
            note=f"p50 {median(lat) * 1000:.1f} ms vs /health p50 {median(health_lat) * 1000:.2f} ms; {entries} entries, "
            f"{items} stories, {size / 1e3:.1f} kB per page; statuses {statuses}",
        ),
        Row(
            f"(c) feed page, {authors:,} followed authors: p50",
            median(lat) * 1000,
            "ms",
            baseline=median(health_lat) * 1000,
            baseline_name="GET /health p50",
        ),
    ]


def measure_stack(tmp: Path) -> list[Row]:
    data_dir = tmp / "stack"
    viewer, wide_viewer = "feed-viewer", "feed-viewer-wide"
    log(
        f"(c) seeding: {viewer} follows {FEED_AUTHORS:,} authors with {FEED_STORIES:,} stories, {wide_viewer} "
        f"{FEED_WIDE_AUTHORS:,} authors (write path, in-process)"
    )
    t0 = time.perf_counter()
    seeded = seed_feed(data_dir, viewer, wide_viewer)
    log(f"  {seeded['created']:,} stories, log head {seeded['head']:,}, {time.perf_counter() - t0:.1f} s")
    rows: list[Row] = []
    with Stack(data_dir) as stack:
        reader = PositionReader(stack.event_store_url, stack.mongo_url, stack.redis_url)
        try:
            t0 = time.perf_counter()
            caught = reader.wait_caught_up(300)
            log(f"  the stack's projector caught up with the seed in {time.perf_counter() - t0:.1f} s ({caught})")
            health_lat, _, _ = sequential_get(stack.query_port, "/health", None, FEED_REQUESTS, warmup=10)
            for who, authors, goal in ((viewer, FEED_AUTHORS, 10), (wide_viewer, FEED_WIDE_AUTHORS, 25)):
                rows += measure_feed_page(stack, who, authors, seeded["head"], health_lat, goal)

            log(
                f"(b) lag: {LAG_RATE:g} commands/s (views + poll votes, open loop) for {LAG_S:g} s; sampling every 50 ms"
            )
            stories = create_poll_stories(stack.command_port, 16)
            users = int(LAG_RATE * LAG_S / 2) + 200
            tokens = mint_tokens(SECRET, [f"lag-user-{i}" for i in range(users)])
            requests = lag_requests(stories, tokens)
            reader.wait_caught_up(30)
            sampler = LagSampler(reader).start()
            load_start = time.monotonic()
            load_avg_before = loadavg()
            result = run_paced(stack.command_port, requests, LAG_RATE, LAG_S, "lag")
            load_end = time.monotonic()
            time.sleep(2.0)  # let the tail drain, so write->visible is known for the last answers
            sampler.stop()
            lag = sampler.lag(load_start, load_end)
            visible = write_to_visible(result.answers, sampler.samples)
            log(
                f"  offered {LAG_RATE:g}/s, {result.ok_rps:,.0f} 2xx/s (statuses {result.statuses}, errors {result.errors},"
                f" late {result.late}); lag p50 {lag['s_p50'] * 1000:.0f} ms p99 {lag['s_p99'] * 1000:.0f} ms "
                f"({lag['events_p99']:.0f} events); write->visible p99 {percentile(visible, 99) * 1000:.0f} ms"
            )
            note = (
                f"`stories run` (all processes), {LAG_RATE:g}/s offered views + poll votes for {LAG_S:g} s, "
                f"{result.ok_rps:,.0f} 2xx/s answered, statuses {result.statuses}, {result.errors} errors; "
                f"{lag['samples']} samples of head (SQLite) and both read-model positions every 50 ms; "
                f"lag in events p50 {lag['events_p50']:.0f} / p99 {lag['events_p99']:.0f} / max {lag['events_max']:.0f}; "
                f"load average at start {load_avg_before}"
            )
            rows.append(
                Row(
                    f"(b) projection lag under {LAG_RATE:g} commands/s: p99",
                    lag["s_p99"] * 1000,
                    "ms",
                    goal=("<=", 1000),
                    goal_on_value=True,
                    note=note,
                )
            )
            rows.append(Row(f"(b) projection lag under {LAG_RATE:g} commands/s: p50", lag["s_p50"] * 1000, "ms"))
            rows.append(
                Row(
                    "(b) write answered -> visible in both read models: p99",
                    percentile(visible, 99) * 1000,
                    "ms",
                    note=f"{len(visible):,} answers; p50 {percentile(visible, 50) * 1000:.0f} ms; "
                    "resolution: the 50 ms sampling interval",
                )
            )
        finally:
            reader.close()
    return rows


def run() -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="stories-bench-read-") as tmp:
        rows += measure_projector(Path(tmp))
    with tempfile.TemporaryDirectory(prefix="stories-bench-stack-") as tmp:
        rows += measure_stack(Path(tmp))
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_rows

    print_rows(run())
