"""Chaos: a mixed load through the command API for ~20 s while the projector and the relay are
SIGKILLed at random moments (at least 3 times each) and restarted. Afterwards, once every follower
of the log has caught up with its head:

* the live read models equal a fresh ``stories replay`` of the same log (MongoDB and Redis),
* every counter equals the number of commands the API accepted (views, poll votes, replies, ...),
* a subscriber of ``<broker_prefix>.events`` saw every event exactly once after dedupe on
  ``event_id``, in position order, and nothing else.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid

import pytest

from tests.system.conftest import (
    Load, Stack, assert_counts_match, assert_log_matches, assert_subscriber_saw_everything_once, launch_stack,
    teardown_stack,
)

pytestmark = pytest.mark.timeout(150)

LOAD_S = float(os.environ.get("STORIES_CHAOS_SECONDS", "20"))
KILLS_EACH = 4


async def chaos(stack: Stack, seconds: float, rng: random.Random, log: list[str]) -> None:
    """SIGKILL the projector and the relay at random moments, restart each shortly after."""
    started = time.monotonic()
    plan = sorted(
        (rng.uniform(0.5, seconds - 1.5), name) for name in ("projector", "relay") for _ in range(KILLS_EACH)
    )
    for at, name in plan:
        await asyncio.sleep(max(0.0, at - (time.monotonic() - started)))
        if not stack.alive(name):  # still down from a kill a moment ago: bring it back first
            stack.start(name)
            await asyncio.sleep(rng.uniform(0.3, 1.0))
        stack.kill(name)
        log.append(f"{time.monotonic() - started:5.1f}s kill {name}")
        await asyncio.sleep(rng.uniform(0.0, 0.8))
        stack.start(name)
        log.append(f"{time.monotonic() - started:5.1f}s start {name}")


async def test_kill_projector_and_relay_under_load(tmp_path, own_secantus, redis_url):
    seed = int(os.environ.get("STORIES_CHAOS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"\nchaos seed {seed} (STORIES_CHAOS_SEED={seed} repeats the kill schedule and the load)")
    stack = launch_stack(tmp_path / "stack", own_secantus.url, redis_url)
    tag = uuid.uuid4().hex[:8]
    replay_db, replay_prefix = f"replay_{tag}", f"stories-sys-replay:{tag}:"
    try:
        users = [f"user{i}-{tag}" for i in range(20)]
        load = Load(stack, users, seed)
        events: list[str] = []
        await asyncio.gather(load.run(LOAD_S, workers=12), chaos(stack, LOAD_S, rng, events))
        print("\n".join(events))
        print(load.summary())
        assert not load.problems, load.problems[:20]
        assert stack.kills["projector"] >= 3 and stack.kills["relay"] >= 3, stack.kills
        stack.check_alive()

        t0 = time.monotonic()
        reached = stack.wait_caught_up()
        print(f"caught up in {time.monotonic() - t0:.1f}s at {reached}")
        stack.check_alive()

        logged = stack.export()
        assert_log_matches(logged, load)
        assert_counts_match(stack, load)

        t0 = time.monotonic()
        print(stack.replay(replay_db, replay_prefix).strip(), f"({time.monotonic() - t0:.1f}s)")
        live_mongo, live_redis = stack.read_models()
        replay_mongo, replay_redis = stack.read_models(replay_db, replay_prefix)
        for name in live_mongo:
            assert live_mongo[name] == replay_mongo[name], f"MongoDB collection {name} differs from the replay"
        assert sorted(live_redis) == sorted(replay_redis), set(live_redis) ^ set(replay_redis)
        assert live_redis == replay_redis, "Redis read models differ from the replay"

        seen = assert_subscriber_saw_everything_once(stack, logged)
        print(f"broker: {seen}; log: {len(logged)} events")
    finally:
        teardown_stack(stack, (replay_db,), (replay_prefix,))
