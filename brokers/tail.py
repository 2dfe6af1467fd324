"""An example subscriber (what ``stories tail`` runs): follow the relay's events on Redis Streams
or NATS JetStream, drop re-published ones on ``event_id``, print one line per event:

    <position> <event_type> <stream_id>

It uses the plain clients (redis-py, nats-py) rather than a FastStream app, to show what a
consumer in any language does: both brokers carry the envelope as plain JSON.

* Redis: ``XREAD`` on ``<prefix>.events`` from ``0`` (``from_start``) or from ``$`` (new events
  only); each entry's one field ``event`` is the envelope's JSON. A consumer that must not miss
  events across restarts uses a consumer group instead (``XGROUP CREATE stories.events my-group
  0 MKSTREAM``) and ``XACK``s.
* NATS: an ordered, ephemeral JetStream consumer on ``<prefix>.events.>`` in stream ``<PREFIX>``,
  delivering all messages (``from_start``) or new ones only; the body is the envelope's JSON.

Entries an older relay wrote before the upgrade to plain JSON (field ``__data__``, FastStream's
binary envelope around the same JSON) are still read: ``decode_redis_entry`` decodes both, and
the tail says once, on stderr, that it met some. They leave the stream with the retention.

``faststream_decoder`` lets a FastStream subscriber of the Redis stream receive the envelope itself
(either format) rather than the entry's fields.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import OrderedDict
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, TextIO, cast

import orjson

from brokers.publishers import (
    REDIS_EVENT_FIELD,
    _redis_url,
    broker_kind,
    nats_stream_name,
    nats_subjects_wildcard,
    redis_stream_name,
)

log = logging.getLogger(__name__)

FASTSTREAM_MAGIC = b"\x89BIN\r\n\x1a\n"
LEGACY_FIELD = "__data__"  # the one field of entries written before the upgrade to plain JSON
_EVENT_KEYS = (REDIS_EVENT_FIELD.encode(), REDIS_EVENT_FIELD)
_LEGACY_KEYS = (LEGACY_FIELD.encode(), LEGACY_FIELD)


def decode_faststream_binary(raw: bytes) -> tuple[bytes, dict[str, str]]:
    """FastStream's BinaryMessageFormatV1 (what the relay wrote to Redis before the upgrade to plain
    JSON) → (body, headers). All integers big-endian:
    magic (8 bytes) | u16 version=1 | u32 headers_start | u32 data_start |
    @headers_start: u16 count, count × (u16 len, key utf-8, u16 len, value utf-8) | @data_start: body.
    Anything without the magic is returned as the body, unchanged."""
    if raw[:8] != FASTSTREAM_MAGIC:
        return raw, {}
    version, headers_start, data_start = struct.unpack_from(">HII", raw, 8)
    if version != 1:
        raise ValueError(f"unknown FastStream binary format version {version}")
    (count,) = struct.unpack_from(">H", raw, headers_start)
    offset, headers = headers_start + 2, {}
    for _ in range(count):
        (size,) = struct.unpack_from(">H", raw, offset)
        key = raw[offset + 2 : offset + 2 + size].decode()
        offset += 2 + size
        (size,) = struct.unpack_from(">H", raw, offset)
        headers[key] = raw[offset + 2 : offset + 2 + size].decode()
        offset += 2 + size
    return raw[data_start:], headers


def is_legacy_entry(fields: dict[Any, Any]) -> bool:
    """Whether a stream entry is in the format of before the upgrade (field ``__data__``, FastStream's
    binary envelope) rather than the plain one (field ``event``, the JSON)."""
    return not any(k in fields for k in _EVENT_KEYS) and any(k in fields for k in _LEGACY_KEYS)


def decode_redis_entry(fields: dict[Any, Any]) -> dict[str, Any]:
    """One stream entry of ``<prefix>.events`` (its fields, bytes or str keys) → the envelope dict.
    Reads the plain format (``event``: the JSON) and the one of before the upgrade (``__data__``:
    FastStream's binary envelope around the JSON). Raises ``ValueError`` for anything else (an
    entry trimmed while pending in a consumer group comes back without fields)."""
    for key in _EVENT_KEYS:
        if key in fields:
            return orjson.loads(fields[key])
    for key in _LEGACY_KEYS:
        if key in fields:
            raw = fields[key]
            body, _headers = decode_faststream_binary(raw.encode() if isinstance(raw, str) else raw)
            return orjson.loads(body)
    raise ValueError(f"not an event entry: fields {sorted(map(str, fields))} (expected {REDIS_EVENT_FIELD!r})")


async def faststream_decoder(message: Any) -> dict[str, Any]:
    """A FastStream ``decoder=`` for subscribers of the Redis stream: the handler gets the envelope
    (typed by its annotation, e.g. ``brokers.envelope_model.AnyEnvelope``) instead of the entry's
    fields, for entries of either format::

        @broker.subscriber(stream=StreamSub("stories.events", group="analytics", consumer="a1"),
                           decoder=faststream_decoder)
        async def handle(envelope: dict): ...
    """
    return decode_redis_entry(message.raw_message["data"])


async def raw_events(
    url: str, prefix: str = "stories", from_start: bool = True, idle_timeout_s: float | None = None
) -> AsyncGenerator[dict[str, Any], None]:
    """Every envelope the broker delivers, duplicates included, in the broker's order.
    Ends after ``idle_timeout_s`` without a message (None: never)."""
    source = _redis_events if broker_kind(url) == "redis" else _nats_events
    async with aclosing(source(url, prefix, from_start, idle_timeout_s)) as delivered:
        async for envelope in delivered:
            yield envelope


# XREAD's reply, on a client that does not decode: [(stream, [(entry id, fields), ...])]
_XReadReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]


async def _redis_events(
    url: str, prefix: str, from_start: bool, idle_timeout_s: float | None
) -> AsyncGenerator[dict[str, Any], None]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(_redis_url(url))
    stream = redis_stream_name(prefix)
    last_id: bytes | str = "0-0" if from_start else "$"
    block_ms = 1000 if idle_timeout_s is None else max(1, int(idle_timeout_s * 1000))
    noted_legacy = False
    try:
        while True:
            reply = cast(_XReadReply, await client.xread({stream: last_id}, count=1000, block=block_ms))
            if not reply:
                if idle_timeout_s is not None:
                    return
                continue
            for _name, entries in reply:
                for entry_id, fields in entries:
                    last_id = entry_id
                    if not noted_legacy and is_legacy_entry(fields):
                        noted_legacy = True
                        log.warning(
                            "%s holds entries written before the upgrade to plain JSON (field %s, "
                            "FastStream's binary envelope; the first at entry %s): decoded as well; they "
                            "leave the stream with the retention",
                            stream,
                            LEGACY_FIELD,
                            entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
                        )
                    yield decode_redis_entry(fields)
    finally:
        await client.aclose()


async def _nats_events(
    url: str, prefix: str, from_start: bool, idle_timeout_s: float | None
) -> AsyncGenerator[dict[str, Any], None]:
    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import DeliverPolicy
    from nats.js.errors import NotFoundError

    connection = await nats.connect(url)
    try:
        js = connection.jetstream()
        waited = 0.0
        while True:  # like XREAD on a missing key: wait for the relay to create the stream
            try:
                subscription = await js.subscribe(
                    nats_subjects_wildcard(prefix),
                    stream=nats_stream_name(prefix),
                    ordered_consumer=True,
                    deliver_policy=DeliverPolicy.ALL if from_start else DeliverPolicy.NEW,
                )
                break
            except NotFoundError:
                if idle_timeout_s is not None and waited >= idle_timeout_s:
                    return
                await asyncio.sleep(0.25)
                waited += 0.25
        while True:
            try:
                message = await subscription.next_msg(timeout=idle_timeout_s or 1.0)
            except (TimeoutError, NatsTimeout):
                if idle_timeout_s is not None:
                    return
                continue
            yield orjson.loads(message.data)
    finally:
        await connection.close()


async def events(
    url: str,
    prefix: str = "stories",
    from_start: bool = True,
    idle_timeout_s: float | None = None,
    remember: int = 100_000,
) -> AsyncGenerator[dict[str, Any], None]:
    """The envelopes once each: a re-published event (same ``event_id``) is dropped. Re-publications
    are a batch repeated right after itself, so remembering the last ``remember`` ids is plenty."""
    seen: OrderedDict[str, None] = OrderedDict()
    async with aclosing(raw_events(url, prefix, from_start, idle_timeout_s)) as delivered:
        async for envelope in delivered:
            event_id = envelope["event_id"]
            if event_id in seen:
                continue
            seen[event_id] = None
            if len(seen) > remember:
                seen.popitem(last=False)
            yield envelope


async def tail(
    url: str,
    prefix: str = "stories",
    from_start: bool = False,
    limit: int | None = None,
    out: TextIO | None = None,
    idle_timeout_s: float | None = None,
) -> int:
    """Print ``<position> <event_type> <stream_id>`` per event until ``limit`` events (None: forever,
    or until ``idle_timeout_s`` passes without one); the number printed."""
    import sys

    out = out or sys.stdout
    printed = 0
    if limit is not None and limit <= 0:
        return 0
    async with aclosing(events(url, prefix, from_start, idle_timeout_s)) as delivered:
        async for envelope in delivered:
            out.write(f"{envelope['position']} {envelope['event_type']} {envelope['stream_id']}\n")
            out.flush()
            printed += 1
            if limit is not None and printed >= limit:
                break
    return printed
