"""What other services read off the brokers, read the way they would, without FastStream or this
project's code: plain JSON (the contract's "Events").

* Redis (127.0.0.1:6379): each entry of ``<prefix>.events`` has exactly one field, ``event``, the
  envelope's UTF-8 JSON; read with ``redis.Redis.xread`` and with a consumer group (``XGROUP
  CREATE`` / ``XREADGROUP`` / ``XACK``).
* NATS JetStream (127.0.0.1:4222): the message body is the envelope's JSON, ``Nats-Msg-Id`` its
  ``event_id``, the subject ``<prefix>.events.<event_type>`` of stream ``<PREFIX>``; read with nats-py.
* The upgrade: a stream that still holds entries an older relay wrote (field ``__data__``,
  FastStream's binary envelope) is read whole by ``stories tail``, which says so, and the new relay
  goes on after the last of them instead of publishing them again.

Every test uses a stream prefix of its own, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import pytest

from brokers.publishers import make_publisher, nats_stream_name, redis_stream_name
from brokers.relay import MemoryPositionStore, Relay
from commands.event_store import EventStore
from commands.synthetic_load import generate
from domain.platform import Platform
from tests.conftest import NATS_TEST_URL, RUN_ID, drop_broker_stream, one_redis_url, reachable, skip_backend

redis_url = one_redis_url  # the broker (Redis Streams) and the relay's position: one server

PLATFORM = Platform.VIGNETTE


@pytest.fixture
def prefix() -> str:
    return f"plainjson{RUN_ID}{uuid.uuid4().hex[:6]}"


@pytest.fixture
def redis_stream(redis_url, prefix):
    import redis

    yield prefix
    client = redis.Redis.from_url(redis_url)
    client.delete(redis_stream_name(prefix))
    client.close()


@pytest.fixture
def nats_stream(prefix):
    if not reachable("127.0.0.1", 4222):
        skip_backend("nats", "nothing listens on 127.0.0.1:4222")
    yield prefix
    asyncio.run(drop_broker_stream(NATS_TEST_URL, prefix))


async def _relay_the_log(store: EventStore, url: str, prefix: str, positions=None) -> Relay:
    """Run the relay (in process, small batches) until it published the whole log."""
    publisher = make_publisher(url, prefix)
    relay = Relay(store, publisher, positions or MemoryPositionStore(), PLATFORM.value, batch_size=25)
    await publisher.connect()
    try:
        await asyncio.wait_for(relay.catch_up(), 60)
    finally:
        relay.close()
        await publisher.close()
    return relay


def _expected(store: EventStore, after: int = 0) -> list[dict]:
    """The log's envelopes as JSON gives them back."""
    return [
        json.loads(json.dumps(logged.envelope(PLATFORM.value))) for logged in store.read() if logged.position > after
    ]


async def test_redis_entries_are_one_field_event_read_with_plain_xread_and_xreadgroup(
    redis_url,
    redis_stream,
    sqlite_url,
    clock,
):
    import redis

    prefix = redis_stream
    stream = redis_stream_name(prefix)
    store = EventStore(sqlite_url)
    await generate(store, PLATFORM, users=10, stories=8, engagements=60, seed=21, clock=clock)
    client = redis.Redis.from_url(redis_url)  # plain redis-py, bytes in and out
    try:
        # A group created at $ before anything is published gets every event published after.
        client.xgroup_create(stream, "new-only", id="$", mkstream=True)
        await _relay_the_log(store, redis_url, prefix)
        expected = _expected(store)
        assert expected

        # XREAD from 0: every entry is exactly {b"event": <envelope JSON>}.
        entries, last_id = [], "0-0"
        while reply := client.xread({stream: last_id}, count=37):
            for _name, batch in reply:
                entries.extend(batch)
                last_id = batch[-1][0]
        assert all(set(fields) == {b"event"} for _id, fields in entries)
        assert [json.loads(fields[b"event"].decode("utf-8")) for _id, fields in entries] == expected

        # XGROUP CREATE ... 0 / XREADGROUP ... > / XACK: the whole stream, once, in order.
        client.xgroup_create(stream, "analytics", id="0")
        delivered, acked = [], 0
        while reply := client.xreadgroup("analytics", "a1", {stream: ">"}, count=50):
            for _name, batch in reply:
                delivered.extend(json.loads(fields[b"event"]) for _id, fields in batch)
                acked += client.xack(stream, "analytics", *(entry_id for entry_id, _ in batch))
        assert delivered == expected and acked == len(expected)
        assert client.xpending(stream, "analytics")["pending"] == 0

        # The group created at $ beforehand sees the same events (they all came after it).
        reply = client.xreadgroup("new-only", "n1", {stream: ">"}, count=10_000)
        assert [json.loads(fields[b"event"]) for _id, fields in reply[0][1]] == expected

        # A group created at $ now sees only what the relay publishes from now on.
        client.xgroup_create(stream, "from-now", id="$")
        head = store.head()
        await generate(store, PLATFORM, users=10, stories=2, engagements=10, seed=22, clock=clock)
        await _relay_the_log(store, redis_url, prefix, MemoryPositionStore(head))
        reply = client.xreadgroup("from-now", "f1", {stream: ">"}, count=10_000)
        later = [json.loads(fields[b"event"]) for _id, fields in reply[0][1]]
        assert later == _expected(store, after=head) and later
    finally:
        client.close()
        store.close()


async def test_nats_body_is_the_envelope_json_with_nats_msg_id(nats_stream, sqlite_url, clock):
    import nats
    from nats.js.api import DeliverPolicy

    prefix = nats_stream
    store = EventStore(sqlite_url)
    await generate(store, PLATFORM, users=10, stories=8, engagements=60, seed=23, clock=clock)
    await _relay_the_log(store, NATS_TEST_URL, prefix)
    expected = _expected(store)
    store.close()

    connection = await nats.connect(NATS_TEST_URL)  # plain nats-py
    try:
        js = connection.jetstream()
        subscription = await js.subscribe(
            f"{prefix}.events.>",
            stream=nats_stream_name(prefix),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        messages = []
        while len(messages) < len(expected):
            messages.append(await subscription.next_msg(timeout=5))
        with pytest.raises(nats.errors.TimeoutError):
            await subscription.next_msg(timeout=0.3)  # nothing more
        for message, envelope in zip(messages, expected):
            assert json.loads(message.data.decode("utf-8")) == envelope  # the body is the JSON itself
            assert message.headers["Nats-Msg-Id"] == envelope["event_id"]
            assert message.subject == f"{prefix}.events.{envelope['event_type']}"
        assert len(messages) == len(expected)

        # One event type alone, by subject.
        viewed = [e for e in expected if e["event_type"] == "StoryViewed"]
        subscription = await js.subscribe(
            f"{prefix}.events.StoryViewed",
            stream=nats_stream_name(prefix),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        got = [json.loads((await subscription.next_msg(timeout=5)).data) for _ in viewed]
        assert got == viewed and viewed
    finally:
        await connection.close()


async def _write_legacy_entries(redis_url: str, prefix: str, envelopes: list[dict]) -> None:
    """What the relay wrote before the upgrade: FastStream's XADD, field ``__data__``, binary envelope."""
    from faststream.redis import RedisBroker

    broker = RedisBroker(redis_url)
    await broker.connect()
    try:
        for envelope in envelopes:
            await broker.publish(
                envelope,
                stream=redis_stream_name(prefix),
                correlation_id=envelope["event_id"],
                headers={"event_type": envelope["event_type"]},
            )
    finally:
        await broker.stop()


async def test_upgrade_over_a_stream_of_old_entries(redis_url, redis_stream, sqlite_url, clock, caplog):
    """The old relay published the first half of the log; the new one goes on from the last entry
    the stream holds (its position lost), in the plain format; the tail reads both and says so."""
    import redis

    from brokers.tail import raw_events, tail

    prefix = redis_stream
    store = EventStore(sqlite_url)
    await generate(store, PLATFORM, users=10, stories=8, engagements=60, seed=24, clock=clock)
    expected = _expected(store)
    old = expected[: len(expected) // 2]
    await _write_legacy_entries(redis_url, prefix, old)

    # The new relay with no recorded position: it reads the last (old-format) entry's position.
    await _relay_the_log(store, redis_url, prefix)
    store.close()
    client = redis.Redis.from_url(redis_url)
    try:
        entries = client.xrange(redis_stream_name(prefix))
    finally:
        client.close()
    assert [set(fields) for _id, fields in entries] == [{b"__data__"}] * len(old) + [{b"event"}] * (
        len(expected) - len(old)
    )

    with caplog.at_level(logging.WARNING, logger="brokers.tail"):
        raw = [e async for e in raw_events(redis_url, prefix, from_start=True, idle_timeout_s=0.5)]
    assert raw == expected  # each once: nothing published again over the upgrade
    notes = [r.getMessage() for r in caplog.records if r.name == "brokers.tail"]
    assert len(notes) == 1 and "__data__" in notes[0] and "before the upgrade" in notes[0]

    import io

    out = io.StringIO()
    assert await tail(redis_url, prefix, True, len(expected), out) == len(expected)
    assert out.getvalue().splitlines() == [f"{e['position']} {e['event_type']} {e['stream_id']}" for e in expected]
