"""Write-side benchmark: the command API on the embedded default (SQLite event store).

One run, real processes, loopback only:

1. ceiling: requests/s of a bare aiohttp JSON endpoint (its own process, uvloop), same load generator;
2. views: requests/s of ``POST /api/v1/stories/{id}/view`` on ``stories command-api`` with
   10,000 distinct users' HS256 tokens over several public stories;
3. views / ceiling (goal >= 0.5);
4. hot vs fresh: one story is seeded with 100,000 views through the write path (the application
   service and the group committer, in-process, before the server starts); then sequential
   (one request at a time) views and poll votes by new users on the hot and on a fresh story,
   interleaved; hot/fresh p50 (goal <= 1.1);
5. views on the production event store (PostgreSQL, a fresh database), against SQLite;
6. views with navigation mixed in, one ``POST .../navigate`` per view, against views alone (goal
   >= 0.9: a navigation must not cost a write-side lookup).

Knobs (environment): BENCH_DURATION_S (10), BENCH_CONNECTIONS (64), BENCH_USERS (10000),
BENCH_HOT_VIEWS (100000), BENCH_LATENCY_ROUNDS (1000), BENCH_LOADGEN=python (skip wrk).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    PYTHON,
    CpuMeter,
    FreshPostgres,
    LoadResult,
    LoadSpec,
    Process,
    Row,
    free_port,
    generator_name,
    http_request,
    log,
    median,
    mint_tokens,
    percentile,
    run_load,
    scrape_metrics,
    seeding_application,
)

SECRET = "bench-secret-not-for-production-use-0123456789"
STORIES_BIN = Path(PYTHON).parent / "stories"

DURATION_S = float(os.environ.get("BENCH_DURATION_S", "10"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
USERS = int(os.environ.get("BENCH_USERS", "10000"))
LOAD_STORIES = 8
HOT_VIEWS = int(os.environ.get("BENCH_HOT_VIEWS", "100000"))
LATENCY_ROUNDS = int(os.environ.get("BENCH_LATENCY_ROUNDS", "1000"))
WARMUP_ROUNDS = 100
SEED_TIME_LIMIT_S = 600.0
SEED_CHUNK = 1024  # commands in flight at once while seeding (the committer batches up to 256)

POLL_STORY = {
    "story_type": "text",
    "text_content": "which one?",
    "privacy": "public",
    "stickers": [{"sticker_type": "poll", "poll": {"question": "pick one", "options": [{"text": "a"}, {"text": "b"}]}}],
}
PLAIN_STORY = {"story_type": "text", "text_content": "hello", "privacy": "public"}


def server_env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORIES_")}
    env.update(
        STORIES_DATA_DIR=str(data_dir),
        STORIES_JWT_SECRET=SECRET,
        STORIES_RATE_LIMIT_PER_S="0",
        STORIES_HOST="127.0.0.1",
        STORIES_COMMAND_PORT=str(port),
        STORIES_PLATFORM="vignette",
    )
    return env


# -- seeding through the write path ---------------------------------------------------------


@dataclass
class Seeded:
    hot: str
    fresh: str
    load: list[str]
    hot_views: int
    seed_s: float


def seed(data_dir: Path) -> Seeded:
    """Create the stories and give the hot one HOT_VIEWS views, all through the application service."""
    from commands import models
    from commands import use_cases as uc

    store, committer, app = seeding_application(data_dir)

    async def create(owner: str, body: dict) -> str:
        result, _ = await app.execute(uc.CreateStory(owner, models.CreateStory.model_validate(body)))
        assert isinstance(result, uc.StoryPosted), result
        return str(result.story_id)

    async def go() -> Seeded:
        hot = await create("owner-hot", POLL_STORY)
        fresh = await create("owner-fresh", POLL_STORY)
        load = [await create(f"owner-{i}", PLAIN_STORY) for i in range(LOAD_STORIES)]
        started = time.perf_counter()
        done = 0
        while done < HOT_VIEWS and time.perf_counter() - started < SEED_TIME_LIMIT_S:
            n = min(SEED_CHUNK, HOT_VIEWS - done)
            users = [f"seed-{done + k}" for k in range(n)]
            answers = await asyncio.gather(*(app.execute(uc.ViewStory(u, hot)) for u in users))
            bad = [a for a, _ in answers if not isinstance(a, uc.Counted)]
            if bad:
                raise RuntimeError(f"seeding views failed: {bad[:3]}")
            done += n
            if done % (SEED_CHUNK * 20) < SEED_CHUNK:
                log(f"  seeded {done:,} views on the hot story ({done / (time.perf_counter() - started):,.0f}/s)")
        return Seeded(hot, fresh, load, done, time.perf_counter() - started)

    try:
        return asyncio.run(go())
    finally:
        committer.close()
        store.close()


# -- phases ---------------------------------------------------------------------------------


def start_command_api(data_dir: Path, event_store_url: str | None = None) -> tuple[Process, int]:
    port = free_port()
    env = server_env(data_dir, port)
    if event_store_url:
        env["STORIES_EVENT_STORE_URL"] = event_store_url
    proc = Process("command-api", [str(STORIES_BIN), "command-api"], env=env)
    proc.wait_http(port)
    return proc, port


def measure_views_on_postgres(data_dir: Path, tokens: list[str]) -> LoadResult:
    """The views phase again, on a command API whose event store is a fresh PostgreSQL database."""
    with FreshPostgres("views") as pg:
        server, port = start_command_api(data_dir / "pg", pg.url)
        try:
            stories = []
            for i in range(LOAD_STORIES):
                owner = mint_tokens(SECRET, [f"owner-{i}"])[0]
                status, body = http_request("POST", port, "/api/v1/stories", body=PLAIN_STORY, token=owner)
                if status != 201:
                    raise RuntimeError(f"creating a story on PostgreSQL answered {status}: {body[:300]!r}")
                stories.append(json.loads(body)["story_id"])
            requests = view_requests(stories, tokens)
            run_load(LoadSpec(port, requests[-5000:], duration_s=2, connections=CONNECTIONS), "pg-views-warmup")
            return run_load(LoadSpec(port, requests, duration_s=DURATION_S, connections=CONNECTIONS), "pg-views")
        finally:
            server.stop()


def measure_ceiling() -> tuple[LoadResult, CpuMeter]:
    port = free_port()
    with Process("ceiling-server", [PYTHON, "-m", "bench.common", "ceiling-server", "--port", str(port)]) as proc:
        proc.wait_http(port)
        requests = [(f"/api/v1/stories/{i}/view", None) for i in range(LOAD_STORIES)]
        run_load(LoadSpec(port, requests, duration_s=2, connections=CONNECTIONS), "ceiling-warmup")
        cpu = CpuMeter(proc.pid).start()
        result = run_load(LoadSpec(port, requests, duration_s=DURATION_S, connections=CONNECTIONS), "ceiling")
        return result, cpu.stop()


NAVIGATIONS = ("tap_forward", "tap_back", "exit", "swipe_forward")


def view_and_navigate_requests(stories: list[str], tokens: list[str]) -> list[tuple]:
    """Each view followed by that viewer's navigation away from the story (one per view)."""
    out: list[tuple] = []
    for k, (path, token) in enumerate(view_requests(stories, tokens)):
        out.append((path, token))
        out.append((path.replace("/view", "/navigate"), token, {"action": NAVIGATIONS[k % len(NAVIGATIONS)]}))
    return out


def view_requests(stories: list[str], tokens: list[str]) -> list[tuple[str, str | None]]:
    """Each user views every load story once per pass; consecutive requests go to different users and stories."""
    out = []
    for r in range(len(stories)):
        for k, token in enumerate(tokens):
            out.append((f"/api/v1/stories/{stories[(k + r) % len(stories)]}/view", token))
    return out


class Client:
    """One keep-alive connection, one request at a time (for latency)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def post(self, path: str, token: str, body: bytes | None = None) -> tuple[int, float]:
        headers = {"Authorization": f"Bearer {token}", "Content-Length": str(len(body or b""))}
        if body is not None:
            headers["Content-Type"] = "application/json"
        t0 = time.perf_counter()
        self.conn.request("POST", path, body=body, headers=headers)
        response = self.conn.getresponse()
        response.read()
        return response.status, time.perf_counter() - t0

    def close(self) -> None:
        self.conn.close()


@dataclass
class Latencies:
    samples: dict[str, list[float]]
    failures: dict[str, int]

    def p(self, key: str, q: float) -> float:
        return (median(self.samples[key]) if q == 50 else percentile(self.samples[key], q)) * 1000


def measure_hot_fresh(port: int, hot: str, fresh: str) -> Latencies:
    """Sequential views and votes by new users; hot and fresh interleaved, order alternating per round."""
    rounds = WARMUP_ROUNDS + LATENCY_ROUNDS
    tokens = mint_tokens(SECRET, [f"lat-{i}" for i in range(rounds)])
    keys = [f"{kind}_{which}" for kind in ("view", "vote") for which in ("hot", "fresh")]
    samples: dict[str, list[float]] = {k: [] for k in keys}
    failures = dict.fromkeys(keys, 0)
    ids = {"hot": hot, "fresh": fresh}
    client = Client(port)
    deadline = time.monotonic() + 300
    try:
        for i, token in enumerate(tokens):
            if time.monotonic() > deadline:
                log("latency phase hit its time limit; reporting what it has")
                break
            order = ("hot", "fresh") if i % 2 == 0 else ("fresh", "hot")
            vote = b'{"sticker_index": 0, "option_index": %d}' % (i % 2)
            for kind in ("view", "vote"):
                for which in order:
                    if kind == "view":
                        status, dt = client.post(f"/api/v1/stories/{ids[which]}/view", token)
                        ok = status == 202
                    else:
                        status, dt = client.post(f"/api/v1/stories/{ids[which]}/interact", token, vote)
                        ok = status == 200
                    key = f"{kind}_{which}"
                    if not ok:
                        failures[key] += 1
                    elif i >= WARMUP_ROUNDS:
                        samples[key].append(dt)
    finally:
        client.close()
    return Latencies(samples, failures)


# -- the benchmark ----------------------------------------------------------------------------


def run() -> list[Row]:
    gen = generator_name()
    if gen != "wrk":
        log(
            "wrk not found (apt-get install -y wrk): falling back to the asyncio load generator "
            "(a Python client on a 2-core box caps both figures; the ratio stays comparable)"
        )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="stories-bench-") as tmp:
        data_dir = Path(tmp)
        log(f"seeding {HOT_VIEWS:,} views on the hot story through StoriesApplication + GroupCommitter ({data_dir})")
        seeded = seed(data_dir)
        log(f"seeded in {seeded.seed_s:.1f} s")

        log(f"ceiling: bare aiohttp JSON endpoint, {gen}, {CONNECTIONS} connections, {DURATION_S:g} s")
        ceiling, ceiling_cpu = measure_ceiling()
        log(f"  {ceiling.rps:,.0f} req/s")

        log(f"minting {USERS:,} HS256 tokens")
        tokens = mint_tokens(SECRET, [f"user-{i}" for i in range(USERS)])
        server, port = start_command_api(data_dir)
        try:
            status, body = http_request("POST", port, f"/api/v1/stories/{seeded.load[0]}/view", token=tokens[0])
            if status != 202:
                raise RuntimeError(f"a view answered {status}: {body[:300]!r}")

            log(f"hot vs fresh: {LATENCY_ROUNDS} rounds (+{WARMUP_ROUNDS} warm-up) of sequential views and votes")
            lat = measure_hot_fresh(port, seeded.hot, seeded.fresh)
            if any(lat.failures.values()):
                log(f"  unexpected answers in the latency phase: {lat.failures}")

            requests = view_requests(seeded.load, tokens)
            log(
                f"views: {len(requests):,} (user, story) requests rotating, {gen}, {CONNECTIONS} connections, {DURATION_S:g} s"
            )
            run_load(LoadSpec(port, requests[-5000:], duration_s=2, connections=CONNECTIONS), "views-warmup")
            before = scrape_metrics(port)
            views_cpu = CpuMeter(server.pid).start()
            views = run_load(LoadSpec(port, requests, duration_s=DURATION_S, connections=CONNECTIONS), "views")
            views_cpu.stop()
            after = scrape_metrics(port)
            log(f"  {views.ok_rps:,.0f} 2xx req/s ({views.non_2xx} non-2xx, {views.socket_errors} socket errors)")

            mixed_requests = view_and_navigate_requests(seeded.load, tokens)
            log(f"views + navigation (one per view): {gen}, {CONNECTIONS} connections, {DURATION_S:g} s")
            mixed = run_load(LoadSpec(port, mixed_requests, duration_s=DURATION_S, connections=CONNECTIONS), "mixed")
            log(f"  {mixed.ok_rps:,.0f} 2xx req/s ({mixed.non_2xx} non-2xx, {mixed.socket_errors} socket errors)")
        finally:
            server.stop()
        log(
            f"views on the PostgreSQL event store (a fresh database), {gen}, {CONNECTIONS} connections, {DURATION_S:g} s"
        )
        pg_views = measure_views_on_postgres(data_dir, tokens)
        log(f"  {pg_views.ok_rps:,.0f} 2xx req/s ({pg_views.non_2xx} non-2xx, {pg_views.socket_errors} socket errors)")

    batches = after.get("stories_group_commit_batches", 0) - before.get("stories_group_commit_batches", 0)
    commands = after.get("stories_group_commit_commands", 0) - before.get("stories_group_commit_commands", 0)
    avg_batch = commands / batches if batches else float("nan")

    rows.append(
        Row(
            f"ceiling: bare aiohttp POST JSON ({ceiling.generator}, c={CONNECTIONS})",
            ceiling.rps,
            "req/s",
            note=f"server used {ceiling_cpu.process_cores:.2f} cores; machine {ceiling_cpu.machine_busy:.0%} busy",
        )
    )
    rows.append(
        Row(
            f"views: POST /stories/{{id}}/view, {USERS:,} users",
            views.ok_rps,
            "req/s",
            baseline=ceiling.rps,
            baseline_name="ceiling",
            goal=(">=", 0.5),
        )
    )
    rows.append(
        Row(
            f"views on the PostgreSQL event store: POST /stories/{{id}}/view, {USERS:,} users",
            pg_views.ok_rps,
            "req/s",
            baseline=views.ok_rps,
            baseline_name="views on SQLite",
            note=f"production log (PostgreSQL 5432, a fresh database); {pg_views.non_2xx} non-2xx, "
            f"{pg_views.socket_errors} socket errors; latency p50 {pg_views.latency_p50_ms:.1f} / p99 "
            f"{pg_views.latency_p99_ms:.1f} ms",
        )
    )
    rows.append(
        Row(
            "views + navigation (one per view): commands/s",
            mixed.ok_rps,
            "req/s",
            baseline=views.ok_rps,
            baseline_name="views alone",
            goal=(">=", 0.9),
            note=f"{mixed.non_2xx} non-2xx, {mixed.socket_errors} socket errors",
        )
    )
    rows.append(
        Row(
            "views: command API CPU during load",
            views_cpu.process_cores,
            "cores",
            baseline=ceiling_cpu.process_cores,
            baseline_name="ceiling server",
            note=f"machine {views_cpu.machine_busy:.0%} busy (all processes, incl. the load generator)",
        )
    )
    rows.append(
        Row(
            "views: CPU per view",
            views_cpu.process_cores / views.ok_rps * 1e6 if views.ok_rps else float("nan"),
            "µs",
            baseline=ceiling_cpu.process_cores / ceiling.rps * 1e6 if ceiling.rps else None,
            baseline_name="ceiling per request",
        )
    )
    rows.append(Row("views: non-2xx + socket errors", views.non_2xx + views.socket_errors, "requests"))
    rows.append(
        Row(
            "views under load: latency p50",
            views.latency_p50_ms,
            "ms",
            baseline=ceiling.latency_p50_ms,
            baseline_name="ceiling p50",
        )
    )
    rows.append(
        Row(
            "views under load: latency p99",
            views.latency_p99_ms,
            "ms",
            baseline=ceiling.latency_p99_ms,
            baseline_name="ceiling p99",
        )
    )
    rows.append(
        Row(
            "views under load: group commit avg batch",
            avg_batch,
            "commands/batch",
            note=f"{commands:.0f} commands in {batches:.0f} batches",
        )
    )
    for kind, label in (("view", "view"), ("vote", "poll vote")):
        for q in (50, 99):
            goal = ("<=", 1.1) if q == 50 else None
            rows.append(
                Row(
                    f"{label} on hot story ({seeded.hot_views // 1000}k views): sequential p{q}",
                    lat.p(f"{kind}_hot", q),
                    "ms",
                    baseline=lat.p(f"{kind}_fresh", q),
                    baseline_name=f"fresh p{q}",
                    goal=goal,
                )
            )
    rows.append(Row("seeding hot story via write path (in-process)", seeded.hot_views / seeded.seed_s, "views/s"))
    return rows


if __name__ == "__main__":
    from bench.__main__ import print_rows

    print_rows(run())
