"""The relay: the event log to a message broker, at least once, in log order.

Like the projection runner (``projections/runner.py``) it follows the log in batches from a
position of its own. For each batch it

1. reads up to ``batch_size`` log rows after its position (``EventStore.read_batch``),
2. publishes their envelopes in position order and waits until the broker confirmed every one
   (``Publisher.publish``),
3. only then records the batch's end position (``PositionStore.save``).

Killed at any point (SIGKILL included) it restarts from the last recorded position, so nothing
is lost; the batch in flight may be published again, and consumers deduplicate on ``event_id``
(JetStream also drops re-publications within its duplicate window, on ``Nats-Msg-Id``). Losing
the recorded position altogether is safe too: the relay then re-publishes from the start.

Brokers keep events by age (``STORIES_BROKER_RETENTION``). Every ``maintain_every_s`` (5 s), also
while the log is idle, the relay trims the broker by age (Redis; JetStream does it itself) and
refreshes ``stories_broker_oldest_event_age_seconds`` on its registry (``RelayMetrics``), which
``python -m brokers relay --metrics-port N`` serves at ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge

from commands.event_store import EventStore, LoggedEvent
from brokers.publishers import DEFAULT_MAX_LEN, DEFAULT_RETENTION, Publisher, broker_kind, make_publisher

log = logging.getLogger(__name__)

_SET_IF_GREATER = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end
return current
"""


def position_key(redis_prefix: str, broker_kind: str) -> str:
    """``stories:`` + ``redis`` → ``stories:relay:position:redis``."""
    prefix = redis_prefix if redis_prefix.endswith((":", ".")) or not redis_prefix else redis_prefix + ":"
    return f"{prefix}relay:position:{broker_kind}"


class PositionStore(Protocol):
    async def get(self) -> int:
        """The position of the last event the broker confirmed (0 when none)."""

    async def save(self, position: int) -> None:
        """Record ``position``; it never moves backwards."""

    async def close(self) -> None: ...


class RedisPositionStore:
    """The relay's position in one Redis key (only ever moved forward, by a tiny Lua script)."""

    def __init__(self, url: str, key: str) -> None:
        import redis.asyncio as aioredis

        self.key = key
        self._client = aioredis.Redis.from_url(url)
        self._set = self._client.register_script(_SET_IF_GREATER)

    async def get(self) -> int:
        value = await self._client.get(self.key)
        return int(value) if value else 0

    async def save(self, position: int) -> None:
        await self._set(keys=[self.key], args=[position])

    async def close(self) -> None:
        await self._client.aclose()


class MemoryPositionStore:
    """For tests and one-off runs: forgets the position when the process ends."""

    def __init__(self, position: int = 0) -> None:
        self.position = position

    async def get(self) -> int:
        return self.position

    async def save(self, position: int) -> None:
        self.position = max(self.position, position)

    async def close(self) -> None:
        pass


class RelayMetrics:
    """The relay's Prometheus gauges, on a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.oldest_event_age = Gauge(
            "stories_broker_oldest_event_age_seconds",
            "age of the oldest event the broker still keeps (0: none); about the retention in steady "
            "state, so a consumer further behind than this has lost events",
            registry=self.registry,
        )
        self.position = Gauge("stories_relay_position", "last log position the broker confirmed",
                              registry=self.registry)


class Relay:
    def __init__(
        self, store: EventStore, publisher: Publisher, position_store: PositionStore, platform: str,
        batch_size: int = 500, idle_wait_s: float = 0.05, batch_pause_s: float = 0.0,
        metrics: RelayMetrics | None = None, maintain_every_s: float = 5.0,
    ) -> None:
        self.store, self.publisher, self.positions = store, publisher, position_store
        self.platform = str(platform)
        self.batch_size, self.idle_wait_s, self.batch_pause_s = batch_size, idle_wait_s, batch_pause_s
        self.position: int | None = None  # the last position the broker confirmed (None: re-read it)
        self.published = 0
        self.metrics = metrics or RelayMetrics()
        self.metrics.position.set_function(lambda: self.position or 0)
        self.maintain_every_s = maintain_every_s
        self._next_maintenance = 0.0  # time.monotonic() of the next maintain()
        # The log's recorders are blocking: read them off the event loop, always from one thread.
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="relay-read")

    async def _read(self, after: int) -> tuple[list[LoggedEvent], int]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, self.store.read_batch, after, self.batch_size)

    async def run_once(self) -> int:
        """Publish one batch; the number of log rows it covered (0 when caught up)."""
        if self.position is None:
            self.position = await self.positions.get()
        start = self.position
        events, reached = await self._read(start)
        if reached == start:
            return 0
        if events:
            await self.publisher.publish([e.envelope(self.platform) for e in events])
        await self.positions.save(reached)  # only now: the broker confirmed every event up to ``reached``
        self.position = reached
        self.published += len(events)
        return reached - start

    async def maintain(self) -> float | None:
        """Trim the broker by age and refresh the oldest-event gauge; the age (None: nothing kept).
        Failures are logged and leave the gauge as it was: publishing goes on regardless."""
        self._next_maintenance = time.monotonic() + self.maintain_every_s
        try:
            trim = getattr(self.publisher, "trim", None)
            if trim is not None:
                await trim()
            oldest = getattr(self.publisher, "oldest_event_age_s", None)
            if oldest is None:
                return None
            age = await oldest()
        except Exception as error:
            log.warning("relay cannot trim or inspect %s: %s", self.publisher.kind, error)
            return None
        self.metrics.oldest_event_age.set(age or 0.0)
        return age

    async def catch_up(self, until: int | None = None) -> None:
        """Publish everything up to ``until`` (default: the head when called)."""
        until = self.store.head() if until is None else until
        if self.position is None:
            self.position = await self.positions.get()
        while self.position < until and await self.run_once():
            pass

    async def run_forever(self, stop: asyncio.Event | threading.Event) -> None:
        """Follow the log until ``stop`` is set; back off while the log or the broker is unreachable."""
        backoff = 0.1
        while not stop.is_set():
            if time.monotonic() >= self._next_maintenance:
                await self.maintain()
            try:
                covered = await self.run_once()
                backoff = 0.1
                if not covered:
                    await _wait(stop, self.idle_wait_s)
                elif self.batch_pause_s:
                    await _wait(stop, self.batch_pause_s)
            except Exception as error:  # retry from the recorded position (the batch may be re-published)
                log.warning("relay to %s paused: %s", self.publisher.kind, error)
                self.position = None
                await _wait(stop, backoff)
                backoff = min(backoff * 2, 5.0)

    def close(self) -> None:
        self._reader.shutdown(wait=True)


async def _wait(stop: Any, seconds: float) -> None:
    if isinstance(stop, asyncio.Event):
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass
    else:
        await asyncio.sleep(seconds)


async def run_relay(
    event_store_url: str, broker_url: str, platform: str, *, prefix: str = "stories",
    position_redis_url: str | None = None, position_key_prefix: str = "stories:", batch_size: int = 500,
    max_len: int | None = DEFAULT_MAX_LEN, retention: timedelta | float | None = DEFAULT_RETENTION,
    batch_pause_s: float = 0.0, stop: asyncio.Event | None = None, metrics: RelayMetrics | None = None,
    **publisher_options: Any,
) -> Relay:
    """The relay process: follow ``event_store_url`` into ``broker_url`` until ``stop`` is set.

    Its position lives in Redis under ``<position_key_prefix>relay:position:<redis|nats>``, on
    ``position_redis_url`` (default: the broker itself when it is Redis). The broker keeps events
    ``retention`` long (Redis MINID ~, JetStream max_age; None or 0: no age limit); ``max_len`` > 0
    adds a count cap (Redis MAXLEN ~, JetStream max_msgs), 0 or None: none."""
    kind = broker_kind(broker_url)
    if position_redis_url is None:
        if kind != "redis":
            raise ValueError("the NATS relay keeps its position in Redis: give position_redis_url (STORIES_REDIS_URL)")
        position_redis_url = broker_url
    stop = stop or asyncio.Event()
    store = EventStore(event_store_url)
    publisher = make_publisher(broker_url, prefix, max_len or None, retention, **publisher_options)
    positions = RedisPositionStore(position_redis_url, position_key(position_key_prefix, kind))
    relay = Relay(store, publisher, positions, platform, batch_size, batch_pause_s=batch_pause_s, metrics=metrics)
    try:
        while not stop.is_set():  # the broker may not be up yet
            try:
                await publisher.connect()
                break
            except Exception as error:
                log.warning("relay cannot reach %s yet: %s", kind, error)
                await _wait(stop, 1.0)
        log.info("relay following the log into %s (%s, from position %s)", kind, prefix, await positions.get())
        await relay.run_forever(stop)
    finally:
        relay.close()
        await publisher.close()
        await positions.close()
        store.close()
    return relay
