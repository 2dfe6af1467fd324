"""The Redis read side on a 3-master Redis Cluster against one Redis, side by side (issue 14).

The same code runs on both (``stories.backends.connect_redis`` / ``connect_async_redis`` pick the
client by URL); the question is what the cluster costs. Two figures, each measured on both
backends in the same run, so the ratio compares like with like:

(a) projector throughput: one mixed log (``commands.synthetic_load.generate`` through the real
    write path into a SQLite log; BENCH_CLUSTER_ENGAGEMENTS engagement commands on 300 users and
    600 stories) projected from scratch by ``ProjectionRunner(store, RedisViewStore(...), 1000)
    .catch_up()``, one thread, as ``stories projector`` runs it; events/s until the head. Runs
    alternate (one Redis, cluster, cluster with ``wait_replicas=1``, and again) and the best of
    each counts, to damp noise from the rest of the machine. Time spent inside
    ``RedisViewStore.apply`` (the write side, without reading and decoding the log) and the CPU the
    redis-servers used are reported too.
(b) feed page: one viewer following BENCH_CLUSTER_FEED_AUTHORS authors, two live stories each
    (public, followers-only, close-friends with the viewer on a quarter of the authors' lists,
    one in ten with a poll sticker; the viewer has seen a third of them), written by projecting
    hand-made events (``UserFollowed``, ``CloseFriendAdded``, ``StoryCreated``, ``StoryViewed``)
    through ``RedisViewStore.apply`` in batches of 1000. Then ``read_api.queries.Queries.feed``
    (the first page, limit 20) in-process, BENCH_CLUSTER_FEED_REQUESTS sequential calls on each
    backend after a warm-up, interleaved call by call (one Redis, cluster, cluster, one Redis,
    ...) so both see the same background load; p50 and p99. ``feed`` reads Redis only, so the
    MongoDB client points nowhere. Both backends' pages must be the same. Measured before (a):
    after it, the generated log's leftovers in this process made every full garbage collection a
    ~200 ms pause on whichever call it hit, which a query API's heap does not have; the full
    collections during the timed calls are counted in the notes (the tail is mostly theirs).

The single server is the machine's Redis (STORIES_TEST_REDIS_URL or redis://127.0.0.1:6379/0;
keys under a per-run prefix, deleted afterwards); the cluster is ``tests.cluster.LocalRedisCluster``
(3 masters, one replica each, on loopback, the same ``redis-server`` binary, no persistence on
either), stopped afterwards.

What would scale on real nodes: here all six redis-servers, the single Redis and this client
share two cores, so the cluster can only cost (three masters and three replicas doing the work
of one, plus redirections and more round trips). With each master on its own machine, the
projector's per-tag APPLY scripts go to three masters in parallel pipelines, and the feed's
per-slot SUNIONs and the cards' per-slot MGETs spread over them, so write throughput and
memory grow with the masters while a feed page costs about the same round trips. The cluster
client, not Redis, then bounds a page: it sends one command per slot (about one per followed
author) where one Redis takes one SUNION for all.

Knobs: BENCH_CLUSTER_ENGAGEMENTS (250000), BENCH_CLUSTER_FEED_AUTHORS (1000),
BENCH_CLUSTER_FEED_REQUESTS (300), BENCH_CLUSTER_ROUNDS (2).
"""

from __future__ import annotations

import asyncio
import gc
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pymongo import AsyncMongoClient

from bench.common import CpuMeter, Row, log, median, percentile
from commands.event_store import EventStore, LoggedEvent
from commands.synthetic_load import generate
from domain import engagement as en
from domain import social as so
from domain import stories as st
from domain.platform import Platform
from projections.redis_views import RedisViewStore
from projections.runner import ProjectionRunner
from read_api.queries import Queries
from stories.backends import REDIS_OPTIONS, connect_async_redis, connect_redis, slot_groups

REDIS_URL = os.environ.get("STORIES_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ENGAGEMENTS = int(os.environ.get("BENCH_CLUSTER_ENGAGEMENTS", "250000"))
FEED_AUTHORS = int(os.environ.get("BENCH_CLUSTER_FEED_AUTHORS", "1000"))
FEED_REQUESTS = int(os.environ.get("BENCH_CLUSTER_FEED_REQUESTS", "300"))
ROUNDS = int(os.environ.get("BENCH_CLUSTER_ROUNDS", "2"))
USERS, STORIES = 300, 600
PROJECTOR_BATCH = 1000
FEED_PAGE = 20
FEED_WARMUP = 30
STORIES_PER_AUTHOR = 2
PROJECT_LIMIT_S = 600.0
COST_LIMIT = 1.5  # the cluster may cost at most this much, on this machine

SCALE_NOTE = (
    "all 6 cluster redis-servers, the single Redis and this client share the machine's 2 cores; on real "
    "nodes (each master on its own machine) the projector's per-tag APPLY scripts and the feed's "
    "per-slot SUNION/MGET pipelines spread over the 3 masters"
)


# -- (a) projector --------------------------------------------------------------------------------


class TimedView:
    """A view store that adds up the time spent in its ``apply`` (the Redis side of a batch)."""

    def __init__(self, view) -> None:
        self.view, self.name, self.seconds = view, view.name, 0.0

    def position(self) -> int:
        return self.view.position()

    def pending_until(self):
        return self.view.pending_until()

    def apply(self, events, start: int, position: int) -> None:
        t0 = time.perf_counter()
        self.view.apply(events, start, position)
        self.seconds += time.perf_counter() - t0


def redis_pids(client, cluster=None) -> list[int]:
    """The redis-server processes behind a backend (the cluster: all nodes, replicas too)."""
    if cluster is not None:
        return [node.proc.pid for node in cluster.nodes.values() if node.alive()]
    try:
        return [int(client.info("server")["process_id"])]
    except Exception:  # a server elsewhere: no CPU figure
        return []


def cores_used(pids: list[int], seconds: float, before: list[float]) -> float:
    if not pids or not seconds:
        return float("nan")
    return sum(CpuMeter._proc(p) for p in pids) / seconds - sum(before) / seconds


def project(store, client, prefix: str, until: int, pids: list[int], **options) -> dict:
    """Project the log from scratch under ``prefix``: events/s, seconds, time in apply, server cores."""
    view = TimedView(RedisViewStore(client, prefix, **options))
    runner = ProjectionRunner(store, view, PROJECTOR_BATCH)
    cpu0 = [CpuMeter._proc(p) for p in pids]
    t0 = time.perf_counter()
    deadline = time.monotonic() + PROJECT_LIMIT_S
    while (runner.position or 0) < until and time.monotonic() < deadline:
        if not runner.run_once(until):
            break
    seconds = time.perf_counter() - t0
    if runner.position != until:
        raise RuntimeError(f"projector stopped at {runner.position} of {until} under {prefix}")
    return {
        "events": runner.applied,
        "seconds": seconds,
        "rate": runner.applied / seconds,
        "apply_s": view.seconds,
        "server_cores": cores_used(pids, seconds, cpu0),
    }


def measure_projector(tmp: Path, single, cluster_client, cluster, run_prefix: str) -> list[Row]:
    store = EventStore(f"sqlite:///{(tmp / 'events.sqlite3').resolve()}")
    try:
        log(
            f"(a) generating a log through the write path: {USERS} users, {STORIES} stories, "
            f"{ENGAGEMENTS:,} engagements"
        )
        t0 = time.perf_counter()
        asyncio.run(generate(store, Platform.VIGNETTE, users=USERS, stories=STORIES, engagements=ENGAGEMENTS))
        until = store.head()
        log(f"  head {until:,} in {time.perf_counter() - t0:.0f} s")
        t0 = time.perf_counter()
        events = sum(1 for _ in store.read(0, until, PROJECTOR_BATCH))
        read_s = time.perf_counter() - t0

        backends = {
            "one Redis": (single, {}, redis_pids(single)),
            "cluster": (cluster_client, {}, redis_pids(cluster_client, cluster)),
            "cluster, wait_replicas=1": (cluster_client, {"wait_replicas": 1}, redis_pids(cluster_client, cluster)),
        }
        # warm-up: a slice on each, so connections, the slot map and script loading are not timed
        for i, (client, options, pids) in enumerate(backends.values()):
            project(store, client, f"{run_prefix}warm{i}:", min(until, 3000), pids, **options)
        results: dict[str, list[dict]] = {name: [] for name in backends}
        for r in range(ROUNDS):
            for name, (client, options, pids) in backends.items():
                tag = name.split(",")[0].replace(" ", "") + ("w" if options else "")
                res = project(store, client, f"{run_prefix}p{r}{tag}:", until, pids, **options)
                results[name].append(res)
                log(
                    f"  round {r + 1}, {name}: {res['rate']:,.0f} events/s ({res['events']:,} events in "
                    f"{res['seconds']:.1f} s, {res['apply_s']:.1f} s in apply; redis-server(s) used "
                    f"{res['server_cores']:.2f} cores)"
                )
    finally:
        store.close()

    best = {name: max(rs, key=lambda r: r["rate"]) for name, rs in results.items()}
    one, clu, durable = best["one Redis"], best["cluster"], best["cluster, wait_replicas=1"]

    def runs(name: str) -> str:
        return ", ".join(f"{r['rate']:,.0f}" for r in results[name])

    return [
        Row(
            f"Redis projector, one Redis ({events:,} events)",
            one["rate"],
            "events/s",
            note=f"mixed log ({USERS} users, {STORIES} stories, {ENGAGEMENTS:,} engagement commands; SQLite), "
            f"batch {PROJECTOR_BATCH}, one thread; best of {ROUNDS} runs ({runs('one Redis')} events/s); "
            f"{one['apply_s']:.1f} of {one['seconds']:.1f} s in RedisViewStore.apply; redis-server used "
            f"{one['server_cores']:.2f} cores; reading + decoding the log alone: {events / read_s:,.0f} events/s",
        ),
        Row(
            "Redis projector, 3-master cluster",
            clu["rate"],
            "events/s",
            baseline=one["rate"],
            baseline_name="one Redis",
            goal=(">=", round(1 / COST_LIMIT, 2)),
            note=f"3 masters + 3 replicas on loopback; best of {ROUNDS} runs ({runs('cluster')} events/s); "
            f"{clu['apply_s']:.1f} of {clu['seconds']:.1f} s in RedisViewStore.apply; the 6 redis-servers used "
            f"{clu['server_cores']:.2f} cores between them (one Redis: {one['server_cores']:.2f}), so most of the "
            f"extra time is the client's; goal: the cluster costs at most {COST_LIMIT:g}x; " + SCALE_NOTE,
        ),
        Row(
            "Redis projector apply time (no log read), 3-master cluster",
            clu["apply_s"],
            "s",
            baseline=one["apply_s"],
            baseline_name="one Redis",
            note="informative: the write side of the best runs above (time inside RedisViewStore.apply: building "
            "the writes, the client and the servers; not reading and decoding the log); ratio = how many times "
            "longer the cluster takes for the writes alone",
        ),
        Row(
            "Redis projector, 3-master cluster, wait_replicas=1",
            durable["rate"],
            "events/s",
            baseline=clu["rate"],
            baseline_name="cluster",
            note=f"informative: each batch WAITs for one replica of every master it wrote "
            f"(durable against a failover); best of {ROUNDS} runs "
            f"({runs('cluster, wait_replicas=1')} events/s); "
            f"{durable['apply_s']:.1f} s in apply",
        ),
    ]


# -- (b) feed page --------------------------------------------------------------------------------

POLL = {
    "sticker_type": "poll",
    "x": 0.5,
    "y": 0.5,
    "width": 0.3,
    "height": 0.1,
    "rotation": 0.0,
    "poll": {"question": "which one?", "options": [{"text": "a"}, {"text": "b"}]},
}


def feed_events(viewer: str, authors: int, base: datetime) -> tuple[list, datetime]:
    """The seed as logged events, and a time inside every story's life (for ``now``)."""
    out: list = []
    at = base

    def add(cls, **fields) -> None:
        nonlocal at
        at += timedelta(milliseconds=5)
        out.append(
            LoggedEvent(len(out) + 1, cls(originator_id=uuid.uuid4(), originator_version=1, occurred_at=at, **fields))
        )

    names = [f"cl-author-{i}" for i in range(authors)]
    for i, author in enumerate(names):
        add(so.UserFollowed, follower_id=viewer, followee_id=author)
        if i % 4 == 0:
            add(so.CloseFriendAdded, user_id=author, friend_id=viewer)
    stories: list[tuple[str, str]] = []
    privacies = ["public", "followers", "close_friends", "public"]
    k = 0
    for author in names:
        for _ in range(STORIES_PER_AUTHOR):
            sid = str(uuid.uuid4())
            add(
                st.StoryCreated,
                story_id=sid,
                user_id=author,
                story_type="image",
                media_id=None,
                media_url=f"https://cdn.example.org/{sid}.jpg",
                thumbnail_url=None,
                text_content=None,
                background_color=None,
                background_gradient=None,
                duration=5.0,
                stickers=[POLL] if k % 10 == 0 else [],
                privacy=privacies[k % 4],
                allowed_viewer_ids=[],
                hidden_from_ids=[],
                allow_replies="everyone",
                expires_at=(at + timedelta(hours=24)).isoformat(),
            )
            stories.append((sid, author))
            k += 1
    for j, (sid, author) in enumerate(stories):
        if j % 3 == 0:
            add(en.StoryViewed, story_id=sid, owner_id=author, viewer_id=viewer, view_number=1)
    return out, at + timedelta(minutes=5)


def seed(client, prefix: str, events: list) -> None:
    view = RedisViewStore(client, prefix)
    for i in range(0, len(events), PROJECTOR_BATCH):
        batch = events[i : i + PROJECTOR_BATCH]
        view.apply(batch, i, batch[-1].position)


def page_shape(page: dict) -> list:
    return [
        (e["user_id"], e["has_unseen"], tuple((s["story_id"], s["viewed_by_me"]) for s in e["stories"]))
        for e in page["items"]
    ]


async def feed_latencies(urls: dict[str, str], prefixes: dict[str, str], viewer: str, now: datetime) -> dict:
    mongo = AsyncMongoClient("mongodb://127.0.0.1:1", serverSelectionTimeoutMS=100)
    clients = {name: connect_async_redis(url, **REDIS_OPTIONS) for name, url in urls.items()}
    try:
        queries = {name: Queries(mongo, "unused", clients[name], prefixes[name], Platform.VIGNETTE) for name in urls}
        pages = {name: await q.feed(viewer, now, FEED_PAGE, None) for name, q in queries.items()}
        for _ in range(FEED_WARMUP):
            for q in queries.values():
                await q.feed(viewer, now, FEED_PAGE, None)
        samples: dict[str, list[float]] = {name: [] for name in urls}
        order = list(urls)
        collections = GcWatch()
        gc.collect()
        with collections:
            for i in range(FEED_REQUESTS):
                for name in order if i % 2 == 0 else order[::-1]:  # interleaved: both see the same background
                    collections.current = name
                    t0 = time.perf_counter()
                    await queries[name].feed(viewer, now, FEED_PAGE, None)
                    samples[name].append(time.perf_counter() - t0)
        k = queries[order[0]].keys
        groups = {
            name: len(
                slot_groups(clients[name], [k.live(viewer)] + [k.live(f"cl-author-{i}") for i in range(FEED_AUTHORS)])
            )
            for name in urls
        }
        return {"samples": samples, "pages": pages, "groups": groups, "gc": collections.by_name}
    finally:
        for client in clients.values():
            await client.aclose()
        await mongo.close()


class GcWatch:
    """Full (generation 2) garbage collections during the timed calls, per backend: (count, seconds).
    They land on whichever call is running, so they explain a tail rather than a backend."""

    def __init__(self) -> None:
        self.current = ""
        self.by_name: dict[str, list[float]] = {}
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            entry = self.by_name.setdefault(self.current, [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - self._t0

    def __enter__(self) -> GcWatch:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self)


def run_loop(coro):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # as the query API serves
        return runner.run(coro)


def measure_feed(single, cluster_client, cluster, run_prefix: str) -> list[Row]:
    viewer = "cl-viewer"
    events, now = feed_events(viewer, FEED_AUTHORS, datetime.now(UTC) - timedelta(hours=1))
    prefixes = {"one Redis": f"{run_prefix}feed1:", "cluster": f"{run_prefix}feedc:"}
    log(
        f"(b) seeding: {viewer} follows {FEED_AUTHORS:,} authors, {STORIES_PER_AUTHOR} live stories each "
        f"({len(events):,} events, projected on both)"
    )
    for name, client in (("one Redis", single), ("cluster", cluster_client)):
        t0 = time.perf_counter()
        seed(client, prefixes[name], events)
        log(f"  {name}: {time.perf_counter() - t0:.1f} s")
    log(f"(b) feed page (limit {FEED_PAGE}): {FEED_REQUESTS} calls on each, interleaved, after {FEED_WARMUP} warm-up")
    out = run_loop(feed_latencies({"one Redis": REDIS_URL, "cluster": cluster.url}, prefixes, viewer, now))
    s = out["samples"]
    ms = {name: (percentile(v, 99) * 1000, median(v) * 1000) for name, v in s.items()}
    same = page_shape(out["pages"]["one Redis"]) == page_shape(out["pages"]["cluster"])
    page = out["pages"]["one Redis"]
    entries, items = len(page["items"]), sum(len(e["stories"]) for e in page["items"])
    tails = {
        name: (
            f"p90 {percentile(v, 90) * 1000:.1f} ms, slowest "
            + ", ".join(f"{x * 1000:.1f}" for x in sorted(v)[-5:][::-1])
            + " ms; "
            + "{:.0f} full garbage collections in its calls ({:.0f} ms)".format(
                *(lambda n, t: (n, t * 1000))(*out["gc"].get(name, [0, 0.0]))
            )
        )
        for name, v in s.items()
    }
    for name, (p99, p50) in ms.items():
        log(f"  {name}: p50 {p50:.2f} ms, p99 {p99:.2f} ms; {tails[name]}")
    if not same:
        log(
            f"  the pages differ: one Redis {page_shape(out['pages']['one Redis'])[:3]}..., "
            f"cluster {page_shape(out['pages']['cluster'])[:3]}..."
        )
    shape = f"{entries} entries, {items} stories on the page; the pages of both backends are " + (
        "the same" if same else "DIFFERENT (see the log)"
    )
    return [
        Row(
            f"feed page (limit {FEED_PAGE}), {FEED_AUTHORS:,} followed authors, one Redis: p99",
            ms["one Redis"][0],
            "ms",
            note=f"Queries.feed in-process (uvloop), {FEED_REQUESTS} sequential calls per backend interleaved "
            f"with the cluster's; {STORIES_PER_AUTHOR} live stories per author; {shape}; live keys read "
            f"with {out['groups']['one Redis']} SUNION; {tails['one Redis']}",
        ),
        Row("feed page, one Redis: p50", ms["one Redis"][1], "ms"),
        Row(
            f"feed page (limit {FEED_PAGE}), {FEED_AUTHORS:,} followed authors, 3-master cluster: p99",
            ms["cluster"][0],
            "ms",
            baseline=ms["one Redis"][0],
            baseline_name="one Redis p99",
            goal=("<=", COST_LIMIT),
            note=f"{FEED_AUTHORS + 1:,} live keys fall in {out['groups']['cluster']:,} slots: one SUNION each, "
            f"pipelined per master; {tails['cluster']}; goal: the cluster costs at most {COST_LIMIT:g}x; " + SCALE_NOTE,
        ),
        Row(
            "feed page, 3-master cluster: p50",
            ms["cluster"][1],
            "ms",
            baseline=ms["one Redis"][1],
            baseline_name="one Redis p50",
        ),
    ]


def delete_prefix(client, prefix: str) -> int:
    keys = list(client.scan_iter(match=prefix + "*", count=5000))
    for i in range(0, len(keys), 5000):
        client.delete(*keys[i : i + 5000])
    return len(keys)


def run() -> list[Row]:
    from tests.cluster import LocalRedisCluster

    run_prefix = f"bench-cluster-{uuid.uuid4().hex[:8]}:"
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="stories-bench-cluster-") as tmp:
        log("starting a 3-master Redis Cluster (one replica each) on loopback")
        cluster = LocalRedisCluster.start(Path(tmp) / "cluster")
        single = connect_redis(REDIS_URL, **REDIS_OPTIONS)
        cluster_client = connect_redis(cluster.url, **REDIS_OPTIONS)
        try:
            log(f"  {cluster.url}; one Redis: {REDIS_URL}; key prefix {run_prefix}")
            feed = measure_feed(single, cluster_client, cluster, run_prefix)  # first: a small heap, as a query API's
            rows += measure_projector(Path(tmp), single, cluster_client, cluster, run_prefix) + feed
        finally:
            try:
                log(f"deleted {delete_prefix(single, run_prefix):,} keys under {run_prefix} on {REDIS_URL}")
            finally:
                single.close()
                cluster_client.close()
                cluster.stop()
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_rows

    print_rows(run())
