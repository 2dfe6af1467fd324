"""``python -m brokers`` (or ``stories relay``): the relay process alone, from the settings.

It follows the log (STORIES_EVENT_STORE_URL) into STORIES_BROKER_URL (``redis://...``: Redis
Streams, ``nats://...``: JetStream; default: STORIES_REDIS_URL), its position in STORIES_REDIS_URL
(else the Redis broker) under STORIES_REDIS_PREFIX, with STORIES_BROKER_PREFIX,
STORIES_BROKER_RETENTION, STORIES_BROKER_MAX_LEN, STORIES_RELAY_BATCH, STORIES_RELAY_LEASE_TTL_S and
its /health /ready /metrics on STORIES_RELAY_PORT (STORIES_HOST). ``stories relay --help`` lists
the options that override them; ``stories tail`` and ``stories asyncapi`` are the subscriber and
the spec.

    STORIES_BROKER_URL=redis://127.0.0.1:6379/0 python -m brokers
    STORIES_BROKER_URL=nats://127.0.0.1:4222 STORIES_REDIS_URL=redis://127.0.0.1:6379/0 python -m brokers
    STORIES_BROKER_RETENTION=3d STORIES_RELAY_PORT=9187 python -m brokers   # keep 3 days; serve the ops port
"""

from __future__ import annotations

import asyncio
import signal
import sys

from stories.process import configure_logging, process_clock, service_settings
from stories.settings import Settings


def main(settings: Settings | None = None, batch_pause_s: float = 0.0) -> int:
    """Run the relay from ``settings`` (default: the ``STORIES_*`` environment) until SIGINT or
    SIGTERM; ``batch_pause_s``: sleep between batches (a throttle). Exit status 2 without a
    broker, or with NATS and no Redis for the relay's position."""
    from stories.auth import dev_bind_problem
    from stories.embedded import resolve_urls
    from stories.process import refuse

    configure_logging()
    if settings is None:
        settings = service_settings()
    else:
        problem = dev_bind_problem(settings)
        if problem:
            refuse(problem)
    process_clock(settings)  # refused here rather than in a child that would restart forever
    settings = resolve_urls(settings)  # a running `stories run` with this data dir lends its servers
    broker_url = settings.broker_url or settings.redis_url
    if not broker_url:
        print("no broker: set STORIES_BROKER_URL or --broker-url (redis://... or nats://...)", file=sys.stderr)
        return 2

    from brokers.publishers import broker_kind
    from brokers.relay import RelayMetrics, run_relay

    position_url = settings.redis_url
    if position_url is None and broker_kind(broker_url) != "redis":
        print(
            "the NATS relay keeps its position in Redis: set STORIES_REDIS_URL or --position-redis-url", file=sys.stderr
        )
        return 2
    event_store_url = settings.event_store_url
    assert event_store_url is not None  # Settings fills it in
    metrics = RelayMetrics()

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_relay(
            event_store_url,
            broker_url,
            settings.platform.value,
            prefix=settings.broker_prefix,
            position_redis_url=position_url,
            position_key_prefix=settings.redis_prefix,
            batch_size=settings.relay_batch,
            max_len=settings.broker_max_len,
            retention=settings.broker_retention,
            batch_pause_s=batch_pause_s,
            stop=stop,
            metrics=metrics,
            lease_ttl_s=settings.relay_lease_ttl_s or None,
            ops_port=settings.relay_port,
            ops_host=settings.host,
            master_keys=settings.master_keys,
        )

    asyncio.run(_run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
