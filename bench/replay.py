"""Generated event logs for the read-side, replay and relay benchmarks, cached under bench/out/.

The log is written through the real write path: ``commands.synthetic_load.SyntheticLoad`` (the
application service and the group committer, in-process, SQLite). Two changes to its defaults, so
that most commands are accepted and a 1M-event log takes minutes rather than a quarter hour:

* stories are mostly public (70 %; else followers / close friends / custom, 10 % each), where
  ``stories generate`` makes 40 % public and most random views are refused as not visible;
* engagement runs in rounds until the log holds ``events`` positions (or a time limit).

The file is keyed by every parameter (and WORKLOAD_VERSION) and written under a temporary name,
renamed only when complete, so an interrupted generation is never reused.

    python -m bench.replay --events 1000000     # pre-generate the replay log
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import time
from pathlib import Path

from bench.common import OUT_DIR, log

WORKLOAD_VERSION = 1
GENERATE_TIME_LIMIT_S = float(os.environ.get("BENCH_GENERATE_LIMIT_S", "1500"))
ROUND = 20_000  # engagement commands per round


def log_path(events: int, users: int, stories: int, seed: int) -> Path:
    return OUT_DIR / f"log-v{WORKLOAD_VERSION}-e{events}-u{users}-s{stories}-seed{seed}.sqlite3"


def _head(path: Path) -> int:
    with sqlite3.connect(path) as c:
        return c.execute("SELECT COALESCE(MAX(rowid), 0) FROM stored_events").fetchone()[0]


def generated_log(events: int, users: int = 2000, stories: int = 20000, seed: int = 7) -> tuple[Path, dict]:
    """The path of a SQLite event log with at least ``events`` positions; generated when missing."""
    path = log_path(events, users, stories, seed)
    if path.exists():
        log(f"reusing cached log {path.name} (head {_head(path):,})")
        return path, {"cached": True, "head": _head(path)}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    info = asyncio.run(_generate(tmp, events, users, stories, seed))
    if info["head"] < events:
        log(f"generation stopped at {info['head']:,} positions (time limit); using it uncached")
        return tmp, {**info, "cached": False}
    with sqlite3.connect(tmp) as c:  # fold the WAL in, so the renamed file is complete on its own
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    tmp.rename(path)
    for p in (Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    return path, {**info, "cached": False}


async def _generate(path: Path, events: int, users: int, stories: int, seed: int) -> dict:
    from commands.application import StoriesApplication
    from commands.event_store import EventStore
    from commands.group_commit import GroupCommitter
    from commands.synthetic_load import SyntheticLoad
    from domain.platform import Platform

    class MostlyPublic(SyntheticLoad):
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

    store = EventStore(f"sqlite:///{path.resolve()}")
    committer = GroupCommitter(store)
    app = StoriesApplication(store, committer, Platform.VIGNETTE)
    load = MostlyPublic(app, users, seed)
    started = time.perf_counter()
    commands = 0
    try:
        log(f"generating a {events:,}-event log through the write path: {users} users, {stories} stories")
        await load.social()
        await load.stories(stories)
        commands = users * 11 + stories
        head = store.head()
        last_report = 0.0
        while head < events and time.perf_counter() - started < GENERATE_TIME_LIMIT_S:
            n = max(1000, min(ROUND, int((events - head) * 1.5)))
            await load.engagement(n)
            commands += n
            head = store.head()
            elapsed = time.perf_counter() - started
            if elapsed - last_report > 20:
                last_report = elapsed
                log(
                    f"  {head:,}/{events:,} positions, {commands / elapsed:,.0f} commands/s, "
                    f"{head / elapsed:,.0f} positions/s"
                )
    finally:
        committer.close()
        store.close()
    elapsed = time.perf_counter() - started
    log(f"generated {head:,} positions from {commands:,} commands in {elapsed:.0f} s")
    return {
        "head": head,
        "commands": commands,
        "seconds": elapsed,
        "accepted": dict(load.tally.accepted),
        "rejected": dict(load.tally.rejected),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replay")
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--stories", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=7)
    a = parser.parse_args()
    path, info = generated_log(a.events, a.users, a.stories, a.seed)
    print(path, info)


if __name__ == "__main__":
    main()


# -- the benchmark -----------------------------------------------------------------------------

REPLAY_EVENTS = int(os.environ.get("BENCH_REPLAY_EVENTS", "1000000"))
REPLAY_LIMIT_S = float(os.environ.get("BENCH_REPLAY_LIMIT_S", "300"))
SLICE = int(os.environ.get("BENCH_REPLAY_SLICE", "60000"))


def run() -> list:
    """The rebuild of a generated log into fresh databases on the embedded servers, as
    ``stories replay`` does it (``projections.bulk_load``: the log folded in memory, documents
    inserted in bulk, Redis written in plain pipelines, indexes after the load), against the
    ceiling measured in the same run: reading and decoding the same log and nothing else. For
    reference, the projector's steady rate (ProjectionRunner, batch 1000, one thread per store)
    and the former replay (the normal runners with batch 5000) over the log's first SLICE positions."""
    import tempfile
    import threading

    import redis
    from pymongo import MongoClient

    from bench.common import CpuMeter, EmbeddedBackends, Row
    from commands.event_store import EventStore
    from projections.bulk_load import bulk_load, read_ceiling
    from projections.mongo_views import MongoViewStore
    from projections.redis_views import RedisViewStore
    from projections.replay import REPLAY_BATCH, rebuild_with_runners
    from projections.runner import ProjectionRunner

    path, info = generated_log(REPLAY_EVENTS)
    store = EventStore(f"sqlite:///{path.resolve()}")
    head = store.head()
    slice_end = min(SLICE, head)
    rows = []

    log(f"ceiling: read and decode positions 1..{head:,} (EventStore.read_batch, 20,000 rows at a time)")
    read_events, read_s = read_ceiling(store, head)
    ceiling = read_events / read_s
    log(f"  {ceiling:,.0f} events/s ({read_events:,} events, {head:,} positions in {read_s:.1f} s)")

    with tempfile.TemporaryDirectory(prefix="stories-bench-replay-") as tmp, EmbeddedBackends(Path(tmp)) as backends:
        mongo = MongoClient(backends.mongo_url, tz_aware=True)
        client = redis.Redis.from_url(backends.redis_url)

        log(f"bulk rebuild: projections.bulk_load of {head:,} positions into fresh databases")
        cpu = CpuMeter(backends.mongo.process.pid).start()
        me = CpuMeter(os.getpid()).start()
        started = time.perf_counter()
        stats = bulk_load(store, mongo, "replayed", client, "replayed:", head)
        bulk_s = time.perf_counter() - started
        cpu.stop()
        me.stop()
        bulk_rate = stats.applied / bulk_s
        docs = {
            name: mongo["replayed"][name].estimated_document_count()
            for name in mongo["replayed"].list_collection_names()
        }
        log(
            f"  {bulk_rate:,.0f} events/s ({stats.applied:,} events, {head:,} positions in {bulk_s:.1f} s); "
            f"phases { ({k: round(v, 1) for k, v in stats.phases.items()}) }; {sum(docs.values()):,} documents "
            f"{docs}, {stats.mongo_updated:,} later updates, {stats.redis_commands:,} Redis commands; "
            f"SecantusDB used {cpu.process_cores:.2f} cores, this process {me.process_cores:.2f}, "
            f"the machine was {cpu.machine_busy:.0%} busy"
        )

        log(f"projector steady rate: ProjectionRunner batch 1000, two threads, positions 1..{slice_end:,}")
        runners = [
            ProjectionRunner(store, MongoViewStore(mongo, "projector"), 1000),
            ProjectionRunner(store, RedisViewStore(client, "projector:"), 1000),
        ]
        deadline = time.monotonic() + REPLAY_LIMIT_S

        def follow(runner):
            while (runner.position or 0) < slice_end and time.monotonic() < deadline and runner.run_once(slice_end):
                pass

        threads = [threading.Thread(target=follow, args=(r,)) for r in runners]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(REPLAY_LIMIT_S + 60)
        proj_s = time.perf_counter() - t0
        proj_events = min(r.applied for r in runners)
        proj_rate = proj_events / proj_s
        log(f"  {proj_rate:,.0f} events/s ({proj_events:,} events in {proj_s:.1f} s)")

        log(f"former replay (normal runners, batch {REPLAY_BATCH}) over positions 1..{slice_end:,}")
        t0 = time.perf_counter()
        old_events = rebuild_with_runners(store, mongo, "former", client, "former:", slice_end)
        old_rate = old_events / (time.perf_counter() - t0)
        log(f"  {old_rate:,.0f} events/s")
        mongo.close()
        client.close()
    store.close()

    gen = (
        f"generated in {info['seconds']:.0f} s from {info['commands']:,} commands"
        if not info.get("cached")
        else "cached in bench/out/"
    )
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in stats.phases.items())
    rows.append(
        Row(
            f"replay: read and decode the log alone ({read_events:,} events, {head:,} positions)",
            ceiling,
            "events/s",
            note=f"{path.name} ({gen}); {head / read_s:,.0f} positions/s",
        )
    )
    rows.append(
        Row(
            f"replay: bulk rebuild of all {stats.applied:,} events ({head:,} positions)",
            bulk_rate,
            "events/s",
            baseline=ceiling,
            baseline_name="read+decode ceiling, same run",
            goal=(">=", 10000),
            goal_on_value=True,
            note=f"{head / bulk_s:,.0f} positions/s, {bulk_s:.1f} s end to end ({phases}); "
            f"{sum(docs.values()):,} MongoDB documents inserted, {stats.mongo_updated:,} later updates, "
            f"{stats.redis_commands:,} Redis commands; SecantusDB used {cpu.process_cores:.2f} cores, "
            f"the rebuilding process {me.process_cores:.2f}, the machine was {cpu.machine_busy:.0%} busy",
        )
    )
    rows.append(
        Row(
            f"replay before the bulk load (normal runners, batch {REPLAY_BATCH}), positions 1..{slice_end:,}",
            old_rate,
            "events/s",
            baseline=proj_rate,
            baseline_name="projector steady rate, same slice",
        )
    )
    return rows
