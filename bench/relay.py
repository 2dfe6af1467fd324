"""Relay benchmark: the event log to Redis Streams and to NATS JetStream (the machine's services).

For each broker, in one run:

* relay: ``brokers.relay.Relay`` (batch 500, the default) with its position in Redis, catching up
  over a generated log (``bench.replay.generated_log``, the read-side's mixed log): it reads the
  SQLite log, builds the envelopes, publishes through ``make_publisher`` (Redis: XADDs in one
  MULTI/EXEC per batch; NATS: JetStream publishes with Nats-Msg-Id and
  Nats-Expected-Last-Msg-Id, acks awaited per batch) and saves its position per batch;
* ceiling: the raw publish of the same envelopes (built beforehand), in batches of the same size:
  Redis, a redis-py pipeline of ``XADD <stream> * event <orjson.dumps(envelope)>`` per batch in
  MULTI/EXEC, as the publisher writes them (the wire format, without the publisher's trim, reply
  checks or position saves); NATS, FastStream's ``broker.publish(..., stream=)`` with the acks of a
  batch awaited together, no dedup headers.

Every run uses its own stream prefix (and Redis position key), deleted afterwards.
Knobs: BENCH_RELAY_EVENTS (the read side's BENCH_READ_EVENTS), BENCH_REDIS_URL, BENCH_NATS_URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from bench.common import Row, log

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")
EVENTS = int(os.environ.get("BENCH_RELAY_EVENTS", os.environ.get("BENCH_READ_EVENTS", "10000")))
BATCH = 500
LIMIT_S = 300.0


async def _reachable(url: str) -> bool:
    from urllib.parse import urlparse

    u = urlparse(url)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(u.hostname, u.port), 2)
        writer.close()
        return True
    except (TimeoutError, OSError):
        return False


async def _relay(store, url: str, prefix: str, until: int) -> tuple[int, float]:
    from brokers.publishers import broker_kind, make_publisher
    from brokers.relay import RedisPositionStore, Relay, position_key

    publisher = make_publisher(url, prefix, None)
    positions = RedisPositionStore(REDIS_URL, position_key(f"{prefix}:", broker_kind(url)))
    relay = Relay(store, publisher, positions, "vignette", BATCH)
    try:
        await publisher.connect()
        t0 = time.perf_counter()
        await asyncio.wait_for(relay.catch_up(until), LIMIT_S)
        return relay.published, time.perf_counter() - t0
    finally:
        relay.close()
        await publisher.close()
        await positions.close()


async def _raw_redis(envelopes: list[dict], prefix: str) -> float:
    import orjson
    import redis.asyncio as aioredis

    from brokers.publishers import REDIS_EVENT_FIELD, redis_stream_name

    client = aioredis.Redis.from_url(REDIS_URL)
    stream = redis_stream_name(prefix)
    try:
        await client.ping()
        t0 = time.perf_counter()
        for i in range(0, len(envelopes), BATCH):
            async with client.pipeline(transaction=True) as pipe:  # one MULTI/EXEC per batch, as the publisher
                for envelope in envelopes[i : i + BATCH]:
                    pipe.xadd(stream, {REDIS_EVENT_FIELD: orjson.dumps(envelope)})
                await pipe.execute()
        return time.perf_counter() - t0
    finally:
        await client.aclose()


async def _raw_nats(envelopes: list[dict], prefix: str) -> float:
    from faststream.nats import NatsBroker
    from nats.js.api import StorageType, StreamConfig

    from brokers.publishers import nats_stream_name, nats_subject, nats_subjects_wildcard

    broker = NatsBroker(NATS_URL)
    connection = await broker.connect()
    stream = nats_stream_name(prefix)
    await connection.jetstream().add_stream(
        StreamConfig(name=stream, subjects=[nats_subjects_wildcard(prefix)], storage=StorageType.FILE)
    )
    try:
        t0 = time.perf_counter()
        for i in range(0, len(envelopes), BATCH):
            await asyncio.gather(
                *(
                    broker.publish(e, nats_subject(prefix, e["event_type"]), stream=stream, timeout=10)
                    for e in envelopes[i : i + BATCH]
                )
            )
        return time.perf_counter() - t0
    finally:
        await broker.stop()


async def _cleanup(prefixes: list[str]) -> None:
    import redis.asyncio as aioredis

    from brokers.publishers import nats_stream_name, redis_stream_name

    if await _reachable(REDIS_URL):
        client = aioredis.Redis.from_url(REDIS_URL)
        for prefix in prefixes:
            await client.delete(
                redis_stream_name(prefix), f"{prefix}:relay:position:redis", f"{prefix}:relay:position:nats"
            )
        await client.aclose()
    if await _reachable(NATS_URL):
        import nats
        from nats.js.errors import NotFoundError

        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        for prefix in prefixes:
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(nats_stream_name(prefix))
        await nc.close()


async def _measure(store, head: int, envelopes: list[dict]) -> list[Row]:
    rows = []
    tag = f"benchrelay{os.getpid()}t{int(time.time())}"
    prefixes = []
    try:
        for kind, url, raw, raw_name in (
            ("Redis Streams", REDIS_URL, _raw_redis, "raw XADD"),
            ("NATS JetStream", NATS_URL, _raw_nats, "raw FastStream publish"),
        ):
            if not await _reachable(url):
                log(f"{kind}: {url} not reachable, skipped")
                rows.append(Row(f"relay -> {kind}: skipped ({url} not reachable)", float("nan"), "events/s"))
                continue
            relay_prefix, raw_prefix = f"{tag}{kind[:4].lower()}r", f"{tag}{kind[:4].lower()}w"
            prefixes += [relay_prefix, raw_prefix]
            log(f"{kind}: relay over {len(envelopes):,} events (batch {BATCH})")
            published, relay_s = await _relay(store, url, relay_prefix, head)
            log(f"  relay {published / relay_s:,.0f} events/s ({published:,} in {relay_s:.1f} s)")
            raw_s = await asyncio.wait_for(raw(envelopes, raw_prefix), LIMIT_S)
            log(f"  {raw_name} {len(envelopes) / raw_s:,.0f} events/s")
            rows.append(
                Row(
                    f"relay -> {kind} ({published:,} events)",
                    published / relay_s,
                    "events/s",
                    baseline=len(envelopes) / raw_s,
                    baseline_name=raw_name,
                    note=f"{url}; relay batch {BATCH} with position saves; ceiling = same envelopes pre-built, "
                    + (
                        "XADD <stream> * event <JSON> in one MULTI/EXEC per batch (redis-py), no trim"
                        if kind.startswith("Redis")
                        else "JetStream publishes, acks of a batch awaited together, no dedup headers"
                    ),
                )
            )
    finally:
        await _cleanup(prefixes)
        log(f"deleted streams/keys of {len(prefixes)} prefixes")
    return rows


def run() -> list[Row]:
    from bench.replay import generated_log
    from commands.event_store import EventStore

    path, _ = generated_log(EVENTS, users=300, stories=1000)
    store = EventStore(f"sqlite:///{path.resolve()}")
    try:
        head = store.head()
        envelopes = [e.envelope("vignette") for e in store.read(0, head, 5000)]
        return asyncio.run(_measure(store, head, envelopes))
    finally:
        store.close()


if __name__ == "__main__":
    from bench.__main__ import print_rows

    print_rows(run())
