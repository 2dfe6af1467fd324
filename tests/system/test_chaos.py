"""Chaos: a mixed load through the command API for ~20 s while the projector and the relay are
SIGKILLed at random moments (at least 3 times each) and restarted. Afterwards, once every follower
of the log has caught up with its head:

* at least one of the projector's kills landed in the middle of a MongoDB batch (its intent,
  ``pending_until``, was recorded when it died): the projector is killed as soon as it is seen
  mid-batch, and again until one such kill is confirmed,
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
    Load,
    Stack,
    assert_counts_match,
    assert_log_matches,
    assert_query_api_counts,
    assert_subscriber_saw_everything_once,
    launch_stack,
    teardown_stack,
)

pytestmark = pytest.mark.timeout(150)

LOAD_S = float(os.environ.get("STORIES_CHAOS_SECONDS", "20"))
KILLS_EACH = 4


async def chaos(stack: Stack, name: str, seconds: float, rng: random.Random, log: list[str]) -> None:
    """SIGKILL ``name`` at random moments, each time restarting it after a random pause (long
    enough, sometimes, for a backlog to build up, so the next kill may land mid-batch)."""
    started = time.monotonic()
    deadline = started + seconds - 0.5
    while (
        stack.kills[name] < KILLS_EACH or (name == "projector" and not stack.mid_batch_kills)
    ) and time.monotonic() < deadline:
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        if name == "projector":  # aim at a batch in flight: kill as soon as one is seen pending
            await asyncio.to_thread(wait_mid_batch, stack, 2.0)
        mid_batch = ""
        stack.kill(name)
        if name == "projector":
            pending = await asyncio.to_thread(pending_until, stack)
            mid_batch = f" (MongoDB batch up to {pending} cut short)" if pending else ""
            stack.mid_batch_kills += bool(pending)
        log.append(f"{time.monotonic() - started:5.1f}s kill {name}{mid_batch}")
        await asyncio.sleep(rng.uniform(0.1, 1.5))
        stack.start(name)
        log.append(f"{time.monotonic() - started:5.1f}s start {name}")


def wait_mid_batch(stack: Stack, seconds: float) -> None:
    """Return as soon as the projector has a MongoDB batch in flight (or after ``seconds``)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until and not pending_until(stack):
        time.sleep(0.002)


def pending_until(stack: Stack) -> int | None:
    from projections.mongo_schema import POSITIONS

    with stack.mongo() as client:
        doc = client[stack.side.mongodb_database][POSITIONS].find_one({"_id": "mongo_views"}) or {}
    return doc.get("pending_until")


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
        await asyncio.gather(
            load.run(LOAD_S, workers=12),
            chaos(stack, "projector", LOAD_S, rng, events),
            chaos(stack, "relay", LOAD_S, random.Random(rng.random()), events),
        )
        print("\n".join(sorted(events)))
        print(f"kills {dict(stack.kills)}, {stack.mid_batch_kills} of the projector's in the middle of a MongoDB batch")
        print(load.summary())
        assert not load.problems, load.problems[:20]
        assert stack.kills["projector"] >= 3 and stack.kills["relay"] >= 3, stack.kills
        assert stack.mid_batch_kills >= 1, "no kill of the projector landed in the middle of a MongoDB batch"
        stack.check_alive()

        t0 = time.monotonic()
        reached = stack.wait_caught_up()
        print(f"caught up in {time.monotonic() - t0:.1f}s at {reached}")
        stack.check_alive()

        logged = stack.export()
        assert_log_matches(logged, load)
        assert_counts_match(stack, load)
        assert_query_api_counts(stack, load)

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
