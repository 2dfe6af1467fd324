"""``python -m brokers relay|tail|asyncapi``: the relay process, the example subscriber, the spec.

Defaults come from the ``STORIES_*`` settings (``stories/settings.py``); every option overrides.

    python -m brokers relay --broker-url redis://127.0.0.1:6379/0
    python -m brokers relay --broker-url nats://127.0.0.1:4222 --position-redis-url redis://127.0.0.1:6379/0
    python -m brokers relay --retention 3d --port 9187             # keep 3 days; serve /health /ready /metrics
    python -m brokers tail --broker-url nats://127.0.0.1:4222 --from-start --limit 20
    python -m brokers tail --lag [--follow --interval 5]           # how far the broker is behind the log
    python -m brokers asyncapi > asyncapi.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys


def _settings():
    from stories.embedded import resolve_urls
    from stories.settings import Settings

    return resolve_urls(Settings())  # a running `stories run` with this data dir lends its servers


def _duration(text: str):
    """``604800``, ``7d`` / ``12h`` / ``30m`` / ``10s`` or ISO 8601 (``P7D``), as STORIES_BROKER_RETENTION."""
    from datetime import timedelta

    from pydantic import TypeAdapter, ValidationError

    value = text.strip().lower()
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    try:
        if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
            return timedelta(seconds=float(value[:-1]) * units[value[-1]])
        if value.replace(".", "", 1).isdigit():
            return timedelta(seconds=float(value))
        return TypeAdapter(timedelta).validate_python(text.strip().upper())
    except ValidationError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 604800, 7d or P7D)") from None


def _parser(settings) -> argparse.ArgumentParser:
    prefix = settings.broker_prefix
    parser = argparse.ArgumentParser(prog="python -m brokers", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    relay = commands.add_parser("relay", help="follow the event log into the broker (at least once, in order)")
    relay.add_argument("--event-store-url", default=settings.event_store_url)
    relay.add_argument(
        "--broker-url",
        default=settings.broker_url or settings.redis_url,
        help="redis://... (Redis Streams) or nats://... (JetStream); STORIES_BROKER_URL",
    )
    relay.add_argument("--prefix", default=prefix, help="stream / subject prefix (default %(default)s)")
    relay.add_argument("--platform", default=settings.platform.value)
    relay.add_argument(
        "--position-redis-url",
        default=settings.redis_url,
        help="where the relay's position lives (default: STORIES_REDIS_URL, else the Redis broker)",
    )
    relay.add_argument(
        "--position-key-prefix",
        default=settings.redis_prefix,
        help="the position key is <this>relay:position:<redis|nats> (default %(default)s)",
    )
    relay.add_argument("--batch-size", type=int, default=settings.relay_batch)
    relay.add_argument(
        "--retention",
        type=_duration,
        default=settings.broker_retention,
        help="keep events this long: seconds, 7d / 12h / 30m, or ISO 8601 (P7D); 0: no age limit "
        "(Redis MINID ~ / JetStream max_age; STORIES_BROKER_RETENTION, default 7 days)",
    )
    relay.add_argument(
        "--max-len",
        type=int,
        default=settings.broker_max_len,
        help="optional count cap, Redis MAXLEN ~ / JetStream max_msgs (0, the default: none)",
    )
    relay.add_argument(
        "--port",
        "--metrics-port",
        dest="port",
        type=int,
        default=settings.relay_port,
        help="serve the relay's /health, /ready and /metrics on this port (STORIES_RELAY_PORT; default: none)",
    )
    relay.add_argument(
        "--host", "--metrics-host", dest="host", default=settings.host, help="address of that port (STORIES_HOST)"
    )
    relay.add_argument(
        "--lease-ttl-s",
        type=float,
        default=settings.relay_lease_ttl_s,
        help="one relay publishes at a time: its lease in Redis lapses this long after it died, "
        "when a standby takes over (STORIES_RELAY_LEASE_TTL_S; 0: no lease)",
    )
    relay.add_argument("--batch-pause-s", type=float, default=0.0, help="sleep between batches (throttle)")

    tail = commands.add_parser("tail", help="print the broker's events: <position> <event_type> <stream_id>")
    tail.add_argument("--broker-url", default=settings.broker_url or settings.redis_url)
    tail.add_argument("--prefix", default=prefix)
    tail.add_argument("--from-start", action="store_true", help="from the oldest retained event (default: new ones)")
    tail.add_argument("--limit", type=int, default=None, help="stop after this many events")
    tail.add_argument("--idle-timeout-s", type=float, default=None, help="stop after this long without an event")
    tail.add_argument(
        "--lag",
        action="store_true",
        help="instead: print how far the broker is behind the log (head, the broker's last "
        "position, the gap in events, the age of the oldest missing event)",
    )
    tail.add_argument("--follow", action="store_true", help="with --lag: print it again every --interval")
    tail.add_argument("--interval", type=float, default=5.0, help="with --lag --follow: seconds between lines")
    tail.add_argument("--event-store-url", default=settings.event_store_url, help="with --lag: the log")

    spec = commands.add_parser("asyncapi", help="print the AsyncAPI 3.0.0 document (JSON)")
    spec.add_argument("--prefix", default=prefix)
    return parser


def main(argv: list[str] | None = None) -> int:
    settings = _settings()
    args = _parser(settings).parse_args(argv)
    if args.command == "asyncapi":
        from brokers.asyncapi import asyncapi_document

        json.dump(asyncapi_document(args.prefix), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not args.broker_url:
        print("no broker: set STORIES_BROKER_URL or --broker-url (redis://... or nats://...)", file=sys.stderr)
        return 2
    if args.command == "tail":
        from brokers.tail import tail

        try:
            if args.lag:
                from brokers.lag import print_lag

                asyncio.run(
                    print_lag(
                        args.event_store_url,
                        args.broker_url,
                        args.prefix,
                        sys.stdout,
                        args.follow,
                        args.interval,
                        master_keys=settings.master_keys,
                    )
                )
                return 0
            asyncio.run(
                tail(args.broker_url, args.prefix, args.from_start, args.limit, sys.stdout, args.idle_timeout_s)
            )
        except KeyboardInterrupt:
            pass
        return 0

    from brokers.publishers import broker_kind
    from brokers.relay import run_relay

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    position_url = args.position_redis_url
    if position_url is None and broker_kind(args.broker_url) != "redis":
        print(
            "the NATS relay keeps its position in Redis: set STORIES_REDIS_URL or --position-redis-url", file=sys.stderr
        )
        return 2

    from brokers.relay import RelayMetrics

    metrics = RelayMetrics()

    async def _run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_relay(
            args.event_store_url,
            args.broker_url,
            args.platform,
            prefix=args.prefix,
            position_redis_url=position_url,
            position_key_prefix=args.position_key_prefix,
            batch_size=args.batch_size,
            max_len=args.max_len,
            retention=args.retention,
            batch_pause_s=args.batch_pause_s,
            stop=stop,
            metrics=metrics,
            lease_ttl_s=args.lease_ttl_s or None,
            ops_port=args.port,
            ops_host=args.host,
            master_keys=settings.master_keys,
        )

    asyncio.run(_run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
