"""How far the broker is behind the log: the relay's ``stories_relay_lag_events`` /
``stories_relay_lag_seconds`` gauges and ``stories tail --lag`` measure it the same way.

* **events**: the log's head minus the last position the broker holds (positions, so internal
  records the relay skips count too: an upper bound on the domain events missing); 0 when no
  domain event after that position is missing (the log may end with internal records);
* **seconds**: now minus ``occurred_at`` of the oldest domain event the broker does not hold yet
  (0 when caught up).

``measure(store, position, now)`` reads the log (blocking: the relay runs it on its reader
thread); ``broker_last_position(url, prefix)`` asks the broker itself for the position of the
newest event it holds (Redis: the last stream entry's envelope; NATS: the stream's last message),
without creating or changing anything; ``lag_report`` puts both together for ``stories tail --lag``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from brokers.publishers import _redis_url, broker_kind, nats_stream_name, redis_stream_name

SCAN_ROWS = 100  # log rows read at a time looking for the oldest missing domain event


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Lag:
    head: int  # the log's newest position
    position: int | None  # the last position the broker holds (None: it holds nothing)
    events: int  # head - position, 0 when no domain event after position is missing
    seconds: float  # now - occurred_at of the oldest missing event, 0 when none is missing
    oldest_missing: datetime | None  # occurred_at of that event
    oldest_missing_position: int | None


def measure(store: Any, position: int | None, now: Callable[[], datetime] = utc_now) -> Lag:
    """The lag of a broker that holds the log up to ``position`` (None or 0: nothing). Blocking."""
    head = store.head()
    after = position or 0
    if after >= head:
        return Lag(head, position, 0, 0.0, None, None)
    cursor = after
    while cursor < head:
        events, reached = store.read_batch(cursor, SCAN_ROWS)
        if events:
            first = events[0]
            occurred = first.event.occurred_at
            seconds = max((now() - occurred).total_seconds(), 0.0)
            return Lag(head, position, head - after, seconds, occurred, first.position)
        if reached == cursor:
            break
        cursor = reached
    return Lag(head, position, 0, 0.0, None, None)  # only internal records after it


async def broker_last_position(url: str, prefix: str = "stories") -> int | None:
    """The log position of the newest event ``url``'s broker holds under ``prefix`` (None: none,
    or no stream yet). Read-only."""
    import orjson

    if broker_kind(url) == "redis":
        import redis.asyncio as aioredis

        from brokers.tail import decode_redis_entry

        client = aioredis.Redis.from_url(_redis_url(url))
        try:
            last = await client.xrevrange(redis_stream_name(prefix), "+", "-", count=1)
        finally:
            await client.aclose()
        if not last:
            return None
        # XREVRANGE gives every entry its fields (only a consumer group's reply can lack them)
        return int(decode_redis_entry(cast("dict[bytes, bytes]", last[0][1]))["position"])
    import nats
    from nats.js.errors import NotFoundError

    connection = await nats.connect(url)
    try:
        js = connection.jetstream()
        stream = nats_stream_name(prefix)
        try:
            state = (await js.stream_info(stream)).state
            if not state.messages:
                return None
            message = await js.get_msg(stream, seq=state.last_seq)
        except NotFoundError:
            return None
        return int(orjson.loads(cast(bytes, message.data))["position"])  # the relay never publishes an empty body
    finally:
        await connection.close()


async def lag_report(
    event_store_url: str,
    broker_url: str,
    prefix: str = "stories",
    now: Callable[[], datetime] = utc_now,
    store: Any = None,
    *,
    master_keys: str | None = None,
) -> Lag:
    """Ask the broker for its last position, then the log for how far ahead it is."""
    position = await broker_last_position(broker_url, prefix)
    if store is not None:  # a command-line tool: reading the log inline is fine
        return measure(store, position, now)
    from commands.event_store import EventStore

    own = EventStore(event_store_url, master_keys=master_keys)
    try:
        return measure(own, position, now)
    finally:
        own.close()


def format_lag(lag: Lag) -> str:
    """One line: ``head=<n> broker=<n|-> lag_events=<n> lag_seconds=<s.s> oldest_missing=<iso|->``."""
    broker = "-" if lag.position is None else str(lag.position)
    oldest = "-" if lag.oldest_missing is None else lag.oldest_missing.isoformat()
    return (
        f"head={lag.head} broker={broker} lag_events={lag.events} lag_seconds={lag.seconds:.1f} oldest_missing={oldest}"
    )


async def print_lag(
    event_store_url: str,
    broker_url: str,
    prefix: str = "stories",
    out: Any = None,
    follow: bool = False,
    interval_s: float = 5.0,
    times: int | None = None,
    *,
    master_keys: str | None = None,
) -> int:
    """Print ``format_lag`` once, or every ``interval_s`` with ``follow`` (``times`` lines at most,
    None: until interrupted); the number of lines printed."""
    import sys

    from commands.event_store import EventStore

    out = out or sys.stdout
    store = EventStore(event_store_url, master_keys=master_keys)
    printed = 0
    try:
        while True:
            out.write(format_lag(await lag_report(event_store_url, broker_url, prefix, store=store)) + "\n")
            out.flush()
            printed += 1
            if not follow or (times is not None and printed >= times):
                return printed
            await asyncio.sleep(interval_s)
    finally:
        store.close()
