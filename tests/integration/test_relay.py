"""The relay against the machine's Redis and NATS JetStream: run as a real process, SIGKILLed
several times mid-stream and restarted, it still delivers every event of the log; a subscriber
that deduplicates on event_id sees each exactly once, in position order. What it writes is plain
JSON (Redis: one field ``event`` per entry; NATS: the body, ``Nats-Msg-Id`` = event_id), checked
here with the plain clients (more in ``test_broker_plain_json.py``)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from brokers.publishers import (
    NatsJetStreamPublisher,
    RedisStreamPublisher,
    make_publisher,
    nats_stream_name,
    redis_stream_name,
)
from brokers.relay import MemoryPositionStore, Relay, position_key
from brokers.tail import raw_events, tail
from commands.event_store import EventStore
from commands.synthetic_load import generate
from domain.platform import Platform
from tests.conftest import NATS_TEST_URL, RUN_ID, drop_broker_stream, one_redis_url, reachable, skip_backend

redis_url = one_redis_url  # the broker (Redis Streams) and the relay's position: one server

ROOT = Path(__file__).resolve().parents[2]
STORIES = str(Path(sys.executable).parent / "stories")  # the venv's `stories` command
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
    asyncio.run(drop_broker_stream(url, prefix))


def _start_relay(
    sqlite_url, broker_url, prefix, redis_url, redis_prefix, stderr=subprocess.PIPE, lease_ttl_s: float = 1.0
) -> subprocess.Popen:
    """A relay process; its lease (STORIES_RELAY_LEASE_TTL_S) short, so that a relay started after
    one was killed takes over quickly."""
    return subprocess.Popen(
        [
            STORIES,
            "relay",
            "--event-store-url",
            sqlite_url,
            "--broker-url",
            broker_url,
            "--prefix",
            prefix,
            "--platform",
            PLATFORM.value,
            "--position-redis-url",
            redis_url,
            "--position-key-prefix",
            redis_prefix,
            "--batch-size",
            "20",
            "--batch-pause-s",
            "0.004",
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT), STORIES_RELAY_LEASE_TTL_S=str(lease_ttl_s)),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def _recorded(client, key: str) -> int:
    value = client.get(key)
    return int(value) if value else 0


async def _wire(url: str, prefix: str) -> list[dict]:
    """Every message on the broker read with the plain client, checking it is plain JSON: a Redis
    entry has exactly one field, ``event``; a NATS message's body is the JSON and its
    ``Nats-Msg-Id`` the event_id. The envelopes, in the broker's order."""
    if url.startswith("redis"):
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(url)
        try:
            entries = await client.xrange(redis_stream_name(prefix))
        finally:
            await client.aclose()
        assert all(set(fields) == {b"event"} for _id, fields in entries), entries[:1]
        return [json.loads(fields[b"event"].decode("utf-8")) for _id, fields in entries]
    import nats

    connection = await nats.connect(url)
    try:
        js = connection.jetstream()
        count = (await js.stream_info(nats_stream_name(prefix))).state.messages
        subscription = await js.subscribe(f"{prefix}.events.>", stream=nats_stream_name(prefix), ordered_consumer=True)
        out = []
        for _ in range(count):
            message = await subscription.next_msg(timeout=5)
            envelope = json.loads(message.data.decode("utf-8"))
            assert message.headers["Nats-Msg-Id"] == envelope["event_id"]
            assert message.subject == f"{prefix}.events.{envelope['event_type']}"
            out.append(envelope)
        return out
    finally:
        await connection.close()


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
    broker,
    sqlite_url,
    redis_url,
    redis_prefix,
    clock,
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
    assert await _wire(broker_url, prefix) == raw  # plain JSON on the wire, read without our decoder
    duplicates = _check_delivery(raw, expected)
    print(
        f"\n{broker_url.split(':')[0]}: {len(expected)} events, kills at positions {kills}, "
        f"{duplicates} duplicates delivered"
    )

    # The example subscriber prints each once, in order.
    out = io.StringIO()
    printed = await asyncio.wait_for(tail(broker_url, prefix, True, len(expected), out), 30)
    assert printed == len(expected)
    assert out.getvalue().splitlines() == [f"{e['position']} {e['event_type']} {e['stream_id']}" for e in expected]


def _lease_pid(client, key: str) -> int | None:
    """The pid in the lease's token (``host:pid:random``), None when nobody holds it."""
    value = client.get(key)
    return int(value.decode().split(":")[1]) if value else None


async def test_two_relays_publish_each_event_once_and_a_standby_takes_over(
    broker,
    sqlite_url,
    redis_url,
    redis_prefix,
    clock,
    tmp_path,
):
    """Two relay processes against one broker: one holds the lease and publishes, the other waits;
    the active one SIGKILLed mid-stream, the standby takes over. The stream holds every event of
    the log exactly once (no interleaving, no re-published batch), in log order."""
    import redis

    broker_url, prefix = broker
    kind = "redis" if broker_url.startswith("redis") else "nats"
    store = EventStore(sqlite_url)
    await generate(store, PLATFORM, users=40, stories=50, engagements=1000, seed=12, clock=clock)
    head = store.head()
    key, lease = position_key(redis_prefix, kind), f"{redis_prefix}relay:lease:{kind}"  # brokers.relay.lease_key
    positions = redis.Redis.from_url(redis_url)
    logs = [tmp_path / "relay-a.log", tmp_path / "relay-b.log"]
    relays = [
        _start_relay(sqlite_url, broker_url, prefix, redis_url, redis_prefix, stderr=open(path, "wb"), lease_ttl_s=2.0)  # noqa: SIM115  # the relay process writes to it for the whole test
        for path in logs
    ]
    log_text = lambda: "\n".join(p.read_text(errors="replace")[-3000:] for p in logs)  # noqa: E731
    try:
        deadline = time.monotonic() + 30
        while _recorded(positions, key) < 100:  # wait until a few batches went out (as the code stood: from both)
            assert all(r.poll() is None for r in relays), log_text()
            assert time.monotonic() < deadline, f"no relay made progress\n{log_text()}"
            await asyncio.sleep(0.005)
        holder = _lease_pid(positions, lease)
        # The relay holding the lease is the active one (as the code stood, neither held one: both published).
        active = next((r for r in relays if r.pid == holder), relays[0])
        standby = next(r for r in relays if r is not active)
        await asyncio.sleep(random.Random(5).uniform(0.0, 0.08))
        active.send_signal(signal.SIGKILL)
        active.wait()
        killed_at = _recorded(positions, key)
        assert killed_at < head, "the relay finished before the kill: make the log bigger"

        deadline = time.monotonic() + 60
        while _recorded(positions, key) < head:  # the standby takes over
            assert standby.poll() is None, log_text()
            assert time.monotonic() < deadline, f"stuck at {_recorded(positions, key)} of {head}\n{log_text()}"
            await asyncio.sleep(0.02)
        holder_after = _lease_pid(positions, lease)
        standby.send_signal(signal.SIGTERM)
        assert standby.wait(timeout=15) == 0, log_text()
        holder_at_the_end = positions.get(lease)
    finally:
        for relay in relays:
            if relay.poll() is None:
                relay.kill()
                relay.wait()
        positions.close()

    expected = [logged.envelope(PLATFORM.value) for logged in store.read()]
    store.close()
    raw = [e async for e in raw_events(broker_url, prefix, from_start=True, idle_timeout_s=1.0)]
    assert len(raw) == len(expected), f"{len(raw)} messages on the stream for {len(expected)} events"
    assert _check_delivery(raw, expected) == 0
    assert holder == active.pid, f"no relay held the lease {lease} while publishing: {holder}"
    assert holder_after == standby.pid, "the standby did not take the lease over"
    assert holder_at_the_end is None, "a relay that stops gives its lease back"
    print(f"\n{kind}: {len(expected)} events, active relay killed at position {killed_at}, none duplicated")


async def test_the_lease_waits_for_a_live_or_remote_holder_and_lapses_after_its_ttl(redis_url, redis_prefix):
    """A lease held by a process of another host (or a live one here) is not taken over before it
    lapses; a renewal keeps it; once it lapses the standby gets it, and the old holder cannot renew."""
    from brokers.relay import RedisLease, lease_key

    key = lease_key(redis_prefix, "redis")
    remote = RedisLease(redis_url, key, ttl_s=1.0, token="elsewhere:1:00000000:abcdef12")
    here = RedisLease(redis_url, key, ttl_s=1.0)  # this (live) process's token
    standby = RedisLease(redis_url, key, ttl_s=1.0)
    try:
        assert await remote.acquire() and remote.held()
        assert not await standby.acquire() and not standby.held()
        await asyncio.sleep(0.6)
        assert await remote.renew()  # renewed: still not the standby's after the first TTL
        await asyncio.sleep(0.6)
        assert not await standby.acquire()
        await asyncio.sleep(1.1)  # no renewal: it lapses
        assert await standby.acquire() and standby.held()
        assert not await remote.renew() and not remote.held()
        await standby.release()
        assert await here.acquire()
        assert not await standby.acquire(), "a live holder on this host is not taken over"
    finally:
        for lease in (remote, here, standby):
            await lease.close()


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
    first_batch = len(store.read_batch(0, 7)[0])  # log rows that are not domain events are skipped
    store.close()
    # The first batch failed twice, each time after half of it went out: those went out twice more.
    assert _check_delivery(publisher.delivered, expected) == 2 * (first_batch // 2)


async def test_publishers_deduplicate_and_keep_order(broker):
    url, prefix = broker
    publisher = make_publisher(url, prefix, max_len=1000)
    assert isinstance(publisher, RedisStreamPublisher if url.startswith("redis") else NatsJetStreamPublisher)
    envelopes = [
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "UserFollowed",
            "stream_id": str(uuid.uuid4()),
            "stream_version": 1,
            "position": i,
            "occurred_at": "2026-01-01T12:00:00+00:00",
            "platform": PLATFORM.value,
            "schema_version": 1,
            "data": {"follower_id": "a", "followee_id": f"u{i}"},
        }
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
    assert await _wire(url, prefix) == raw
    duplicates = _check_delivery(raw, envelopes)
    # JetStream drops a re-publication within its duplicate window; a Redis stream keeps it.
    assert duplicates == (100 if url.startswith("redis") else 0)


# -- retention by age ----------------------------------------------------------------------------


def _envelopes(first: int, count: int) -> list[dict]:
    return [
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "UserFollowed",
            "stream_id": str(uuid.uuid4()),
            "stream_version": 1,
            "position": i,
            "occurred_at": "2026-01-01T12:00:00+00:00",
            "platform": PLATFORM.value,
            "schema_version": 1,
            "data": {"follower_id": "a", "followee_id": f"u{i}"},
        }
        for i in range(first, first + count)
    ]


async def _publish(publisher, envelopes: list[dict], batch: int = 100) -> None:
    for i in range(0, len(envelopes), batch):
        await publisher.publish(envelopes[i : i + batch])


async def _kept(url: str, prefix: str) -> list[dict]:
    return [e async for e in raw_events(url, prefix, from_start=True, idle_timeout_s=0.3)]


async def _stream_info(url: str, prefix: str):
    import nats

    connection = await nats.connect(url)
    try:
        return await connection.jetstream().stream_info(nats_stream_name(prefix))
    finally:
        await connection.close()


def _redis_node_entries(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.config_get("stream-node-max-entries").get("stream-node-max-entries", 100))
    finally:
        client.close()


async def test_events_older_than_the_retention_are_dropped_newer_ones_stay(broker):
    url, prefix = broker
    retention = timedelta(seconds=2)
    publisher = make_publisher(url, prefix, retention=retention)
    old, new = _envelopes(1, 250), _envelopes(251, 60)
    await publisher.connect()
    try:
        await _publish(publisher, old, batch=50)
        await asyncio.sleep(retention.total_seconds() + 0.3)  # every old event is now past the retention
        before_new = time.time()
        await publisher.publish(new)
        kept = await _kept(url, prefix)
        if url.startswith("redis"):
            # The batch's own XTRIM MINID ~ removed every whole stream node of old events; the old
            # events left share a node with newer ones (at most one node's worth).
            survivors = [e for e in kept if e["position"] <= 250]
            assert len(survivors) <= _redis_node_entries(url)
            assert survivors == old[len(old) - len(survivors) :]
            assert kept[len(survivors) :] == new
            await publisher.trim()  # what the relay runs every few seconds: exact
            kept = await _kept(url, prefix)
        else:
            deadline = time.monotonic() + 15  # JetStream expires messages by max_age on its own timer
            while len(kept) != len(new) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                kept = await _kept(url, prefix)
        assert kept == new
        age = await publisher.oldest_event_age_s()
        assert age is not None and 0 <= age <= time.time() - before_new + 0.05
    finally:
        await publisher.close()


async def test_no_count_cap_by_default(broker):
    url, prefix = broker
    publisher = make_publisher(url, prefix)  # the defaults: 7 days, no count cap
    envelopes = _envelopes(1, 1500)  # more than the 1,000 cap this file's tests used to set
    await publisher.connect()
    try:
        await _publish(publisher, envelopes, batch=300)
        await publisher.trim()
    finally:
        await publisher.close()
    assert _check_delivery(await _kept(url, prefix), envelopes) == 0
    if url.startswith("nats"):
        info = await _stream_info(url, prefix)
        assert info.config.max_age == timedelta(days=7).total_seconds()
        assert info.config.max_msgs == -1
        assert info.state.messages == 1500


async def test_a_positive_max_len_still_caps_the_count(broker):
    url, prefix = broker
    publisher = make_publisher(url, prefix, max_len=100, retention=timedelta(hours=1))
    await publisher.connect()
    try:
        await _publish(publisher, _envelopes(1, 600))
    finally:
        await publisher.close()
    kept = await _kept(url, prefix)
    if url.startswith("redis"):
        assert 100 <= len(kept) < 600  # MAXLEN ~: whole nodes only
    else:
        assert len(kept) == 100
        info = await _stream_info(url, prefix)
        assert (info.config.max_msgs, info.config.max_age) == (100, 3600)
    assert kept[-1]["position"] == 600


async def test_jetstream_stream_moves_to_the_age_policy_keeping_operator_settings(nats_url):
    import nats
    from nats.js.api import StorageType, StreamConfig

    prefix = f"relaytest{RUN_ID}{uuid.uuid4().hex[:6]}"
    connection = await nats.connect(nats_url)
    js = connection.jetstream()
    # As an older relay left it (count cap, no age limit), plus what an operator set by hand.
    await js.add_stream(
        StreamConfig(
            name=nats_stream_name(prefix),
            subjects=[f"{prefix}.events.>"],
            storage=StorageType.FILE,
            max_msgs=1_000_000,
            max_age=0,
            duplicate_window=120,
            max_bytes=64 * 1024 * 1024,
            description="ops",
        )
    )
    try:
        publisher = make_publisher(nats_url, prefix)
        await publisher.connect()
        await publisher.publish(_envelopes(1, 3))
        await publisher.close()
        config = (await js.stream_info(nats_stream_name(prefix))).config
        assert config.max_age == timedelta(days=7).total_seconds() and config.max_msgs == -1
        assert config.duplicate_window == 120
        assert (config.max_bytes, config.description, config.storage) == (64 * 1024 * 1024, "ops", StorageType.FILE)

        # A retention shorter than the duplicate window shortens the window (JetStream requires it).
        publisher = make_publisher(nats_url, prefix, retention=timedelta(seconds=30), max_len=0)
        await publisher.connect()
        await publisher.close()
        config = (await js.stream_info(nats_stream_name(prefix))).config
        assert (config.max_age, config.duplicate_window, config.max_msgs) == (30, 30, -1)
    finally:
        await js.delete_stream(nats_stream_name(prefix))
        await connection.close()


async def test_relay_reports_the_oldest_event_age(broker, sqlite_url, clock):
    from brokers.publishers import oldest_event_age

    url, prefix = broker
    store = EventStore(sqlite_url)
    await generate(store, PLATFORM, users=10, stories=5, engagements=40, seed=5, clock=clock)
    publisher = make_publisher(url, prefix, retention=timedelta(minutes=10))
    relay = Relay(store, publisher, MemoryPositionStore(), PLATFORM.value, batch_size=20, maintain_every_s=0.1)
    gauge = lambda: relay.metrics.registry.get_sample_value("stories_broker_oldest_event_age_seconds")  # noqa: E731
    await publisher.connect()
    try:
        assert await relay.maintain() is None and gauge() == 0  # nothing kept yet
        started = time.time()
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run_forever(stop))
        deadline = time.monotonic() + 30
        while relay.position != store.head():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)
        while gauge() < 1.0:  # run_forever refreshes it every maintain_every_s
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        stop.set()
        await task
        age = gauge()
        assert 1.0 <= age <= time.time() - started + 0.05
        once = await oldest_event_age(url, prefix)
        assert age <= once <= time.time() - started + 0.05
        exposition = generate_latest(relay.metrics.registry).decode()
        assert "stories_broker_oldest_event_age_seconds" in exposition
        assert relay.metrics.registry.get_sample_value("stories_relay_position") == store.head()
    finally:
        relay.close()
        await publisher.close()
        store.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_relay_process_serves_the_oldest_event_age(broker, sqlite_url, redis_url, redis_prefix, clock):
    """``stories relay --retention 1h --metrics-port N`` serves the gauge at /metrics."""
    import urllib.request

    url, prefix = broker
    store = EventStore(sqlite_url)
    await generate(store, PLATFORM, users=10, stories=5, engagements=20, seed=9, clock=clock)
    store.close()
    port = _free_port()
    process = subprocess.Popen(
        [
            STORIES,
            "relay",
            "--event-store-url",
            sqlite_url,
            "--broker-url",
            url,
            "--prefix",
            prefix,
            "--platform",
            PLATFORM.value,
            "--position-redis-url",
            redis_url,
            "--position-key-prefix",
            redis_prefix,
            "--retention",
            "1h",
            "--metrics-port",
            str(port),
            "--metrics-host",
            "127.0.0.1",
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline, age = time.monotonic() + 30, 0.0
        while age <= 0:  # the relay refreshes the gauge every 5 s
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the gauge never reported the published events"
            await asyncio.sleep(0.2)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    text = response.read().decode()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("stories_broker_oldest_event_age_seconds "):
                    age = float(line.split()[1])
        assert 0 < age < 3600
        lag = {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line.startswith(("stories_relay_lag_events ", "stories_relay_lag_seconds "))
        }
        assert set(lag) == {"stories_relay_lag_events", "stories_relay_lag_seconds"}  # served, caught up: 0
        assert lag == {"stories_relay_lag_events": 0.0, "stories_relay_lag_seconds": 0.0}
        if url.startswith("nats"):
            assert (await _stream_info(url, prefix)).config.max_age == 3600
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
