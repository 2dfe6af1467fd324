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
            return ("public" if r < 0.7 else self.app.platform.audience if r < 0.8
                    else "close_friends" if r < 0.9 else "custom")

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
                log(f"  {head:,}/{events:,} positions, {commands / elapsed:,.0f} commands/s, "
                    f"{head / elapsed:,.0f} positions/s")
    finally:
        committer.close()
        store.close()
    elapsed = time.perf_counter() - started
    log(f"generated {head:,} positions from {commands:,} commands in {elapsed:.0f} s")
    return {"head": head, "commands": commands, "seconds": elapsed,
            "accepted": dict(load.tally.accepted), "rejected": dict(load.tally.rejected)}


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


class _TimeUp(Exception):
    pass


def run() -> list:
    """Replay (``projections.replay.rebuild``, batch 5000, both stores in one thread) of a generated
    log into fresh databases on the embedded servers, vs the projector's steady rate
    (ProjectionRunner, batch 1000, one thread per store) over the log's first SLICE positions;
    both also compared over that same slice. Bounded by BENCH_REPLAY_LIMIT_S: when the replay
    does not finish, the rate is over the part it did."""
    import tempfile
    import threading

    import redis
    from pymongo import MongoClient

    from bench.common import CpuMeter, EmbeddedBackends, Row
    from commands.event_store import EventStore
    from projections.mongo_views import MongoViewStore
    from projections.redis_views import RedisViewStore
    from projections.replay import REPLAY_BATCH, rebuild
    from projections.runner import ProjectionRunner

    path, info = generated_log(REPLAY_EVENTS)
    store = EventStore(f"sqlite:///{path.resolve()}")
    head = store.head()
    slice_end = min(SLICE, head)
    rows = []
    with tempfile.TemporaryDirectory(prefix="stories-bench-replay-") as tmp, EmbeddedBackends(Path(tmp)) as backends:
        mongo = MongoClient(backends.mongo_url)
        client = redis.Redis.from_url(backends.redis_url)

        log(f"projector steady rate: ProjectionRunner batch 1000, two threads, positions 1..{slice_end:,}")
        runners = [ProjectionRunner(store, MongoViewStore(mongo, "projector"), 1000),
                   ProjectionRunner(store, RedisViewStore(client, "projector:"), 1000)]
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

        log(f"replay: projections.replay.rebuild (batch {REPLAY_BATCH}) of {head:,} positions into fresh databases, "
            f"at most {REPLAY_LIMIT_S:.0f} s")
        progress: list[tuple[float, int]] = []
        started = time.perf_counter()

        def on_progress(position: int) -> None:
            progress.append((time.perf_counter() - started, position))
            if time.perf_counter() - started > REPLAY_LIMIT_S:
                raise _TimeUp

        cpu = CpuMeter(backends.mongo.process.pid).start()
        finished = True
        try:
            applied = rebuild(store, mongo, "replayed", client, "replayed:", head, on_progress)
        except _TimeUp:
            finished = False
            applied = None
        cpu.stop()
        elapsed, reached = progress[-1] if progress else (time.perf_counter() - started, 0)
        # positions == events in this log (no idempotency records), so positions/s is events/s
        replay_rate = (applied if applied is not None else reached) / elapsed
        at_slice = next(((t, p) for t, p in progress if p >= slice_end), None)
        log(f"  {replay_rate:,.0f} events/s ({reached:,} positions in {elapsed:.1f} s, "
            f"{'finished' if finished else 'stopped at the time limit'})")
        mongo.close()
        client.close()
    store.close()

    gen = (f"generated in {info['seconds']:.0f} s from {info['commands']:,} commands" if not info.get("cached")
           else "cached in bench/out/")
    rows.append(Row(f"replay: rebuild {'all ' if finished else ''}{reached:,} of {head:,} events", replay_rate, "events/s",
                    baseline=proj_rate, baseline_name="projector steady rate", goal=(">=", 25000), goal_on_value=True,
                    note=f"{path.name} ({gen}); {'finished' if finished else f'stopped at the {REPLAY_LIMIT_S:.0f} s limit'}; "
                         f"SecantusDB used {cpu.process_cores:.2f} cores; projector rate over positions 1..{slice_end:,} "
                         f"(batch 1000, one thread per store)"))
    if at_slice:
        rows.append(Row(f"replay over the projector's slice (positions 1..{slice_end:,})", at_slice[1] / at_slice[0],
                        "events/s", baseline=proj_rate, baseline_name="projector, same slice"))
    return rows
