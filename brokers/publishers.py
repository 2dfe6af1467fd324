"""Where the relay's events go: one publisher per broker kind, chosen by URL.

``redis://`` / ``rediss://`` / ``unix://`` → Redis Streams, stream ``<prefix>.events``.
``nats://`` / ``tls://``                   → NATS JetStream, stream ``<PREFIX>``, subjects ``<prefix>.events.<event_type>``.

Every publisher has the same small interface (``Publisher``): ``connect()``, ``publish(envelopes)``,
which returns only once the broker confirmed every message of the batch and raises otherwise,
and ``close()``. Both publish with FastStream's brokers and keep the batch in position order:

* Redis: the batch's XADDs go in one MULTI/EXEC, so the broker stores all of them, in order, or
  none (a SIGKILL mid-batch leaves no partial batch behind).
* NATS: every message carries ``Nats-Msg-Id: <event_id>`` (JetStream drops a re-publication
  within the duplicate window itself) and, after the first of a run, ``Nats-Expected-Last-Msg-Id:
  <previous event_id>``. The batch's publishes go out back to back and their acks are awaited
  together; should one fail, the server refuses every later one, so the stream never holds a
  later event before an earlier one.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Protocol
from urllib.parse import urlparse

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "stories"
DEFAULT_MAX_LEN = 1_000_000  # Redis MAXLEN ~ / JetStream max_msgs
DEFAULT_DUPLICATE_WINDOW_S = 120.0  # JetStream's own default (2 min)
DEFAULT_ACK_TIMEOUT_S = 10.0


class PublishFailed(Exception):
    """The broker did not confirm every message of a batch (some may have been stored)."""


class Publisher(Protocol):
    kind: str  # "redis" or "nats": names the relay's position

    async def connect(self) -> None: ...

    async def publish(self, envelopes: list[dict[str, Any]]) -> None:
        """Publish ``envelopes`` in this order; return once the broker confirmed all of them."""

    async def close(self) -> None: ...


def broker_kind(url: str) -> str:
    scheme = urlparse(url).scheme.lower()
    if scheme in ("redis", "rediss", "unix", "valkey", "valkeys"):
        return "redis"
    if scheme in ("nats", "tls"):
        return "nats"
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
    return "redis" + url[len("valkey"):] if url.startswith("valkey") else url


class RedisStreamPublisher:
    """XADD ``<prefix>.events MAXLEN ~ max_len * __data__ <FastStream binary envelope>``."""

    kind = "redis"

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, max_len: int | None = DEFAULT_MAX_LEN) -> None:
        from faststream.redis import RedisBroker

        self.url, self.prefix, self.max_len = _redis_url(url), prefix, max_len
        self.stream = redis_stream_name(prefix)
        self.broker = RedisBroker(self.url)
        self._client: Any = None

    async def connect(self) -> None:
        self._client = await self.broker.connect()

    async def publish(self, envelopes: list[dict[str, Any]]) -> None:
        if not envelopes:
            return
        if self._client is None:
            await self.connect()
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                for envelope in envelopes:
                    await self.broker.publish(
                        envelope, stream=self.stream, maxlen=self.max_len, pipeline=pipe,
                        correlation_id=envelope["event_id"], headers={"event_type": envelope["event_type"]},
                    )
                ids = await pipe.execute()
        except Exception as error:
            raise PublishFailed(f"XADD to {self.stream}: {error}") from error
        if len(ids) != len(envelopes) or not all(ids):
            raise PublishFailed(f"XADD to {self.stream}: {len(ids)} replies for {len(envelopes)} messages")

    async def close(self) -> None:
        await self.broker.stop()
        self._client = None


class NatsJetStreamPublisher:
    """Publish to ``<prefix>.events.<event_type>`` in stream ``<PREFIX>``, with JetStream acks."""

    kind = "nats"

    def __init__(
        self, url: str, prefix: str = DEFAULT_PREFIX, max_len: int | None = DEFAULT_MAX_LEN,
        duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S, max_age_s: float | None = None,
        ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
    ) -> None:
        from faststream.nats import NatsBroker

        self.url, self.prefix, self.max_len = url, prefix, max_len
        self.duplicate_window_s, self.max_age_s, self.ack_timeout_s = duplicate_window_s, max_age_s, ack_timeout_s
        self.stream = nats_stream_name(prefix)
        self.broker = NatsBroker(url)
        self._connected = False
        self._last_id: str | None = None  # event_id of the last message the stream confirmed, this run

    def stream_config(self):
        from nats.js.api import StorageType, StreamConfig

        return StreamConfig(
            name=self.stream, subjects=[nats_subjects_wildcard(self.prefix)], storage=StorageType.FILE,
            max_msgs=self.max_len or -1, max_age=self.max_age_s or 0, duplicate_window=self.duplicate_window_s,
        )

    async def connect(self) -> None:
        from nats.js.errors import NotFoundError

        connection = await self.broker.connect()
        js = connection.jetstream()
        config = self.stream_config()
        try:
            info = await js.stream_info(self.stream)  # also sets up nats-py's request inbox before any burst
            # Keep what operators set (replicas, placement, limits); only our settings change.
            config.num_replicas = info.config.num_replicas
            config.placement = info.config.placement
            await js.update_stream(config)
        except NotFoundError:
            await js.add_stream(config)
        self._connected, self._last_id = True, None

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
            tasks.append(asyncio.ensure_future(self.broker.publish(
                envelope, nats_subject(self.prefix, envelope["event_type"]), stream=self.stream,
                headers=headers, correlation_id=envelope["event_id"], timeout=self.ack_timeout_s,
            )))
            previous = envelope["event_id"]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException) or r is None]
        if failed:
            self._last_id = None  # the next attempt starts a new chain
            first = failed[0]
            raise PublishFailed(f"{len(failed)}/{len(envelopes)} not confirmed by {self.stream}: {first!r}") from (
                first if isinstance(first, BaseException) else None)
        self._last_id = previous

    async def close(self) -> None:
        await self.broker.stop()
        self._connected = False


def make_publisher(url: str, prefix: str = DEFAULT_PREFIX, max_len: int | None = DEFAULT_MAX_LEN, **options: Any) -> Publisher:
    """The publisher for ``url``'s broker (``redis://`` or ``nats://``)."""
    kind = broker_kind(url)
    if kind == "redis":
        return RedisStreamPublisher(url, prefix, max_len)
    return NatsJetStreamPublisher(url, prefix, max_len, **options)
