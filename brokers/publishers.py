"""Where the relay's events go: one publisher per broker kind, chosen by URL.

``redis://`` / ``rediss://`` / ``unix://`` → Redis Streams, stream ``<prefix>.events``.
``nats://`` / ``tls://``                   → NATS JetStream, stream ``<PREFIX>``, subjects ``<prefix>.events.<event_type>``.

What goes on the wire is plain JSON, nothing framework-specific (the contract's "Events"):

* Redis: each stream entry has exactly one field, ``event`` (``REDIS_EVENT_FIELD``), holding the
  envelope as UTF-8 JSON: ``XADD <prefix>.events * event <json>``, written with redis-py.
* NATS: the message body is the envelope as UTF-8 JSON, ``Nats-Msg-Id`` its ``event_id``
  (published with FastStream's NATS broker, which sends a dict as its JSON).

Every publisher has the same small interface (``Publisher``): ``connect()``, ``publish(envelopes)``,
which returns only once the broker confirmed every message of the batch and raises otherwise,
and ``close()``. Both keep the batch in position order:

* Redis: the batch's XADDs go in one MULTI/EXEC, so the broker stores all of them, in order, or
  none (a SIGKILL mid-batch leaves no partial batch behind).
  The same transaction trims the stream by age (``XTRIM <stream> MINID ~ <now - retention>``).
* NATS: every message carries ``Nats-Msg-Id: <event_id>`` (JetStream drops a re-publication
  within the duplicate window itself) and, after the first of a run, ``Nats-Expected-Last-Msg-Id:
  <previous event_id>``. The batch's publishes go out back to back and their acks are awaited
  together; should one fail, the server refuses every later one, so the stream never holds a
  later event before an earlier one. The server drops messages older than the stream's
  ``max_age`` (= the retention) by itself.

Retention is by age (``retention``, ``STORIES_BROKER_RETENTION``, default 7 days), never by a count
that traffic can outrun; ``max_len`` > 0 adds an optional count cap (an operator's safety net).
``oldest_event_age_s()`` tells how old the oldest event the broker still keeps is (the relay's
``stories_broker_oldest_event_age_seconds`` gauge); ``oldest_event_age(url, prefix)`` asks once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, cast
from urllib.parse import urlparse

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "stories"
DEFAULT_MAX_LEN = 0  # no count cap (> 0: Redis MAXLEN ~ / JetStream max_msgs as well)
DEFAULT_RETENTION = timedelta(days=7)  # Redis MINID ~ / JetStream max_age
DEFAULT_DUPLICATE_WINDOW_S = 120.0  # JetStream's own default (2 min); never above the retention
DEFAULT_ACK_TIMEOUT_S = 10.0


class PublishFailed(Exception):
    """The broker did not confirm every message of a batch (some may have been stored)."""


class Publisher(Protocol):
    kind: str  # "redis" or "nats": names the relay's position

    async def connect(self) -> None: ...

    async def publish(self, envelopes: list[dict[str, Any]]) -> None:
        """Publish ``envelopes`` in this order; return once the broker confirmed all of them."""

    async def trim(self) -> None:
        """Drop what is older than the retention now (also when nothing is published)."""

    async def oldest_event_age_s(self) -> float | None:
        """Seconds since the oldest event the broker keeps was stored; None when it keeps none."""

    async def last_position(self) -> int | None:
        """The log position of the newest event the broker holds (None: none). Optional: the relay
        goes on from there when it is past its recorded position (a batch stored, not recorded)."""

    async def close(self) -> None: ...


def retention_seconds(retention: timedelta | float | int | None) -> float:
    """``timedelta`` or seconds → seconds; None, 0 or less: 0 (no age limit)."""
    if retention is None:
        return 0.0
    seconds = retention.total_seconds() if isinstance(retention, timedelta) else float(retention)
    return max(seconds, 0.0)


def _count_cap(max_len: int | None) -> int | None:
    return max_len if max_len and max_len > 0 else None


def broker_kind(url: str) -> str:
    scheme = urlparse(url).scheme.lower()
    if scheme in ("redis", "rediss", "unix", "valkey", "valkeys"):
        return "redis"
    if scheme in ("nats", "tls"):
        return "nats"
    if scheme.endswith("+cluster"):  # the stream is one key: a cluster would hold it on one node anyway
        raise ValueError(
            f"the Redis Streams broker is one server, not a cluster ({url!r}): set STORIES_BROKER_URL "
            "to a redis://host:port (or nats://host:port)"
        )
    raise ValueError(f"unsupported broker URL {url!r}: use redis://host:port or nats://host:port")


def redis_stream_name(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}.events"


def nats_stream_name(prefix: str = DEFAULT_PREFIX) -> str:
    """``stories`` → ``STORIES`` (characters JetStream forbids in names become ``_``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", prefix).upper()


def nats_subject(prefix: str, event_type: str) -> str:
    return f"{prefix}.events.{event_type}"


def nats_subjects_wildcard(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}.events.>"


def _redis_url(url: str) -> str:
    return "redis" + url[len("valkey") :] if url.startswith("valkey") else url


REDIS_EVENT_FIELD = "event"  # the one field of each entry of ``<prefix>.events``: the envelope's JSON


def encode_envelope(envelope: dict[str, Any]) -> bytes:
    """The envelope as compact UTF-8 JSON (what both brokers carry)."""
    import orjson

    return orjson.dumps(envelope)


def redis_entry_fields(envelope: dict[str, Any]) -> dict[str, bytes]:
    """The fields of the stream entry that carries ``envelope``: ``{"event": <its JSON>}``, nothing else."""
    return {REDIS_EVENT_FIELD: encode_envelope(envelope)}


class RedisStreamPublisher:
    """XADD ``<prefix>.events * event <envelope JSON>`` (``MAXLEN ~ max_len`` only when ``max_len``
    > 0), the batch in one MULTI/EXEC that ends with ``XTRIM MINID ~ <now - retention>``. Plain
    redis-py: the entry is readable with ``XREAD`` and ``json.loads`` from any language.

    Entry ids are the Redis server's milliseconds, so the cut-off is taken on the server's clock:
    the publisher measures the offset between its clock and Redis's (``TIME``) when it connects and
    whenever it checks the oldest event. ``~`` lets Redis drop whole stream nodes only: an event is
    never dropped before it is ``retention`` old, and one node's worth of entries (at most
    ``stream-node-max-entries``, 100) may stay a little longer, until ``trim()`` (which the relay
    runs every few seconds) removes them exactly. Each approximate XTRIM does bounded work (Redis
    caps it at 100 nodes), so shortening the retention on a long stream, or the first start on a
    stream an older relay bounded by count, trims it over a few batches rather than in one long
    command."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        max_len: int | None = DEFAULT_MAX_LEN,
        retention: timedelta | float | None = DEFAULT_RETENTION,
    ) -> None:
        self.url, self.prefix = _redis_url(url), prefix
        self.max_len, self.retention_s = _count_cap(max_len), retention_seconds(retention)
        self.stream = redis_stream_name(prefix)
        self._client: Any = None
        self._clock_offset_ms = 0.0  # Redis's clock minus ours

    async def connect(self) -> None:
        """Make the client (once) and check that Redis answers (``TIME``, which also measures the
        clock offset); raises when it does not."""
        if self._client is None:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(self.url)
        await self._server_now_ms()

    async def _server_now_ms(self) -> float:
        """Redis's clock in milliseconds (and the offset to ours, for ``min_id``)."""
        before = time.time()
        seconds, micros = await self._client.time()
        server_ms = seconds * 1000 + micros / 1000
        self._clock_offset_ms = server_ms - (before + time.time()) * 500
        return server_ms

    def min_id(self) -> str | None:
        """Entries with a smaller id are older than the retention (None: no age limit)."""
        if not self.retention_s:
            return None
        cutoff = time.time() * 1000 + self._clock_offset_ms - self.retention_s * 1000
        return str(max(int(cutoff), 0))

    async def publish(self, envelopes: list[dict[str, Any]]) -> None:
        if not envelopes:
            return
        if self._client is None:
            await self.connect()
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                for envelope in envelopes:
                    pipe.xadd(self.stream, redis_entry_fields(envelope), maxlen=self.max_len, approximate=True)
                min_id = self.min_id()
                if min_id is not None:
                    pipe.xtrim(self.stream, minid=min_id, approximate=True)
                replies = await pipe.execute()
        except Exception as error:
            raise PublishFailed(f"XADD to {self.stream}: {error}") from error
        ids = replies[: len(envelopes)]
        if len(ids) != len(envelopes) or not all(ids):
            raise PublishFailed(f"XADD to {self.stream}: {len(ids)} replies for {len(envelopes)} messages")

    async def trim(self) -> None:
        """Drop every entry older than the retention, exactly. The approximate trim goes first: it
        does bounded work and removes whole nodes; once it finds none to remove, what is left
        older than the cut-off sits in one node, which the exact trim then cleans (a node is at
        most ``stream-node-max-entries`` entries: cheap). The relay calls this every few seconds,
        so the stream stays bounded by age when the traffic stops too."""
        min_id = self.min_id()
        if min_id is None:
            return
        if self._client is None:
            await self.connect()
        if not await self._client.xtrim(self.stream, minid=min_id, approximate=True):
            await self._client.xtrim(self.stream, minid=min_id, approximate=False)

    async def oldest_event_age_s(self) -> float | None:
        if self._client is None:
            await self.connect()
        first = await self._client.xrange(self.stream, "-", "+", count=1)
        now_ms = await self._server_now_ms()
        if not first:
            return None
        return max(now_ms - redis_entry_ms(first[0][0]), 0.0) / 1000

    async def last_position(self) -> int | None:
        """The log position of the newest event the stream holds (None: it holds none)."""
        from brokers.tail import decode_redis_entry

        if self._client is None:
            await self.connect()
        last = await self._client.xrevrange(self.stream, "+", "-", count=1)
        return int(decode_redis_entry(last[0][1])["position"]) if last else None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def redis_entry_ms(entry_id: bytes | str) -> int:
    """``b"1767268800123-4"`` → 1767268800123 (the milliseconds Redis stored the entry at)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


class NatsJetStreamPublisher:
    """Publish to ``<prefix>.events.<event_type>`` in stream ``<PREFIX>``, with JetStream acks.

    The stream keeps messages ``retention`` long (``max_age``) and caps their number only when
    ``max_len`` > 0 (``max_msgs``, else -1). On connect the relay creates the stream, or updates it
    keeping everything an operator may have set (replicas, placement, storage, ``max_bytes``,
    discard policy, description, ...) and setting only what the relay's settings own: subjects,
    ``max_age``, ``max_msgs`` and the duplicate window. A stream made by an older relay
    (``max_msgs`` 1,000,000, no ``max_age``) thus moves to the age policy at the first start (the
    change is logged); to cap by count, set ``STORIES_BROKER_MAX_LEN`` rather than editing the stream,
    since the relay re-applies its settings on every connect."""

    kind = "nats"

    def __init__(
        self,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        max_len: int | None = DEFAULT_MAX_LEN,
        retention: timedelta | float | None = DEFAULT_RETENTION,
        duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S,
        ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
    ) -> None:
        from faststream.nats import NatsBroker

        self.url, self.prefix = url, prefix
        self.max_len, self.retention_s = _count_cap(max_len), retention_seconds(retention)
        self.duplicate_window_s, self.ack_timeout_s = duplicate_window_s, ack_timeout_s
        self.stream = nats_stream_name(prefix)
        self.broker = NatsBroker(url)
        self._connection: Any = None
        self._connected = False
        self._last_id: str | None = None  # event_id of the last message the stream confirmed, this run

    def _owned(self) -> dict[str, Any]:
        """The stream settings the relay owns (re-applied on every connect)."""
        window = self.duplicate_window_s
        if self.retention_s:  # JetStream refuses a duplicate window longer than max_age
            window = min(window, self.retention_s)
        return {
            "subjects": [nats_subjects_wildcard(self.prefix)],
            "max_msgs": self.max_len or -1,
            "max_age": self.retention_s,
            "duplicate_window": window,
        }

    def stream_config(self, existing: Any = None):
        """A new stream's configuration, or ``existing`` with the relay's own settings applied."""
        from nats.js.api import StorageType, StreamConfig

        if existing is not None:
            return existing.evolve(**self._owned())
        return StreamConfig(name=self.stream, storage=StorageType.FILE, **self._owned())

    async def connect(self) -> None:
        from nats.js.errors import NotFoundError

        connection = await self.broker.connect()
        js = connection.jetstream()
        try:
            info = await js.stream_info(self.stream)  # also sets up nats-py's request inbox before any burst
        except NotFoundError:
            await js.add_stream(self.stream_config())
        else:
            config = self.stream_config(info.config)
            changes = {
                name: (getattr(info.config, name), getattr(config, name))
                for name in ("max_age", "max_msgs", "duplicate_window")
                if getattr(info.config, name) != getattr(config, name)
            }
            if changes:
                log.warning(
                    "JetStream stream %s: %s (STORIES_BROKER_RETENTION, STORIES_BROKER_MAX_LEN)",
                    self.stream,
                    ", ".join(f"{name} {old} -> {new}" for name, (old, new) in changes.items()),
                )
            await js.update_stream(config)
        self._connection, self._connected, self._last_id = connection, True, None

    async def publish(self, envelopes: list[dict[str, Any]]) -> None:
        if not envelopes:
            return
        if not self._connected:
            await self.connect()
        previous = self._last_id
        tasks = []
        for envelope in envelopes:  # created in order; each writes its message before its first real wait
            headers = {"Nats-Msg-Id": envelope["event_id"], "event_type": envelope["event_type"]}
            if previous is not None:
                headers["Nats-Expected-Last-Msg-Id"] = previous
            tasks.append(
                asyncio.ensure_future(
                    self.broker.publish(
                        envelope,
                        nats_subject(self.prefix, envelope["event_type"]),
                        stream=self.stream,
                        headers=headers,
                        correlation_id=envelope["event_id"],
                        timeout=self.ack_timeout_s,
                    )
                )
            )
            previous = envelope["event_id"]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException) or r is None]
        if failed:
            self._last_id = None  # the next attempt starts a new chain
            first = failed[0]
            raise PublishFailed(f"{len(failed)}/{len(envelopes)} not confirmed by {self.stream}: {first!r}") from (
                first if isinstance(first, BaseException) else None
            )
        self._last_id = previous

    async def trim(self) -> None:
        """Nothing to do: JetStream drops messages older than ``max_age`` itself."""

    async def oldest_event_age_s(self) -> float | None:
        if not self._connected:
            await self.connect()
        return await _jetstream_oldest_age(self._connection, self.stream)

    async def last_position(self) -> int | None:
        """The log position of the newest event the stream holds (None: it holds none)."""
        import orjson
        from nats.js.errors import NotFoundError

        if not self._connected:
            await self.connect()
        js = self._connection.jetstream()
        try:
            state = (await js.stream_info(self.stream)).state
            if not state.messages:
                return None
            message = await js.get_msg(self.stream, seq=state.last_seq)
        except NotFoundError:
            return None
        return int(orjson.loads(message.data)["position"])

    async def close(self) -> None:
        await self.broker.stop()
        self._connection, self._connected = None, False


async def _jetstream_oldest_age(connection: Any, stream: str, request_timeout_s: float = 2.0) -> float | None:
    """``state.first_ts`` of the stream's info (nats-py's StreamState leaves it out) → its age.
    The timestamp is the NATS server's clock, the age is taken on ours. (The request's own
    timeout, so that a slow server raises nats-py's TimeoutError as before.)"""
    reply = await connection.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=request_timeout_s)
    info = json.loads(reply.data)
    if "error" in info:
        raise RuntimeError(f"JetStream stream info {stream}: {info['error']}")
    state = info.get("state") or {}
    if not state.get("messages") or not state.get("first_ts"):
        return None
    first = _parse_rfc3339(state["first_ts"])
    return max((datetime.now(UTC) - first).total_seconds(), 0.0)


def _parse_rfc3339(text: str) -> datetime:
    """NATS's timestamps carry nanoseconds; Python keeps microseconds."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.strip()).replace("Z", "+00:00")
    return datetime.fromisoformat(text)


async def oldest_event_age(url: str, prefix: str = DEFAULT_PREFIX) -> float | None:
    """Seconds since the oldest event ``url``'s broker keeps under ``prefix`` was stored (None:
    none kept). One-off, for tooling; the relay exports it as ``stories_broker_oldest_event_age_seconds``."""
    if broker_kind(url) == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(_redis_url(url))
        try:
            first = await client.xrange(redis_stream_name(prefix), "-", "+", count=1)
            seconds, micros = await client.time()
        finally:
            await client.aclose()
        if not first:
            return None
        entry_id = cast(bytes, first[0][0])  # an entry's id is never None (its fields may be)
        return max(seconds * 1000 + micros / 1000 - redis_entry_ms(entry_id), 0.0) / 1000
    import nats

    connection = await nats.connect(url)
    try:
        return await _jetstream_oldest_age(connection, nats_stream_name(prefix))
    finally:
        await connection.close()


def make_publisher(
    url: str,
    prefix: str = DEFAULT_PREFIX,
    max_len: int | None = DEFAULT_MAX_LEN,
    retention: timedelta | float | None = DEFAULT_RETENTION,
    **options: Any,
) -> Publisher:
    """The publisher for ``url``'s broker (``redis://`` or ``nats://``): events kept ``retention``
    long (None or 0: no age limit), at most ``max_len`` of them when it is > 0."""
    kind = broker_kind(url)
    if kind == "redis":
        return RedisStreamPublisher(url, prefix, max_len, retention)
    return NatsJetStreamPublisher(url, prefix, max_len, retention, **options)
