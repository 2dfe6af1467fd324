"""Dependencies down under load: with every process running and commands flowing, stop the
MongoDB server (SIGTERM the test's own SecantusDB), later restart it on the same port and storage;
then the same with Redis (the test's own Valkey, never the machine's service).

While a store is down:
* the query API answers every endpoint within ~3 s, never with a 5xx other than 503; an endpoint
  that needs the missing store answers 503 with Retry-After in the contract's error shape;
* the command API keeps accepting commands (201/202/200), nothing else changes for it;
* the projector (and the relay, and the expirer) keep running and wait.
When it is back, every follower of the log catches up by itself, the query API answers 200 again,
and nothing is lost: the counters equal the accepted commands and the broker carries every event.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid

import aiohttp
import pytest

from tests.system.conftest import (
    Load,
    OwnedServer,
    Stack,
    assert_counts_match,
    assert_log_matches,
    assert_query_api_counts,
    assert_subscriber_saw_everything_once,
    launch_stack,
    mongo_ready,
    redis_ready,
    teardown_stack,
)

pytestmark = pytest.mark.timeout(180)

OUTAGE_S = 5.0
ANSWER_WITHIN_S = 3.5  # "within ~3 s": the stores' 2 s connect / selection timeouts plus slack
RECOVER_WITHIN_S = 30.0
# Endpoints that cannot answer without the store (everything else may answer 200 from the other).
# Redis keeps the graph and the live window only: every endpoint but the feed reads MongoDB. The
# owner's own live stories (alone, in their list, in their highlight) carry Redis state (what
# they have seen and answered).
NEEDS = {
    "mongodb": (
        "/api/v1/stories/{story_id}",
        "/api/v1/viewers/story/{story_id}/insights",
        "/api/v1/stories/user/{user_id}",
        "/api/v1/highlights/{highlight_id}",
        "/api/v1/stories/archive",
        "/api/v1/highlights/user/{user_id}",
        "/api/v1/viewers/story/{story_id}",
        "/api/v1/viewers/story/{story_id}/answers",
        "/api/v1/viewers/user/insights",
        "/api/v1/close-friends/",
        "/api/v1/close-friends",
    ),
    "redis": (
        "/api/v1/stories/feed",
        "/api/v1/stories/{story_id}",
        "/api/v1/stories/user/{user_id}",
        "/api/v1/highlights/{highlight_id}",
    ),
}


async def query_paths(stack: Stack, story: str, owner: str, highlight: str) -> list[tuple[str, str]]:
    """(template, concrete path) of every GET of the query API, from its own /openapi.json."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{stack.side.query_port}/openapi.json") as resp,
    ):
        document = await resp.json()
    values = {"story_id": story, "user_id": owner, "highlight_id": highlight}
    out = []
    for template, ops in document["paths"].items():
        assert set(ops) == {"get"}, template
        if template.endswith("/live"):
            continue  # a stream stays open while the stores are up (tests/integration/test_live_updates.py)
        path = template
        for name, value in values.items():
            path = path.replace("{" + name + "}", value)
        assert "{" not in path, template
        out.append((template, path))
    return out


async def probe(
    stack: Stack, paths: list[tuple[str, str]], owner: str, seconds: float, token: str
) -> list[tuple[str, int, float, dict, bytes]]:
    """Call every query endpoint over and over for ``seconds``: (template, status, elapsed, headers, body)."""
    answers = []
    deadline = time.monotonic() + seconds
    base = f"http://127.0.0.1:{stack.side.query_port}"
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < deadline:

            async def one(template: str, path: str):
                started = time.monotonic()
                try:
                    async with session.get(base + path, headers={"Authorization": f"Bearer {token}"}) as resp:
                        raw = await resp.read()
                        return template, resp.status, time.monotonic() - started, dict(resp.headers), raw
                except TimeoutError:
                    return template, -1, time.monotonic() - started, {}, b"client timeout"

            answers += await asyncio.gather(*(one(t, p) for t, p in paths))
            await asyncio.sleep(0.2)
    return answers


def check_outage_answers(answers, store: str) -> None:
    import json

    assert answers
    slow = [(t, s, round(e, 2)) for t, s, e, _h, _b in answers if e > ANSWER_WITHIN_S]
    assert not slow, f"{len(slow)} of {len(answers)} answers took over {ANSWER_WITHIN_S}s: {slow[:10]}"
    bad = [(t, s, b[:200]) for t, s, _e, _h, b in answers if s not in (200, 503)]
    assert not bad, f"answers other than 200/503 while {store} is down: {bad[:10]}"
    for template, status, _elapsed, headers, raw in answers:
        if status == 503:
            assert headers.get("Retry-After"), (template, headers)
            assert headers.get("Content-Type", "").startswith("application/json"), (template, headers)
            body = json.loads(raw)
            assert set(body) == {"error"} and isinstance(body["error"]["code"], str), (template, body)
    for template in NEEDS[store]:
        statuses = {s for t, s, _e, _h, _b in answers if t == template}
        assert statuses == {503}, f"{template} answered {statuses} while {store} was down"


async def wait_query_healthy(stack: Stack, paths, owner: str, token: str) -> None:
    deadline = time.monotonic() + RECOVER_WITHIN_S
    last = None
    while time.monotonic() < deadline:
        answers = await probe(stack, paths, owner, 0.01, token)
        last = sorted({(t, s) for t, s, *_ in answers if s != 200})
        if not last:
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"query API not healthy again after {RECOVER_WITHIN_S}s: {last}")


async def check_health(stack: Stack, down: str | None) -> None:
    """/health is liveness (always 200); the query API's /ready names the store that is down."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for port in (stack.side.command_port, stack.side.query_port):
            async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                assert resp.status == 200
        async with session.get(f"http://127.0.0.1:{stack.side.command_port}/ready") as resp:
            assert resp.status == 200, await resp.text()  # the command API needs only the log
        started = time.monotonic()
        async with session.get(f"http://127.0.0.1:{stack.side.query_port}/ready") as resp:
            body = await resp.json()
            assert time.monotonic() - started < ANSWER_WITHIN_S
            if down is None:
                assert resp.status == 200, body
            else:
                assert resp.status == 503 and resp.headers.get("Retry-After"), body
                assert set(body["error"]["details"]) == {down}, body


async def outage(
    stack: Stack, server: OwnedServer, store: str, load: Load, paths, owner: str, token: str, ready, report: list[str]
) -> None:
    accepted_before = sum(load.accepted.values())
    server.stop()  # SIGTERM
    down_at = time.monotonic()
    answers = await probe(stack, paths, owner, OUTAGE_S, token)
    await check_health(stack, down=store)
    accepted_during = sum(load.accepted.values()) - accepted_before
    stack.check_alive()  # nobody died of it
    report.append(
        f"{store} down {time.monotonic() - down_at:.1f}s: {len(answers)} query answers "
        f"(max {max(a[2] for a in answers):.2f}s), {accepted_during} commands accepted meanwhile"
    )
    check_outage_answers(answers, store)
    assert accepted_during > 0, "the command API stopped accepting commands"
    await asyncio.to_thread(server.start_again, ready)
    started = time.monotonic()
    await asyncio.to_thread(stack.wait_caught_up)
    await wait_query_healthy(stack, paths, owner, token)
    await check_health(stack, down=None)
    report.append(f"{store} back: caught up and query API healthy in {time.monotonic() - started:.1f}s")


async def test_mongodb_then_redis_down_under_load(tmp_path, own_secantus, own_valkey):
    seed = int(os.environ.get("STORIES_CHAOS_SEED", random.randrange(1 << 30)))
    print(f"\nseed {seed}")
    stack = launch_stack(tmp_path / "stack", own_secantus.url, own_valkey.url)
    tag = uuid.uuid4().hex[:8]
    report: list[str] = []
    stop = asyncio.Event()
    try:
        users = [f"user{i}-{tag}" for i in range(12)]
        load = Load(stack, users, seed)
        running = asyncio.create_task(load.run(workers=4, pause_s=0.04, stop=stop))
        try:
            while len(load.highlight_ids) < 1 and not running.done():  # warm up: something to read
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
            # Read as an owner, of their own story and highlight: every endpoint must answer 200
            # when the stores are up, whatever the random privacy settings.
            highlight, owner = load.highlight_ids[0]
            story = next(s for s, o in load.stories if o == owner)
            token = stack.side.token(owner)
            await asyncio.to_thread(stack.wait_caught_up)
            paths = await query_paths(stack, story, owner, highlight)
            await wait_query_healthy(stack, paths, owner, token)

            await outage(
                stack, own_secantus, "mongodb", load, paths, owner, token, mongo_ready(own_secantus.url), report
            )
            await outage(stack, own_valkey, "redis", load, paths, owner, token, redis_ready(own_valkey.url), report)
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await running
        print("\n".join(report))
        print(load.summary())
        assert not load.problems, load.problems[:20]

        stack.wait_caught_up()
        stack.check_alive()
        logged = stack.export()
        assert_log_matches(logged, load)
        assert_counts_match(stack, load)
        assert_query_api_counts(stack, load)
        print(f"broker: {assert_subscriber_saw_everything_once(stack, logged)}; log: {len(logged)} events")
    finally:
        stop.set()
        teardown_stack(stack)
