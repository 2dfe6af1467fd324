"""Zero-downtime rebuild: queries answered while ``stories replay --into NAME`` builds a new
generation and the query API switches to it, under write load.

``stories run`` (every process, embedded SecantusDB + Valkey) on a temp data dir; views and poll
votes are offered at BENCH_SWITCH_RATE/s (open loop) for the whole run; one client reads the
story's page and the feed in a loop (one request at a time) before, during and after the
rebuild. Counted: answers, 5xx and refused connections, answers served at a lower
``X-Stories-Position`` than the one before them (the contract: never), and the read latency
before the rebuild and while it runs.

Knobs: BENCH_SWITCH_RATE (300), BENCH_SWITCH_WARMUP_S (20: history to rebuild).
"""

from __future__ import annotations

import http.client
import itertools
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.common import SECRET, STORIES_BIN, Row, Stack, log, mint_tokens, percentile, run_paced, stories_env
from bench.read_side import create_poll_stories, lag_requests

RATE = float(os.environ.get("BENCH_SWITCH_RATE", "300"))
WARMUP_S = float(os.environ.get("BENCH_SWITCH_WARMUP_S", "20"))
AFTER_S = 6.0  # reading on after the switch: the projector and the query API move within a second


class Reader:
    """One client reading in a loop: (time, status, served position, seconds) per answer."""

    def __init__(self, port: int, token: str, paths: list[str]) -> None:
        self.port, self.token, self.paths = port, token, paths
        self.answers: list[tuple[float, int, int, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)  # keep-alive, as a client would
        i = 0
        while not self.stop.is_set():
            path = self.paths[i % len(self.paths)]
            i += 1
            t0 = time.monotonic()
            try:
                conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
                response = conn.getresponse()
                response.read()
                status, position = response.status, int(response.headers.get("X-Stories-Position", -1))
            except (OSError, http.client.HTTPException):  # a refused or dropped connection is downtime too
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                status, position = 599, -1
            self.answers.append((t0, status, position, time.monotonic() - t0))
            time.sleep(0.005)
        conn.close()


def run() -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="stories-bench-switch-") as tmp, Stack(Path(tmp)) as stack:
        stories = create_poll_stories(stack.command_port, 8)
        duration = WARMUP_S + 60.0  # the load outlasts the rebuild and the switch
        tokens = mint_tokens(SECRET, [f"switch-{i}" for i in range(int(RATE * duration / 2) + 100)])
        requests = lag_requests(stories, tokens)
        load = threading.Thread(
            target=run_paced, args=(stack.command_port, requests, RATE, duration, "switch"), daemon=True
        )
        load.start()
        reader = Reader(
            stack.query_port,
            mint_tokens(SECRET, ["switch-reader"])[0],
            [f"/api/v1/stories/{stories[0]}", "/api/v1/stories/feed"],
        )
        reader.thread.start()
        log(f"rebuild switch: {RATE:g}/s offered; {WARMUP_S:g} s of history before `stories replay --into b`")
        time.sleep(WARMUP_S)
        started = time.monotonic()
        replay = subprocess.run(
            [str(STORIES_BIN), "replay", "--into", "b"],
            env=stories_env(Path(tmp)),
            cwd=tmp,
            capture_output=True,
            timeout=600,
        )
        switched = time.monotonic()
        if replay.returncode != 0:
            raise RuntimeError(f"replay --into failed: {replay.stderr.decode()[-2000:]}")
        log(f"  replay --into took {switched - started:.1f} s: {replay.stdout.decode().strip()[-300:]}")
        time.sleep(AFTER_S)
        reader.stop.set()
        reader.thread.join(timeout=10)
        load.join(timeout=duration + 60)

    answers = reader.answers
    failed = [a for a in answers if a[1] >= 500]
    back = [(a, b) for a, b in itertools.pairwise(answers) if b[2] < a[2]]
    before = [a[3] for a in answers if a[0] < started]
    during = [a[3] for a in answers if started <= a[0] <= switched + AFTER_S]
    note = (
        f"`stories run`, {RATE:g} views + poll votes/s offered throughout; one reader, one request at a time, "
        f"the story and the feed; replay --into took {switched - started:.1f} s; {len(during):,} answers from "
        f"its start to {AFTER_S:g} s after the switch; positions {answers[0][2]} .. {answers[-1][2]}"
    )
    return [
        Row(
            "zero-downtime rebuild: 5xx or refused answers while it built and switched",
            len(failed),
            "answers",
            goal=("<=", 0),
            note=note,
        ),
        Row(
            "zero-downtime rebuild: answers older than the one before (position went back)",
            len(back),
            "answers",
            goal=("<=", 0),
        ),
        Row(
            "zero-downtime rebuild: read latency p99 during the rebuild and switch",
            percentile(during, 99) * 1000,
            "ms",
            baseline=percentile(before, 99) * 1000,
            baseline_name="p99 before it",
        ),
    ]


if __name__ == "__main__":
    from bench.__main__ import print_rows

    print_rows(run())
