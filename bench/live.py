"""Live updates (server-sent events): how soon a subscriber sees a vote, and what an idle stream costs.

(a) vote answered -> event on a subscriber: ``stories run`` (every real process) on a temp data
    dir; BENCH_LIVE_STORIES public poll stories, BENCH_LIVE_SUBSCRIBERS streams
    (``GET /api/v1/stories/{id}/live?access_token=``, one viewer each, spread evenly over the
    stories) opened from this process (aiohttp, its own thread and loop); then views and poll votes
    (half each, every vote by a new user, as ``bench.end_to_end``) offered at BENCH_LIVE_RATE
    commands/s (open loop, its own process) for BENCH_LIVE_S. Per vote and per subscriber of its
    story: the time from the command API's 2xx answer (``X-Stories-Position`` names the vote's log
    position; the log says which story it was) to the first ``event: story`` on that subscriber
    whose poll shows ``total_votes`` >= the vote's rank on that story (the story's votes in log
    order). Both times are CLOCK_MONOTONIC of the same machine. The baseline is the projection lag
    sampled in the same run (``LagSampler``, every 50 ms: how long ago the oldest event not yet in
    both read models was appended): the live path adds the notice, the settle and the re-read to it.
(b) idle streams: a fresh ``stories run``; the query API process's RSS (``/proc/<pid>/status``,
    the ``stories query-api`` child of the supervisor) and the p99 of BENCH_LIVE_REQUESTS
    sequential ``GET /api/v1/stories/{id}`` (keep-alive, one connection) with no streams open;
    then BENCH_LIVE_STREAMS streams (distinct viewers, over 20 public stories) opened from one
    aiohttp session (TCPConnector(limit=0)) until each received its first ``story`` event; the RSS
    and the same query p99 again while they stay open. Memory per stream = RSS growth / streams
    (the allocator keeps what it got, so this is an upper bound of what one stream holds).
    A few streams are opened and closed first, so the first use of the live code is not counted.

Knobs: BENCH_LIVE_RATE (300 commands/s), BENCH_LIVE_S (20), BENCH_LIVE_STORIES (4),
BENCH_LIVE_SUBSCRIBERS (20), BENCH_LIVE_STREAMS (2000), BENCH_LIVE_REQUESTS (300).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    SECRET,
    LagSampler,
    PositionReader,
    Row,
    Stack,
    loadavg,
    log,
    median,
    mint_tokens,
    percentile,
    run_paced,
    sequential_get,
)
from bench.read_side import create_poll_stories, lag_requests, write_to_visible

RATE = float(os.environ.get("BENCH_LIVE_RATE", "300"))
DURATION_S = float(os.environ.get("BENCH_LIVE_S", "20"))
STORIES = int(os.environ.get("BENCH_LIVE_STORIES", "4"))
SUBSCRIBERS = int(os.environ.get("BENCH_LIVE_SUBSCRIBERS", "20"))
STREAMS = int(os.environ.get("BENCH_LIVE_STREAMS", "2000"))
REQUESTS = int(os.environ.get("BENCH_LIVE_REQUESTS", "300"))
IDLE_STORIES = 20
OPEN_BATCH = 50  # streams opened concurrently (the query API answers 503 past ~100 concurrent Redis reads: redis-py 8's pool default)
FIRST_EVENT_S = 60.0  # how long a stream may take to get its first event
VOTE_GOAL_MS = 250.0
STREAM_GOAL_KIB = 50.0
QUERY_GOAL_RATIO = 1.5


# -- a small SSE client ---------------------------------------------------------------------------


class SSEParser:
    """Feeds lines (bytes, without the newline); returns (event, id, data) when a blank line ends one.
    Comment lines (``: keep-alive``) are counted, not returned."""

    def __init__(self) -> None:
        self.event, self.id, self.data = "message", None, []
        self.comments = 0

    def feed(self, line: bytes) -> tuple[str, str | None, str] | None:
        line = line.rstrip(b"\r\n")
        if not line:
            if not self.data and self.event == "message":
                return None
            out = (self.event, self.id, "\n".join(self.data))
            self.event, self.data = "message", []
            return out
        if line.startswith(b":"):
            self.comments += 1
            return None
        name, _, value = line.decode().partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        elif name == "id":
            self.id = value
        return None


class LiveClients:
    """Streams opened from one aiohttp session running in its own thread and event loop.

    ``on_event(stream, t, event, id, data)`` runs in that loop for every event (``t``: monotonic
    time the event's blank line arrived). ``first`` holds each stream's first ``story`` time."""

    def __init__(self, port: int, on_event: Callable[[int, float, str, str | None, str], None] | None = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.on_event = on_event
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-clients", daemon=True)
        self.thread.start()
        self.tasks: dict[int, asyncio.Task] = {}
        self.first: dict[int, float] = {}
        self.failures: dict[int, str] = {}
        self.ended: set[int] = set()
        self.comments = 0
        self._ready: dict[int, asyncio.Event] = {}
        self.session = self.call(self._session())

    def call(self, coro, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _session(self):
        import aiohttp

        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None),
        )

    async def _stream(self, idx: int, story_id: str, token: str) -> None:
        ready = self._ready[idx]
        try:
            async with self.session.get(
                f"{self.base}/api/v1/stories/{story_id}/live", params={"access_token": token}
            ) as response:
                if response.status != 200:
                    self.failures[idx] = f"status {response.status}: {(await response.read())[:200]!r}"
                    return
                parser = SSEParser()
                async for line in response.content:
                    got = parser.feed(line)
                    if got is None:
                        continue
                    t = time.monotonic()
                    event, event_id, data = got
                    if event == "story" and idx not in self.first:
                        self.first[idx] = t
                        ready.set()
                    elif event == "end":
                        self.ended.add(idx)
                    if self.on_event is not None:
                        self.on_event(idx, t, event, event_id, data)
                self.comments += parser.comments
                self.failures.setdefault(idx, "the server closed the stream")
        except asyncio.CancelledError:
            raise
        except Exception as error:  # reported in the row's note
            self.failures[idx] = f"{type(error).__name__}: {error}"
        finally:
            ready.set()

    async def _open(self, streams: list[tuple[int, str, str]], timeout: float) -> None:
        for idx, story_id, token in streams:
            self._ready[idx] = asyncio.Event()
            self.tasks[idx] = asyncio.create_task(self._stream(idx, story_id, token))
        waits = [self._ready[idx].wait() for idx, _, _ in streams]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), timeout)

    def open(
        self, streams: list[tuple[int, str, str]], batch: int = OPEN_BATCH, timeout: float = FIRST_EVENT_S
    ) -> None:
        """Open (index, story id, token) streams ``batch`` at a time; each batch until every stream in
        it has its first event (or failed, or ``timeout``)."""
        for i in range(0, len(streams), batch):
            self.call(self._open(streams[i : i + batch], timeout), timeout + 30)

    async def _close(self, indexes: list[int] | None) -> None:
        tasks = [t for i, t in self.tasks.items() if indexes is None or i in indexes]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        for i in list(self.tasks):
            if indexes is None or i in indexes:
                del self.tasks[i]

    def close_streams(self, indexes: list[int] | None = None) -> None:
        self.call(self._close(indexes), 60)

    def close(self) -> None:
        try:
            self.close_streams()
            self.call(self.session.close(), 30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)

    def __enter__(self) -> LiveClients:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- processes ------------------------------------------------------------------------------------


def query_api_pid(stack: Stack, timeout: float = 10.0) -> int:
    """The ``stories query-api`` child of the stack's supervisor (found through /proc)."""
    deadline = time.monotonic() + timeout
    while True:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid != stack.process.pid:
                    continue
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue
            if b"query-api" in argv:
                return int(entry.name)
        if time.monotonic() > deadline:
            raise RuntimeError(f"no query-api child of pid {stack.process.pid}")
        time.sleep(0.2)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def settled_rss(pid: int, wait_s: float = 3.0) -> int:
    """RSS after ``wait_s`` of quiet, the median of a few reads."""
    time.sleep(wait_s)
    reads = []
    for _ in range(5):
        reads.append(rss_kib(pid))
        time.sleep(0.2)
    return int(median(reads))


def raise_fd_limit(wanted: int) -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return f"fd limit {soft} (hard {hard})"


# -- (a) vote -> event ------------------------------------------------------------------------------


def total_votes(story: dict) -> int:
    for sticker in story.get("stickers") or []:
        poll = sticker.get("poll")
        if poll and "total_votes" in poll:
            return int(poll["total_votes"])
    return 0


def votes_in_log(event_store_url: str, stories: set[str]) -> dict[str, list[int]]:
    """Each story's PollVoted positions, in log order."""
    from commands.event_store import EventStore
    from domain.engagement import PollVoted

    store = EventStore(event_store_url)
    out: dict[str, list[int]] = {s: [] for s in stories}
    try:
        after, until = 0, store.head()
        while after < until:
            events, reached = store.read_batch(after, 5000, until)
            if reached == after:
                break
            for logged in events:
                e = logged.event
                if isinstance(e, PollVoted) and e.story_id in out:
                    out[e.story_id].append(logged.position)
            after = reached
    finally:
        store.close()
    return out


def vote_latencies(
    votes: dict[str, list[int]],
    answered: dict[int, float],
    seen: dict[int, list[tuple[float, int]]],
    story_of: dict[int, str],
) -> tuple[list[float], dict]:
    """Per (vote, subscriber of its story): first event showing total_votes >= the vote's rank,
    minus the vote's answer time. Also counts of votes without an answer time and of pairs never seen."""
    latencies: list[float] = []
    counts = {"votes": 0, "unanswered": 0, "never_seen": 0, "negative": 0}
    for sub, story in story_of.items():
        events = sorted(seen.get(sub, []))
        j = 0
        best = 0  # running max of total_votes: a story event only shows more votes than the one before
        for rank, position in enumerate(votes.get(story, []), start=1):
            while j < len(events) and max(best, events[j][1]) < rank:
                best = max(best, events[j][1])
                j += 1
            t_answer = answered.get(position)
            if t_answer is None:
                counts["unanswered"] += 1
                continue
            if j >= len(events):
                counts["never_seen"] += 1
                continue
            dt = events[j][0] - t_answer
            if dt < 0:
                counts["negative"] += 1
            latencies.append(dt)
    counts["votes"] = sum(len(v) for v in votes.values())
    return latencies, counts


def measure_vote_to_event(tmp: Path) -> list[Row]:
    with Stack(tmp / "a", name="stories-run-live-a") as stack:
        reader = PositionReader(stack.event_store_url, stack.mongo_url, stack.redis_url)
        try:
            stories = create_poll_stories(stack.command_port, STORIES)
            subs = [
                (i, stories[i % len(stories)], t)
                for i, t in enumerate(mint_tokens(SECRET, [f"live-sub-{i}" for i in range(SUBSCRIBERS)]))
            ]
            story_of = {i: s for i, s, _ in subs}
            seen: dict[int, list[tuple[float, int]]] = {i: [] for i in story_of}
            bad_data = [0]

            def on_event(idx: int, t: float, event: str, event_id: str | None, data: str) -> None:
                if event != "story":
                    return
                try:
                    seen[idx].append((t, total_votes(json.loads(data))))
                except (ValueError, TypeError, AttributeError):
                    bad_data[0] += 1

            reader.wait_caught_up(30)
            with LiveClients(stack.query_port, on_event) as clients:
                clients.open(subs)
                opened = len(clients.first)
                log(
                    f"(a) {opened}/{SUBSCRIBERS} subscribers on {len(stories)} poll stories"
                    + (f"; failures {dict(list(clients.failures.items())[:3])}" if clients.failures else "")
                )
                users = int(RATE * DURATION_S / 2) + 200
                tokens = mint_tokens(SECRET, [f"live-voter-{i}" for i in range(users)])
                requests = lag_requests(stories, tokens)
                load = loadavg()
                log(f"(a) offering {RATE:g} commands/s (views + poll votes) for {DURATION_S:g} s; load {load}")
                sampler = LagSampler(reader).start()
                t0 = time.monotonic()
                result = run_paced(stack.command_port, requests, RATE, DURATION_S, "live")
                t1 = time.monotonic()
                caught = reader.wait_caught_up(30)
                time.sleep(2.0)  # the last notices reach the subscribers
                sampler.stop()
                failures = dict(clients.failures)
            lag = sampler.lag(t0, t1)
            visible = write_to_visible(result.answers, sampler.samples)
            votes = votes_in_log(stack.event_store_url, set(stories))
            answered = {position: t for t, position in result.answers}
            latencies, counts = vote_latencies(votes, answered, seen, story_of)
        finally:
            reader.close()
    events = sum(len(v) for v in seen.values())
    ms = [x * 1000 for x in latencies]
    p50, p99, worst = percentile(ms, 50), percentile(ms, 99), max(ms) if ms else float("nan")
    log(
        f"  {result.ok_rps:,.0f} 2xx/s (statuses {result.statuses}, errors {result.errors}, late {result.late}); "
        f"lag p50 {lag['s_p50'] * 1000:.0f} ms p99 {lag['s_p99'] * 1000:.0f} ms; write->visible p99 "
        f"{percentile(visible, 99) * 1000:.0f} ms; vote->SSE p50 {p50:.0f} ms p99 {p99:.0f} ms max {worst:.0f} ms "
        f"over {len(ms):,} (vote, subscriber) pairs; {counts}; {events:,} story events; caught up {caught}"
    )
    setup = (
        f"`stories run`, {RATE:g}/s offered views + poll votes for {DURATION_S:g} s "
        f"({result.ok_rps:,.0f} 2xx/s answered, statuses {result.statuses}, {result.errors} errors, "
        f"{result.late} late; command p99 {result.latency_p99_ms:.0f} ms); {opened} subscribers on "
        f"{len(stories)} public poll stories; load average at start {load}"
    )
    rows = [
        Row(
            f"live (a): projection lag p99 under {RATE:g} commands/s (baseline)",
            lag["s_p99"] * 1000,
            "ms",
            goal=("<=", 1000),
            goal_on_value=True,
            note=f"{setup}; sampled every 50 ms ({lag['samples']} samples); lag p50 {lag['s_p50'] * 1000:.0f} ms; "
            f"events p99 {lag['events_p99']:.0f}; write answered -> visible in both read models p50 "
            f"{percentile(visible, 50) * 1000:.0f} / p99 {percentile(visible, 99) * 1000:.0f} ms "
            f"(50 ms resolution)",
        ),
        Row(
            f"live (a): vote answered -> SSE event on a subscriber p99 at {RATE:g} commands/s",
            p99,
            "ms",
            baseline=lag["s_p99"] * 1000,
            baseline_name="projection lag p99, same run",
            goal=("<=", VOTE_GOAL_MS),
            goal_on_value=True,
            note=f"per (vote, subscriber of its story) pair: {len(ms):,} pairs from {counts['votes']:,} votes "
            f"({counts['unanswered']} votes without a 2xx answer time, {counts['never_seen']} pairs never "
            f"seen, {counts['negative']} seen before the voter had its answer); p50 {p50:.0f} ms, max "
            f"{worst:.0f} ms; {events:,} story events received; stream failures "
            f"{len(failures)}{' ' + str(dict(list(failures.items())[:3])) if failures else ''}"
            f"{f'; {bad_data[0]} unparsable events' if bad_data[0] else ''}",
        ),
        Row(
            "live (a): vote answered -> SSE event p50",
            p50,
            "ms",
            baseline=percentile(visible, 50) * 1000,
            baseline_name="write answered -> visible in both read models p50, same run",
        ),
        Row(
            "live (a): write answered -> visible in both read models p99 (same run)",
            percentile(visible, 99) * 1000,
            "ms",
            note=f"{len(visible):,} answers (views and votes); every 50 ms sample of both read models' "
            "positions: the part of vote -> SSE event that is the projector's",
        ),
    ]
    return rows


# -- (b) idle streams -------------------------------------------------------------------------------


def measure_idle_streams(tmp: Path) -> list[Row]:
    limit = raise_fd_limit(STREAMS + 1024)  # before the stack starts: its processes inherit it
    with Stack(tmp / "b", name="stories-run-live-b") as stack:
        pid = query_api_pid(stack)
        stories = create_poll_stories(stack.command_port, IDLE_STORIES)
        reader = PositionReader(stack.event_store_url, stack.mongo_url, stack.redis_url)
        try:
            reader.wait_caught_up(30)
        finally:
            reader.close()
        token = mint_tokens(SECRET, ["live-reader"])[0]
        path = f"/api/v1/stories/{stories[0]}"
        tokens = mint_tokens(SECRET, [f"live-idle-{i}" for i in range(STREAMS)])
        streams = [(i, stories[i % len(stories)], t) for i, t in enumerate(tokens)]
        with LiveClients(stack.query_port) as clients:
            warm = [
                (STREAMS + i, stories[i % len(stories)], t)
                for i, t in enumerate(mint_tokens(SECRET, [f"live-warm-{i}" for i in range(20)]))
            ]
            clients.open(warm)
            clients.close_streams([i for i, _, _ in warm])
            sequential_get(stack.query_port, path, token, 100, warmup=10)  # warm the query path too
            before = settled_rss(pid)
            lat0, statuses0, _ = sequential_get(stack.query_port, path, token, REQUESTS, warmup=10)
            log(
                f"(b) query API pid {pid}: RSS {before / 1024:.1f} MiB; GET a story p99 "
                f"{percentile(lat0, 99) * 1000:.2f} ms with no streams; opening {STREAMS:,} streams ({limit})"
            )
            t0 = time.perf_counter()
            clients.open(streams)
            open_s = time.perf_counter() - t0
            opened = sum(1 for i, _, _ in streams if i in clients.first)
            failures = {i: f for i, f in clients.failures.items() if i < STREAMS}
            after = settled_rss(pid)
            lat1, statuses1, _ = sequential_get(stack.query_port, path, token, REQUESTS, warmup=10)
            still = sum(1 for i, _, _ in streams if i in clients.tasks and not clients.tasks[i].done())
            log(
                f"  {opened:,} streams had their first event in {open_s:.1f} s ({len(failures)} failed"
                f"{': ' + str(dict(list(failures.items())[:3])) if failures else ''}); RSS {after / 1024:.1f} MiB; "
                f"GET a story p99 {percentile(lat1, 99) * 1000:.2f} ms; {still:,} still open"
            )
    per_stream = (after - before) / opened if opened else float("nan")
    p0, p1 = percentile(lat0, 99) * 1000, percentile(lat1, 99) * 1000
    return [
        Row(
            f"live (b): memory per idle stream ({opened:,} streams, one query API process)",
            per_stream,
            "KiB",
            goal=("<=", STREAM_GOAL_KIB),
            goal_on_value=True,
            note=f"query API RSS {before / 1024:.1f} MiB with no streams -> {after / 1024:.1f} MiB with {opened:,} "
            f"open (each had its first `story` event; {len(failures)} failed; opened {OPEN_BATCH} at a time "
            f"in {open_s:.1f} s; {still:,} still open after the query run); {IDLE_STORIES} public stories, "
            f"one viewer per stream",
        ),
        Row(
            f"live (b): GET a story p99 with {opened:,} streams open",
            p1,
            "ms",
            baseline=p0,
            baseline_name="same, no streams open",
            goal=("<=", QUERY_GOAL_RATIO),
            note=f"{REQUESTS} sequential GET /api/v1/stories/{{id}} on one keep-alive connection, same process; "
            f"p50 {median(lat1) * 1000:.2f} ms vs {median(lat0) * 1000:.2f} ms; statuses {statuses1} vs {statuses0}",
        ),
    ]


def run() -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="stories-bench-live-") as tmp:
        rows += measure_vote_to_event(Path(tmp))
    with tempfile.TemporaryDirectory(prefix="stories-bench-live-") as tmp:
        rows += measure_idle_streams(Path(tmp))
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_rows

    print_rows(run())
