"""End to end: commands/s the command API sustains while the projector keeps lag p99 under 1 s.

``stories run`` (command API, query API, projector, expirer, relay, embedded SecantusDB + Valkey)
on a temp data dir. Views and poll votes (half each, every vote by a new user) are offered at a
steady rate (open loop) for BENCH_E2E_STEP_S per step, stepping up through BENCH_E2E_RATES; the log
head and both read models' positions are sampled every 20 ms (SAMPLE_MS). A step holds when lag p99 < 1 s
(lag = how long ago the oldest event not yet in both read models was appended) and at least 95 %
of the offered rate was answered 2xx (2xx answers / seconds it took to send the step's requests:
when the server falls behind, no in-flight slot is free, sending stretches and this drops). Stops at the first step that does not
hold; between steps it waits (bounded) for the projector to catch up. The ladder runs twice: on
the embedded SQLite event store, then on PostgreSQL (a fresh database on 127.0.0.1:5432).

Knobs: BENCH_E2E_RATES ("200,400,800,1300,2000,2600,3200,4000,5000,6000"), BENCH_E2E_STEP_S (8).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench.common import (
    SECRET,
    FreshPostgres,
    LagSampler,
    PositionReader,
    ProcessTreeCpu,
    Row,
    Stack,
    loadavg,
    log,
    mint_tokens,
    run_paced,
)
from bench.read_side import create_poll_stories, lag_requests

RATES = [
    float(x) for x in os.environ.get("BENCH_E2E_RATES", "200,400,800,1300,2000,2600,3200,4000,5000,6000").split(",")
]
STEP_S = float(os.environ.get("BENCH_E2E_STEP_S", "8"))
LAG_GOAL_S = 1.0
SAMPLE_MS = 20  # lag resolution: finer than the 50 ms the issue asks for


def run() -> list[Row]:
    """The ladder on the embedded default (SQLite event store), then on the production log
    (PostgreSQL, a fresh database), same steps and read models."""
    rows = ladder("SQLite")
    with FreshPostgres("e2e") as pg:
        rows += ladder("PostgreSQL", STORIES_EVENT_STORE_URL=pg.url)
    return rows


def ladder(log_name: str, **env: str) -> list[Row]:
    rows: list[Row] = []
    steps = []
    log(f"end to end, {log_name} event store")
    with tempfile.TemporaryDirectory(prefix="stories-bench-e2e-") as tmp, Stack(Path(tmp), **env) as stack:
        reader = PositionReader(stack.event_store_url, stack.mongo_url, stack.redis_url)
        try:
            stories = create_poll_stories(stack.command_port, 16)
            for step, rate in enumerate(RATES):
                users = int(rate * STEP_S / 2) + 100
                tokens = mint_tokens(SECRET, [f"e2e{step}-{i}" for i in range(users)])
                requests = lag_requests(stories, tokens)
                reader.wait_caught_up(30)
                load = loadavg()
                sampler = LagSampler(reader, interval_s=SAMPLE_MS / 1000).start()
                cpu = ProcessTreeCpu(stack.process.pid).start()
                t0 = time.monotonic()
                result = run_paced(stack.command_port, requests, rate, STEP_S, f"e2e-{log_name}-{int(rate)}")
                t1 = time.monotonic()
                cpu.stop()
                sampler.stop()
                lag = sampler.lag(t0, t1)
                # answered 2xx per second of sending time: when the server falls behind, sending
                # stretches past STEP_S (no free in-flight slot) and this drops below the offer
                held = lag["s_p99"] < LAG_GOAL_S and result.ok_rps >= 0.95 * rate
                steps.append((rate, result, lag, held, load, cpu.summary()))
                log(
                    f"  offered {rate:,.0f}/s: {result.ok_rps:,.0f} 2xx/s (sent {result.sent}, statuses {result.statuses}, "
                    f"errors {result.errors}, late {result.late}), latency p99 {result.latency_p99_ms:.0f} ms; "
                    f"lag p50 {lag['s_p50'] * 1000:.0f} ms p99 {lag['s_p99'] * 1000:.0f} ms "
                    f"({lag['events_p99']:.0f} events); {'held' if held else 'did not hold'}; load {load}; "
                    f"CPU: {cpu.summary()}"
                )
                if not held:
                    break
        finally:
            reader.close()
    best = max((s for s in steps if s[3]), key=lambda s: s[0], default=None)
    trail = "; ".join(
        f"{r:,.0f}/s -> {res.ok_rps:,.0f} 2xx/s, lag p99 {lag['s_p99'] * 1000:,.0f} ms{'' if held else ' ✗'}"
        for r, res, lag, held, _, _ in steps
    )
    rows.append(
        Row(
            f"end to end ({log_name} log): highest offered rate held (lag p99 < 1 s, >= 95 % 2xx)",
            best[1].ok_rps if best else 0.0,
            "commands/s",
            note=f"steps of {STEP_S:g} s, views + poll votes via `stories run`, lag sampled every "
            f"{SAMPLE_MS} ms: {trail}",
        )
    )
    for rate, res, lag, _held, load, cpu_use in steps:
        rows.append(
            Row(
                f"end to end ({log_name} log) @ {rate:,.0f}/s offered: lag p99",
                lag["s_p99"] * 1000,
                "ms",
                goal=("<=", 1000),
                goal_on_value=True,
                note=f"{res.ok_rps:,.0f} 2xx/s; command latency p50 {res.latency_p50_ms:.0f} / p99 "
                f"{res.latency_p99_ms:.0f} ms; lag events p99 {lag['events_p99']:.0f}; load {load}; "
                f"CPU of the stack's processes: {cpu_use}",
            )
        )
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_rows

    print_rows(run())
