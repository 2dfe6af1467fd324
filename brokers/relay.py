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

One relay publishes at a time: each holds a lease in the Redis its position lives in
(``<prefix>relay:lease:<redis|nats>``, ``SET NX PX``, renewed every third of
``STORIES_RELAY_LEASE_TTL_S`` while it runs). A second relay started against the same broker
waits as a standby and takes over once the lease lapses (the active one died) or is released
(the active one stopped). A relay that cannot renew stops publishing before its lease can lapse.
Whoever starts publishing (a standby taking over, a restart) first asks the broker for the
position of the last event it holds and goes on from there when that is past the recorded
position, so a batch the broker stored just before its relay died is not published again.

Brokers keep events by age (``STORIES_BROKER_RETENTION``). Every ``maintain_every_s`` (5 s), also
while the log is idle, the relay trims the broker by age (Redis; JetStream does it itself) and
refreshes ``stories_broker_oldest_event_age_seconds`` on its registry (``RelayMetrics``), which
``stories relay --metrics-port N`` (or ``STORIES_RELAY_PORT``) serves at ``/metrics``. Every
``maintain_every_s`` too (a standby included, from the recorded position) it measures how far the
broker is behind the log (``brokers/lag.py``): ``stories_relay_lag_events`` (log head − the
broker's last position) and ``stories_relay_lag_seconds`` (now − ``occurred_at`` of the oldest
event not yet published; 0 when caught up).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from prometheus_client import CollectorRegistry, Gauge

from brokers.lag import Lag, measure, utc_now
from brokers.publishers import DEFAULT_MAX_LEN, DEFAULT_RETENTION, Publisher, broker_kind, make_publisher
from commands.event_store import EventStore, LoggedEvent

log = logging.getLogger(__name__)

_SET_IF_GREATER = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end
return current
"""


_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_STEAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end
return 0
"""


def _local_id() -> str | None:
    """This kernel boot and PID namespace, hashed: two tokens with the same id and host name
    name processes that can see each other's pids. None where Linux does not tell."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return hashlib.sha1(f"{boot} {namespace}".encode()).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: alive
        return True
    return True


def position_key(redis_prefix: str, broker_kind: str) -> str:
    """``stories:`` + ``redis`` → ``stories:relay:position:redis``."""
    prefix = redis_prefix if redis_prefix.endswith((":", ".")) or not redis_prefix else redis_prefix + ":"
    return f"{prefix}relay:position:{broker_kind}"


def lease_key(redis_prefix: str, broker_kind: str) -> str:
    """``stories:`` + ``redis`` → ``stories:relay:lease:redis`` (next to the position it guards)."""
    prefix = redis_prefix if redis_prefix.endswith((":", ".")) or not redis_prefix else redis_prefix + ":"
    return f"{prefix}relay:lease:{broker_kind}"


class RedisLease:
    """The right to publish: ``SET key <token> NX PX ttl`` takes it, a compare-and-``PEXPIRE``
    renews it, a compare-and-``DEL`` gives it back. ``held()`` turns false a fifth of the TTL
    before Redis would let it lapse, so a relay that could not renew stops first.

    The token is ``<host>:<pid>:<boot and pid namespace>:<random>``: a relay that finds the lease
    held by a process of its own machine and PID namespace that no longer exists (a relay killed
    and restarted, as ``stories run`` does) takes it over at once instead of waiting the TTL out."""

    def __init__(self, url: str, key: str, ttl_s: float = 10.0, token: str | None = None) -> None:
        from stories.backends import connect_async_redis

        self.key, self.ttl_s = key, float(ttl_s)
        self._host, self._local = socket.gethostname().replace(":", "_"), _local_id()
        self.token = token or f"{self._host}:{os.getpid()}:{self._local or '-'}:{uuid.uuid4().hex[:8]}"
        timeout = max(min(self.ttl_s / 4, 2.0), 0.1)
        # One server or a cluster (a single-key lease: any slot will do).
        self._client = connect_async_redis(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        self._renew = self._client.register_script(_RENEW)
        self._release = self._client.register_script(_RELEASE)
        self._steal = self._client.register_script(_STEAL)
        self._valid_until = 0.0  # time.monotonic() up to which we may publish

    def held(self) -> bool:
        return time.monotonic() < self._valid_until

    def _granted(self, asked_at: float) -> None:
        self._valid_until = asked_at + self.ttl_s * 0.8

    def _dead(self, holder: str) -> bool:
        """Whether ``holder`` names a process of this machine and PID namespace that is gone."""
        parts = holder.split(":")
        if self._local is None or len(parts) != 4 or parts[0] != self._host or parts[2] != self._local:
            return False
        try:
            pid = int(parts[1])
        except ValueError:
            return False
        return pid != os.getpid() and not _pid_alive(pid)

    async def acquire(self) -> bool:
        """Take the lease if it is free, ours already, or its holder is known dead; whether we hold it now."""
        asked_at, ms = time.monotonic(), max(int(self.ttl_s * 1000), 1)
        if await self._client.set(self.key, self.token, nx=True, px=ms) or await self._renew(
            keys=[self.key], args=[self.token, ms]
        ):
            self._granted(asked_at)
            return True
        holder = await self.holder()
        if (
            holder is not None
            and self._dead(holder)
            and await self._steal(keys=[self.key], args=[holder, self.token, ms])
        ):
            log.info("relay %s took over the lease of %s, which is gone", self.token, holder)
            self._granted(asked_at)
            return True
        self._valid_until = 0.0
        return False

    async def renew(self) -> bool:
        """Extend the lease; False (and not held any more) when it is someone else's."""
        asked_at = time.monotonic()
        if await self._renew(keys=[self.key], args=[self.token, max(int(self.ttl_s * 1000), 1)]):
            self._granted(asked_at)
            return True
        self._valid_until = 0.0
        return False

    async def holder(self) -> str | None:
        value = cast(bytes | None, await self._client.get(self.key))  # the client does not decode
        return value.decode() if value else None

    async def release(self) -> None:
        self._valid_until = 0.0
        await self._release(keys=[self.key], args=[self.token])

    async def close(self) -> None:
        await self._client.aclose()


class PositionStore(Protocol):
    async def get(self) -> int:
        """The position of the last event the broker confirmed (0 when none)."""

    async def save(self, position: int) -> None:
        """Record ``position``; it never moves backwards."""

    async def close(self) -> None: ...


class RedisPositionStore:
    """The relay's position in one Redis key (only ever moved forward, by a tiny Lua script)."""

    def __init__(self, url: str, key: str) -> None:
        from stories.backends import connect_async_redis

        self.key = key
        self._client = connect_async_redis(url)  # one server or a cluster: one key
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
        self.position = Gauge(
            "stories_relay_position", "last log position the broker confirmed", registry=self.registry
        )
        self.active = Gauge(
            "stories_relay_active",
            "1 while this relay holds the lease and publishes, 0 while it waits as a standby",
            registry=self.registry,
        )
        self.lag_events = Gauge(
            "stories_relay_lag_events",
            "how far the broker is behind the log, in log positions: log head - the last position the "
            "broker holds (0 when no event is missing)",
            registry=self.registry,
        )
        self.lag_seconds = Gauge(
            "stories_relay_lag_seconds",
            "now - occurred_at of the oldest event the broker does not hold yet (0 when caught up)",
            registry=self.registry,
        )


class Relay:
    def __init__(
        self,
        store: EventStore,
        publisher: Publisher,
        position_store: PositionStore,
        platform: str,
        batch_size: int = 500,
        idle_wait_s: float = 0.05,
        batch_pause_s: float = 0.0,
        metrics: RelayMetrics | None = None,
        maintain_every_s: float = 5.0,
        lease: RedisLease | None = None,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store, self.publisher, self.positions = store, publisher, position_store
        self.lease = lease
        self._active = False
        self.platform = str(platform)
        self.batch_size, self.idle_wait_s, self.batch_pause_s = batch_size, idle_wait_s, batch_pause_s
        self.position: int | None = None  # the last position the broker confirmed (None: re-read it)
        self.published = 0
        self.metrics = metrics or RelayMetrics()
        self.metrics.position.set_function(lambda: self.position or 0)
        self.metrics.active.set_function(lambda: 1.0 if self.lease is None or self.lease.held() else 0.0)
        self.maintain_every_s = maintain_every_s
        self._next_maintenance = 0.0  # time.monotonic() of the next maintain()
        self._next_lag = 0.0  # time.monotonic() of the next measure_lag()
        self.now = now  # for the lag in seconds (occurred_at is on the domain's clock)
        # The log's recorders are blocking: read them off the event loop, always from one thread.
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="relay-read")

    async def _read(self, after: int) -> tuple[list[LoggedEvent], int]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, self.store.read_batch, after, self.batch_size)

    async def start_position(self) -> int:
        """Where to go on from: the recorded position, or the position of the last event the
        broker holds when that is further (the relay died after the broker stored a batch and
        before it recorded it: publishing it again would duplicate it)."""
        recorded = await self.positions.get()
        last_position = getattr(self.publisher, "last_position", None)
        published = await last_position() if last_position is not None else None
        if published is not None and published > recorded:
            log.info(
                "the broker already holds events up to position %d (recorded: %d): going on from there",
                published,
                recorded,
            )
            await self.positions.save(published)
            return published
        return recorded

    async def run_once(self) -> int:
        """Publish one batch; the number of log rows it covered (0 when caught up)."""
        if self.position is None:
            self.position = await self.start_position()
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

    async def measure_lag(self) -> Lag | None:
        """Measure how far the broker is behind the log and set the lag gauges; the lag (None:
        the log or the position could not be read; the gauges stay as they were). From the
        position the broker confirmed, or the recorded one while this relay has none (a standby)."""
        self._next_lag = time.monotonic() + self.maintain_every_s
        try:
            position = self.position if self.position is not None else await self.positions.get()
            loop = asyncio.get_running_loop()
            lag = await loop.run_in_executor(self._reader, measure, self.store, position, self.now)
        except Exception as error:
            log.warning("relay cannot measure its lag: %s", error)
            return None
        self.metrics.lag_events.set(lag.events)
        self.metrics.lag_seconds.set(lag.seconds)
        return lag

    async def catch_up(self, until: int | None = None) -> None:
        """Publish everything up to ``until`` (default: the head when called)."""
        until = self.store.head() if until is None else until
        if self.position is None:
            self.position = await self.start_position()
        while self.position < until and await self.run_once():
            pass

    async def keep_lease(self, stop: asyncio.Event | threading.Event) -> None:
        """Take the lease when it is free, renew it every third of its TTL while we hold it."""
        assert self.lease is not None
        while not stop.is_set():
            try:
                if self.lease.held():
                    if not await self.lease.renew():
                        log.warning("relay lost its lease to %s: standing by", await self.lease.holder())
                elif await self.lease.acquire():
                    log.info("relay holds the lease (%s): publishing", self.lease.token)
            except Exception as error:  # Redis unreachable: the lease lapses on its own if this lasts
                log.warning("relay cannot reach its lease in Redis: %s", error)
            await _wait(stop, self.lease.ttl_s / 3 if self.lease.held() else min(self.lease.ttl_s / 5, 1.0))

    async def run_forever(self, stop: asyncio.Event | threading.Event) -> None:
        """Follow the log until ``stop`` is set; back off while the log or the broker is unreachable.
        With a lease, publish only while holding it (a standby waits)."""
        keeper = asyncio.create_task(self.keep_lease(stop)) if self.lease is not None else None
        try:
            await self._follow(stop)
        finally:
            if keeper is not None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await keeper
                with contextlib.suppress(Exception):
                    if self.lease is not None:  # (it is: the keeper ran on it)
                        await self.lease.release()  # a standby takes over at once

    async def _follow(self, stop: asyncio.Event | threading.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            if self.lease is not None and not self.lease.held():
                if self._active:
                    log.warning("relay does not hold its lease any more: standing by")
                self._active, self.position = False, None  # re-read where to go on from when active again
                if time.monotonic() >= self._next_lag:
                    await self.measure_lag()
                await _wait(stop, 0.05)
                continue
            self._active = True
            if time.monotonic() >= self._next_lag:
                await self.measure_lag()
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
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    else:
        await asyncio.sleep(seconds)


async def run_relay(
    event_store_url: str,
    broker_url: str,
    platform: str,
    *,
    prefix: str = "stories",
    position_redis_url: str | None = None,
    position_key_prefix: str = "stories:",
    batch_size: int = 500,
    max_len: int | None = DEFAULT_MAX_LEN,
    retention: timedelta | float | None = DEFAULT_RETENTION,
    batch_pause_s: float = 0.0,
    stop: asyncio.Event | None = None,
    metrics: RelayMetrics | None = None,
    lease_ttl_s: float | None = 10.0,
    ops_port: int | None = None,
    ops_host: str = "127.0.0.1",
    master_keys: str | None = None,
    **publisher_options: Any,
) -> Relay:
    """The relay process: follow ``event_store_url`` into ``broker_url`` until ``stop`` is set.

    Its position lives in Redis under ``<position_key_prefix>relay:position:<redis|nats>``, on
    ``position_redis_url`` (default: the broker itself when it is Redis). The broker keeps events
    ``retention`` long (Redis MINID ~, JetStream max_age; None or 0: no age limit); ``max_len`` > 0
    adds a count cap (Redis MAXLEN ~, JetStream max_msgs), 0 or None: none.

    It publishes only while it holds the lease (``lease_ttl_s``; None or 0: no lease, for one-off
    runs), kept next to its position. ``ops_port``: serve /health, /ready (the log, the position's
    Redis and the broker reachable) and /metrics there."""
    kind = broker_kind(broker_url)
    if position_redis_url is None:
        if kind != "redis":
            raise ValueError("the NATS relay keeps its position in Redis: give position_redis_url (STORIES_REDIS_URL)")
        position_redis_url = broker_url
    stop = stop or asyncio.Event()
    store = EventStore(event_store_url, master_keys=master_keys)  # reads only: seals nothing
    publisher = make_publisher(broker_url, prefix, max_len or None, retention, **publisher_options)
    positions = RedisPositionStore(position_redis_url, position_key(position_key_prefix, kind))
    lease = RedisLease(position_redis_url, lease_key(position_key_prefix, kind), lease_ttl_s) if lease_ttl_s else None
    relay = Relay(
        store, publisher, positions, platform, batch_size, batch_pause_s=batch_pause_s, metrics=metrics, lease=lease
    )
    from stories.supervisor import serve_ops

    ops = serve_ops(
        "relay",
        ops_host,
        ops_port,
        relay.metrics.registry,
        {
            "event_store": store.head,
            "position_redis": redis_check(position_redis_url),
            "broker": broker_check(broker_url),
        },
    )
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
        if ops is not None:
            ops.stop()
        relay.close()
        await publisher.close()
        await positions.close()
        if lease is not None:
            await lease.close()
        store.close()
    return relay


def redis_check(url: str, timeout_s: float = 2.0):
    """A blocking check that the Redis at ``url`` answers PING (for /ready)."""
    from brokers.publishers import _redis_url
    from stories.backends import connect_redis

    client = connect_redis(_redis_url(url), socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    return client.ping


def broker_check(url: str, timeout_s: float = 2.0):
    """A blocking check that the broker answers: PING for Redis; for NATS, the server's INFO
    greeting on a fresh connection (the first server of the URL)."""
    if broker_kind(url) == "redis":
        return redis_check(url, timeout_s)
    from urllib.parse import urlparse

    first = urlparse(url.split(",")[0].strip())
    host, port = first.hostname or "127.0.0.1", first.port or 4222

    def check() -> None:
        with socket.create_connection((host, port), timeout=timeout_s) as conn:
            conn.settimeout(timeout_s)
            if not conn.recv(5).startswith(b"INFO"):
                raise ConnectionError("no INFO greeting from the NATS server")

    return check
