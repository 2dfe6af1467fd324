"""The relay against the machine's Redis and NATS JetStream: run as a real process, SIGKILLed
several times mid-stream and restarted, it still delivers every event of the log; a subscriber
that deduplicates on event_id sees each exactly once, in position order."""

from __future__ import annotations

import asyncio
import io
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from brokers.publishers import (
    NatsJetStreamPublisher, RedisStreamPublisher, make_publisher, nats_stream_name, redis_stream_name,
)
from brokers.relay import MemoryPositionStore, Relay, position_key
from brokers.tail import raw_events, tail
from commands.event_store import EventStore
from commands.synthetic_load import generate
from domain.platform import Platform
from tests.conftest import NATS_TEST_URL, RUN_ID, reachable, skip_backend

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = Platform.VIGNETTE


@pytest.fixture(scope="session")
def nats_url():
    if not reachable("127.0.0.1", 4222):
        skip_backend("nats", "nothing listens on 127.0.0.1:4222")
    return NATS_TEST_URL


@pytest.fixture(params=["redis", "nats"])
def broker(request, redis_url):
    """(broker URL, a prefix of this test's own); the stream is deleted afterwards."""
    url = redis_url if request.param == "redis" else request.getfixturevalue("nats_url")
    prefix = f"relaytest{RUN_ID}{uuid.uuid4().hex[:6]}"
    yield url, prefix
    asyncio.run(_drop_stream(url, prefix))


async def _drop_stream(url: str, prefix: str) -> None:
    if url.startswith("redis"):
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(url)
        await client.delete(redis_stream_name(prefix))
        await client.aclose()
    else:
        import nats
        from nats.js.errors import NotFoundError

        connection = await nats.connect(url)
        try:
            await connection.jetstream().delete_stream(nats_stream_name(prefix))
        except NotFoundError:
            pass
        await connection.close()


def _start_relay(sqlite_url, broker_url, prefix, redis_url, redis_prefix) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "brokers", "relay", "--event-store-url", sqlite_url, "--broker-url", broker_url,
         "--prefix", prefix, "--platform", PLATFORM.value, "--position-redis-url", redis_url,
         "--position-key-prefix", redis_prefix, "--batch-size", "20", "--batch-pause-s", "0.004"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _recorded(client, key: str) -> int:
    value = client.get(key)
    return int(value) if value else 0


def _check_delivery(raw: list[dict], expected: list[dict]) -> int:
    """Each event's first delivery comes after every earlier event's; the deduplicated sequence is
    the log. The number of duplicates."""
    seen: set[str] = set()
    deduped, highest = [], 0
    for envelope in raw:
        if envelope["event_id"] in seen:
            continue
        assert envelope["position"] > highest, "an event was first delivered after a later one"
        highest = envelope["position"]
        seen.add(envelope["event_id"])
        deduped.append(envelope)
    assert [e["position"] for e in deduped] == [e["position"] for e in expected]
    assert deduped == expected
    return len(raw) - len(deduped)


async def test_relay_survives_sigkill_and_delivers_every_event_once(
    broker, sqlite_url, redis_url, redis_prefix, clock,
):
    import redis

    broker_url, prefix = broker
    store = EventStore(sqlite_url)
    await generate(store, PLATFORM, users=40, stories=50, engagements=1000, seed=7, clock=clock)
    key = position_key(redis_prefix, "redis" if broker_url.startswith("redis") else "nats")
    positions = redis.Redis.from_url(redis_url)
    rng = random.Random(11)
    kills, process = [], None
    try:
        # Kill it several times while it is mid-stream.
        while len(kills) < 4:
            process = _start_relay(sqlite_url, broker_url, prefix, redis_url, redis_prefix)
            before = _recorded(positions, key)
            deadline = time.monotonic() + 30
            while _recorded(positions, key) == before:  # wait until this run made progress
                assert process.poll() is None, process.stderr.read().decode()
                assert time.monotonic() < deadline, "the relay made no progress"
                await asyncio.sleep(0.005)
            await asyncio.sleep(rng.uniform(0.0, 0.08))
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills.append(_recorded(positions, key))
        assert kills[-1] < store.head(), "the relay finished before the last kill: make the log bigger"

        # Restart it for good, and write more events while it runs.
        process = _start_relay(sqlite_url, broker_url, prefix, redis_url, redis_prefix)
        await generate(store, PLATFORM, users=40, stories=10, engagements=300, seed=8, clock=clock)
        head, deadline = store.head(), time.monotonic() + 60
        while _recorded(positions, key) < head:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, f"stuck at {_recorded(positions, key)} of {head}"
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        positions.close()

    expected = [logged.envelope(PLATFORM.value) for logged in store.read()]
    store.close()
    raw = [e async for e in raw_events(broker_url, prefix, from_start=True, idle_timeout_s=1.0)]
    duplicates = _check_delivery(raw, expected)
    print(f"\n{broker_url.split(':')[0]}: {len(expected)} events, kills at positions {kills}, "
          f"{duplicates} duplicates delivered")

    # The example subscriber prints each once, in order.
    out = io.StringIO()
    printed = await asyncio.wait_for(tail(broker_url, prefix, True, len(expected), out), 30)
    assert printed == len(expected)
    assert out.getvalue().splitlines() == [
        f"{e['position']} {e['event_type']} {e['stream_id']}" for e in expected
    ]


class FlakyPublisher:
    """Confirms nothing on its first ``fail`` calls (after storing half the batch)."""

    kind = "memory"

    def __init__(self, fail: int) -> None:
        self.fail, self.delivered = fail, []

    async def connect(self):
        pass

    async def publish(self, envelopes):
        if self.fail:
            self.fail -= 1
            self.delivered.extend(envelopes[: len(envelopes) // 2])
            raise ConnectionError("broker went away")
        self.delivered.extend(envelopes)

    async def close(self):
        pass


async def test_relay_records_the_position_only_after_confirmation(sqlite_url, clock):
    store = EventStore(sqlite_url)
    await generate(store, PLATFORM, users=10, stories=5, engagements=30, seed=3, clock=clock)
    publisher, positions = FlakyPublisher(fail=2), MemoryPositionStore()
    relay = Relay(store, publisher, positions, PLATFORM.value, batch_size=7)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run_forever(stop))
    deadline = time.monotonic() + 20
    while positions.position < store.head():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    stop.set()
    await task
    relay.close()
    expected = [logged.envelope(PLATFORM.value) for logged in store.read()]
    store.close()
    assert _check_delivery(publisher.delivered, expected) == 3 + 3  # two half batches went out twice


async def test_publishers_deduplicate_and_keep_order(broker):
    url, prefix = broker
    publisher = make_publisher(url, prefix, max_len=1000)
    assert isinstance(publisher, RedisStreamPublisher if url.startswith("redis") else NatsJetStreamPublisher)
    envelopes = [
        {"event_id": str(uuid.uuid4()), "event_type": "UserFollowed", "stream_id": str(uuid.uuid4()),
         "stream_version": 1, "position": i, "occurred_at": "2026-01-01T12:00:00+00:00",
         "platform": PLATFORM.value, "schema_version": 1, "data": {"follower_id": "a", "followee_id": f"u{i}"}}
        for i in range(1, 301)
    ]
    await publisher.connect()
    try:
        await publisher.publish(envelopes[:200])
        await publisher.connect()  # as after a restart: the batch goes out again
        await publisher.publish(envelopes[100:])
    finally:
        await publisher.close()
    raw = [e async for e in raw_events(url, prefix, from_start=True, idle_timeout_s=0.5)]
    duplicates = _check_delivery(raw, envelopes)
    # JetStream drops a re-publication within its duplicate window; a Redis stream keeps it.
    assert duplicates == (100 if url.startswith("redis") else 0)
