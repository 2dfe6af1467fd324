"""The ``stories`` command: one entry point for every process and the people's tools."""

from __future__ import annotations

import contextlib
import sys
from datetime import UTC, timedelta

import orjson
import typer

from stories.process import api_settings, configure_logging, process_clock, service_settings, with_backends
from stories.settings import Settings

cli = typer.Typer(help="Stories: event-sourced 24-hour stories.", no_args_is_help=True, add_completion=False)


@cli.command("command-api")
def command_api() -> None:
    """Serve the command API (default port 8085 vignette / 8086 entativa)."""
    from write_api.__main__ import main as serve_command_api

    serve_command_api()


@cli.command("query-api")
def query_api() -> None:
    """Serve the query API (default port 8185 vignette / 8186 entativa)."""
    from read_api.__main__ import main as serve_query_api

    serve_query_api()


@cli.command("projector")
def projector() -> None:
    """Follow the log into the MongoDB read models and Redis counters."""
    from projections.__main__ import main as run_projector

    run_projector()


@cli.command("expirer")
def expirer(once: bool = typer.Option(False, "--once", help="run one sweep and exit")) -> None:
    """The expiry projector: append StoryExpired for every story past its time, exactly once."""
    import asyncio
    import signal

    from commands.event_store import open_event_store
    from projections.expiry import Expirer
    from stories.backends import redis_client

    configure_logging()
    settings = service_settings()
    clock = process_clock(settings)
    settings = with_backends(settings, "redis")
    store = open_event_store(settings)
    worker = Expirer(store, redis_client(settings), settings.redis_prefix, settings.platform, clock=clock)

    async def main() -> None:
        if once:
            typer.echo(f"expired {await worker.sweep()} stories")
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await worker.run(settings.expiry_interval_s, stop)

    try:
        asyncio.run(main())
    finally:
        worker.close()
        store.close()


def _duration(text: str) -> timedelta:
    """``604800``, ``7d`` / ``12h`` / ``30m`` / ``10s`` or ISO 8601 (``P7D``), as STORIES_BROKER_RETENTION."""
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
        raise typer.BadParameter(f"not a duration: {text!r} (try 604800, 7d or P7D)") from None


def _overridden(settings: Settings, **options: object) -> Settings:
    """``settings`` with every option given (not None) in place of its setting."""
    updates = {name: value for name, value in options.items() if value is not None}
    return settings.model_copy(update=updates) if updates else settings


_BROKER_URL_HELP = "redis://... (Redis Streams) or nats://... (JetStream); STORIES_BROKER_URL"
_PREFIX_HELP = "stream / subject prefix (default: STORIES_BROKER_PREFIX, else stories)"


@cli.command("relay")
def relay(
    event_store_url: str | None = typer.Option(None, "--event-store-url", help="the log (STORIES_EVENT_STORE_URL)"),
    broker_url: str | None = typer.Option(None, "--broker-url", help=_BROKER_URL_HELP),
    prefix: str | None = typer.Option(None, "--prefix", help=_PREFIX_HELP),
    platform: str | None = typer.Option(None, "--platform", help="vignette or entativa (STORIES_PLATFORM)"),
    position_redis_url: str | None = typer.Option(
        None,
        "--position-redis-url",
        help="where the relay's position lives (default: STORIES_REDIS_URL, else the Redis broker)",
    ),
    position_key_prefix: str | None = typer.Option(
        None,
        "--position-key-prefix",
        help="the position key is <this>relay:position:<redis|nats> (default: STORIES_REDIS_PREFIX, else stories:)",
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", help="events per batch (STORIES_RELAY_BATCH)"),
    retention: timedelta | None = typer.Option(
        None,
        "--retention",
        parser=_duration,
        metavar="DURATION",
        help="keep events this long: seconds, 7d / 12h / 30m, or ISO 8601 (P7D); 0: no age limit "
        "(Redis MINID ~ / JetStream max_age; STORIES_BROKER_RETENTION, default 7 days)",
    ),
    max_len: int | None = typer.Option(
        None,
        "--max-len",
        help="optional count cap, Redis MAXLEN ~ / JetStream max_msgs (STORIES_BROKER_MAX_LEN; 0, the default: none)",
    ),
    port: int | None = typer.Option(
        None,
        "--port",
        "--metrics-port",
        help="serve the relay's /health, /ready and /metrics on this port (STORIES_RELAY_PORT; default: none)",
    ),
    host: str | None = typer.Option(None, "--host", "--metrics-host", help="address of that port (STORIES_HOST)"),
    lease_ttl_s: float | None = typer.Option(
        None,
        "--lease-ttl-s",
        help="one relay publishes at a time: its lease in Redis lapses this long after it died, "
        "when a standby takes over (STORIES_RELAY_LEASE_TTL_S; 0: no lease)",
    ),
    batch_pause_s: float = typer.Option(0.0, "--batch-pause-s", help="sleep between batches (throttle)"),
) -> None:
    """Publish the event log to STORIES_BROKER_URL (Redis Streams or NATS JetStream), in order
    (``python -m brokers``); every option overrides its setting."""
    from brokers.__main__ import main as run_relay
    from domain.platform import Platform
    from stories.embedded import resolve_urls

    settings = resolve_urls(service_settings())
    if platform is not None:
        try:
            chosen: Platform | None = Platform(platform)
        except ValueError:
            raise typer.BadParameter(
                f"not a platform: {platform!r} (one of {', '.join(p.value for p in Platform)})", param_hint="--platform"
            ) from None
    else:
        chosen = None
    settings = _overridden(
        settings,
        broker_url=broker_url or settings.broker_url or settings.redis_url,  # before --position-redis-url
        event_store_url=event_store_url,
        broker_prefix=prefix,
        platform=chosen,
        redis_url=position_redis_url,
        redis_prefix=position_key_prefix,
        relay_batch=batch_size,
        broker_retention=retention,
        broker_max_len=max_len,
        relay_port=port,
        host=host,
        relay_lease_ttl_s=lease_ttl_s,
    )
    raise typer.Exit(run_relay(settings, batch_pause_s=batch_pause_s))


@cli.command("tail")
def tail_events(
    broker_url: str | None = typer.Option(None, "--broker-url", help=_BROKER_URL_HELP),
    prefix: str | None = typer.Option(None, "--prefix", help=_PREFIX_HELP),
    from_start: bool = typer.Option(False, "--from-start", help="from the oldest retained event (default: new ones)"),
    limit: int | None = typer.Option(None, "--limit", help="stop after this many events"),
    idle_timeout_s: float | None = typer.Option(None, "--idle-timeout-s", help="stop after this long without an event"),
    lag: bool = typer.Option(
        False,
        "--lag",
        help="instead: print how far the broker is behind the log (head, the broker's last "
        "position, the gap in events, the age of the oldest missing event)",
    ),
    follow: bool = typer.Option(False, "--follow", help="with --lag: print it again every --interval"),
    interval: float = typer.Option(5.0, "--interval", help="with --lag --follow: seconds between lines"),
    event_store_url: str | None = typer.Option(
        None, "--event-store-url", help="with --lag: the log (STORIES_EVENT_STORE_URL)"
    ),
) -> None:
    """Print the broker's events as another service would consume them: position type stream.
    With --lag: head=<n> broker=<n> lag_events=<n> lag_seconds=<s> oldest_missing=<time>."""
    import asyncio

    from brokers.tail import tail

    settings = _overridden(Settings(), broker_url=broker_url, broker_prefix=prefix, event_store_url=event_store_url)
    settings = with_backends(settings, "broker")
    broker, store_url = settings.broker_url, settings.event_store_url
    assert broker is not None and store_url is not None  # with_backends made sure
    if lag:
        from brokers.lag import print_lag

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                print_lag(
                    store_url,
                    broker,
                    settings.broker_prefix,
                    sys.stdout,
                    follow,
                    interval,
                    master_keys=settings.master_keys,
                )
            )
        return
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail(broker, settings.broker_prefix, from_start, limit, sys.stdout, idle_timeout_s))


@cli.command("asyncapi")
def asyncapi(prefix: str | None = typer.Option(None, "--prefix", help=_PREFIX_HELP)) -> None:
    """Print the AsyncAPI 3.0 document of every published event type."""
    from brokers.asyncapi import asyncapi_document

    prefix = prefix if prefix is not None else Settings().broker_prefix
    typer.echo(orjson.dumps(asyncapi_document(prefix), option=orjson.OPT_INDENT_2).decode())


@cli.command("run")
def run() -> None:
    """Every process at once on the embedded defaults (what ``make run`` calls); Ctrl-C stops all."""
    from stories.supervisor import run_everything

    configure_logging()
    settings = api_settings()
    process_clock(settings)  # refuse before starting anything; the children read the same setting
    raise typer.Exit(run_everything(settings))


@cli.command("token")
def token(user_id: str, ttl: int = typer.Option(3600, help="seconds until it expires")) -> None:
    """Mint a dev token: HS256 with STORIES_JWT_SECRET, else the dev secret of STORIES_DATA_DIR
    (made by a dev-mode service, so this works from any shell with the same data directory)."""
    from stories.auth import AuthConfigError, mint_token, secret_problem

    settings = Settings()
    if settings.jwt_public_key:
        typer.echo("RS256 is configured: mint tokens with your identity provider", err=True)
        raise typer.Exit(2) from None
    problem = secret_problem(settings.jwt_secret) if settings.jwt_secret else None
    if problem:
        typer.echo(f"refusing: {problem}", err=True)
        raise typer.Exit(2) from None
    try:
        typer.echo(mint_token(settings, user_id, ttl))
    except (ValueError, AuthConfigError) as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None


@cli.command("erase")
def erase(user_id: str, yes: bool = typer.Option(False, "--yes", help="do not ask")) -> None:
    """Erase an account, as DELETE /api/v1/account does: destroy its key, append AccountErased.
    Idempotent: run it again after any failure."""
    from datetime import datetime

    from commands.erasure import erase_account
    from commands.event_store import open_event_store
    from domain.ids import is_user_id
    from stories.settings import pseudonym_key

    if not is_user_id(user_id):
        typer.echo("not a user id", err=True)
        raise typer.Exit(2) from None
    if not yes and not typer.confirm(f"erase {user_id}? Their personal data becomes unreadable for good"):
        raise typer.Exit(1)
    settings = Settings()
    store = open_event_store(settings)
    try:
        position = erase_account(store, pseudonym_key(settings), user_id, datetime.now(UTC))
    finally:
        store.close()
    typer.echo(f"erased; AccountErased at position {position}")


keys_cli = typer.Typer(
    help='The key store of personal data (README, "Erasure and the key store").', no_args_is_help=True
)
cli.add_typer(keys_cli, name="keys")


@keys_cli.command("rotate")
def keys_rotate() -> None:
    """Rewrap every person's key with the first of STORIES_MASTER_KEYS (then the older master
    keys can be dropped from the setting)."""
    from commands.event_store import open_event_store

    store = open_event_store(Settings())
    try:
        store.head()  # connects
        typer.echo(f"rewrapped {store.keys.rotate()} keys with master key {store.keys.meta.current_master}")
    finally:
        store.close()


@cli.command("reencrypt")
def reencrypt(
    into: str = typer.Option(..., "--into", help="the new, empty log: sqlite:///path or postgresql://..."),
    progress: bool = typer.Option(True, help="progress on stderr"),
) -> None:
    """Copy a log written before per-person encryption into a new one: personal data sealed with
    each person's key, stream ids keyed. Then point STORIES_EVENT_STORE_URL at it and rebuild the
    read models (`stories replay --yes`), the relay's position too (positions start again at 1)."""
    from rich.progress import Progress

    from commands.event_store import EventStore, open_event_store

    settings = Settings()
    source = open_event_store(settings)
    target = EventStore(into, master_keys=settings.master_keys)
    try:
        if target.head():
            typer.echo("the target log is not empty", err=True)
            raise typer.Exit(2) from None
        if source.keys.meta.stream_key is not None:
            typer.echo("the source log is keyed already (for new master keys: `stories keys rotate`)", err=True)
            raise typer.Exit(2) from None
        with Progress(disable=not progress, transient=True, console=_stderr_console()) as bar:
            task = bar.add_task("copying", total=None)
            copied = target.copy_from(source, on_batch=lambda done, head: bar.update(task, completed=done, total=head))
    finally:
        source.close()
        target.close()
    typer.echo(f"copied {copied} records into {into}")


@cli.command("export")
def export(
    after: int = typer.Option(0, help="only events after this position"),
    until: str | None = typer.Option(
        None, help="up to this position, or every event that occurred at or before this ISO 8601 time"
    ),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl (the envelope) or csv (flat columns)"),
    types: list[str] = typer.Option([], "--type", help="only these event types (repeatable)"),
    progress: bool = typer.Option(True, help="progress on stderr"),
) -> None:
    """Stream events in log order: one JSON envelope per line, or CSV with the data as JSON.

    With --until TIME: every event stamped at or before TIME, up to the head, wherever it sits in
    the log (processes' clocks may log an earlier event after a later one)."""
    import csv

    from rich.progress import Progress

    from commands.event_store import open_event_store
    from domain.catalogue import EVENT_TYPES
    from projections.replay import parse_until

    settings = Settings()
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if fmt not in ("jsonl", "csv") or unknown:
        typer.echo(f"unknown format or event types: {fmt} {unknown}", err=True)
        raise typer.Exit(2) from None
    store = open_event_store(settings)
    cut = parse_until(store, until)
    last = cut.position
    out = sys.stdout
    writer = csv.writer(out) if fmt == "csv" else None
    if writer:
        writer.writerow(
            [
                "position",
                "event_id",
                "event_type",
                "stream_id",
                "stream_version",
                "occurred_at",
                "platform",
                "schema_version",
                "data",
                "erased",
            ]
        )
    wanted = set(types)
    with Progress(disable=not progress, transient=True, console=_stderr_console()) as bar:
        task = bar.add_task("exporting", total=max(last - after, 1))
        position = after
        try:
            while position < last:
                events, reached = store.read_batch(position, 5000, last)
                for logged in events:
                    if (wanted and logged.event.event_type not in wanted) or not cut.keeps(logged):
                        continue
                    envelope = logged.envelope(settings.platform.value)
                    if writer:
                        writer.writerow(
                            [
                                *(
                                    envelope[k]
                                    for k in (
                                        "position",
                                        "event_id",
                                        "event_type",
                                        "stream_id",
                                        "stream_version",
                                        "occurred_at",
                                        "platform",
                                        "schema_version",
                                    )
                                ),
                                orjson.dumps(envelope["data"]).decode(),
                                str(logged.event.erased).lower(),
                            ]
                        )
                    else:
                        out.write(orjson.dumps(envelope).decode() + "\n")
                if reached == position:
                    break
                bar.update(task, advance=reached - position)
                position = reached
        finally:
            out.flush()
            store.close()


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


@cli.command("replay")
def replay(
    until: str | None = typer.Option(
        None, help="rebuild the world as it was at this position, or from every event at or before this ISO time"
    ),
    yes: bool = typer.Option(False, "--yes", help="drop and rebuild the configured read models in place"),
    database: str | None = typer.Option(None, help="target MongoDB database (default: a fresh one)"),
    prefix: str | None = typer.Option(None, help="target Redis key prefix (default: a fresh one)"),
    into: str | None = typer.Option(
        None,
        "--into",
        help="zero downtime: build generation NAME while the served one keeps serving, follow the "
        "log until caught up, then switch the query API and the projector to it",
    ),
) -> None:
    """Rebuild every read model from the log, as a bulk load: into fresh databases, (--yes) the
    configured ones, or (--into NAME) a new generation that the service then switches to."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from commands.event_store import open_event_store
    from projections.bulk_load import STATE, TargetNotEmpty, bulk_load
    from projections.redis_schema import Keys
    from projections.replay import clear_read_models, parse_until
    from stories.backends import mongo_client, redis_client

    settings = with_backends(Settings(), "mongodb", "redis")
    if into is not None and (yes or until or database or prefix):
        typer.echo(
            "--into builds a generation that follows the log: not with --until, --yes, --database, --prefix", err=True
        )
        raise typer.Exit(2) from None
    stamp = time.strftime("%Y%m%d%H%M%S")
    if yes:
        database, prefix = settings.mongodb_database, settings.redis_prefix
    else:
        database = database or f"{settings.mongodb_database}_replay_{stamp}"
        prefix = prefix or f"{settings.redis_prefix.rstrip(':')}-replay-{stamp}:"
    store = open_event_store(settings)
    mongo, client = mongo_client(settings), redis_client(settings)
    grace_ms = int(settings.redis_grace.total_seconds() * 1000)
    started = time.monotonic()
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[rate]} ev/s"),
        TimeRemainingColumn(),
    ]
    try:
        with Progress(*columns, console=_stderr_console()) as bar:
            task = bar.add_task("replay", total=1, rate="-")

            def progress(position: int, target: int | None = None) -> None:
                elapsed = time.monotonic() - started
                if target is not None:
                    bar.update(task, total=target)
                bar.update(task, completed=position, rate=f"{position / elapsed:,.0f}" if elapsed else "-")

            if into is not None:
                from projections.generations import GenerationRefused
                from projections.replay import build_generation

                try:
                    gen = build_generation(
                        store,
                        mongo,
                        client,
                        settings.mongodb_database,
                        settings.redis_prefix,
                        into,
                        partitions=settings.projector_partitions,
                        batch=settings.projector_batch,
                        grace_ms=grace_ms,
                        on_progress=progress,
                        say=bar.console.print,
                    )
                except GenerationRefused as e:
                    typer.echo(f"refused: {e}", err=True)
                    raise typer.Exit(2) from None
                typer.echo(
                    f"generation {gen.name!r} (MongoDB database {gen.mongodb_database!r}, Redis prefix "
                    f"{gen.redis_prefix!r}) is served from position {gen.position} on, after "
                    f"{time.monotonic() - started:.1f} s"
                )
                return
            if yes:
                clear_read_models(mongo, database, client, prefix)
                client.delete(Keys(prefix).position(STATE))
            cut = parse_until(store, until)
            target = cut.position
            bar.update(task, total=target)
            try:
                stats = bulk_load(
                    store,
                    mongo,
                    database,
                    client,
                    prefix,
                    target,
                    progress,
                    keep=cut.keep,
                    partitions=settings.projector_partitions,
                    grace_ms=grace_ms,
                )
            except TargetNotEmpty as e:
                typer.echo(
                    f"refused: {e}; name an empty target (or a half-built one: it is dropped and rebuilt)", err=True
                )
                raise typer.Exit(2) from None
        elapsed = time.monotonic() - started
        scope = f"up to position {target}" + (
            f" that occurred at or before {cut.moment.isoformat()}" if cut.moment else ""
        )
        typer.echo(
            f"replayed {stats.applied} events {scope} in {elapsed:.1f} s "
            f"({stats.applied / elapsed if elapsed else 0:,.0f} events/s) into MongoDB database "
            f"{database!r} and Redis prefix {prefix!r}"
        )
    finally:
        store.close()


@cli.command("generations")
def generations_command(
    drop: str | None = typer.Option(None, "--drop", help="drop generation NAME (never the one served)"),
) -> None:
    """The read models' generations (``replay --into``): name, position, which one is served."""
    from projections import generations as gens
    from projections.replay import drop_generation
    from stories.backends import mongo_client, redis_client

    settings = with_backends(Settings(), "mongodb", "redis")
    mongo, client = mongo_client(settings), redis_client(settings)
    if drop is not None:
        try:
            gen = drop_generation(mongo, client, settings.mongodb_database, settings.redis_prefix, drop)
        except gens.GenerationRefused as e:
            typer.echo(f"refused: {e}", err=True)
            raise typer.Exit(2) from None
        typer.echo(
            f"dropped generation {gen.name!r} (MongoDB database {gen.mongodb_database!r}, Redis prefix "
            f"{gen.redis_prefix!r})"
        )
        return
    rows = gens.listing(mongo, client, settings.mongodb_database, settings.redis_prefix, settings.projector_partitions)
    typer.echo(f"{'':2}{'name':<16} {'position':>12}  {'state':<10} {'MongoDB database':<28} Redis prefix")
    for row in rows:
        typer.echo(
            f"{'*' if row['current'] else '':2}{row['name']:<16} {row['position']:>12}  {row['state']:<10} "
            f"{row['mongodb_database']:<28} {row['redis_prefix']}"
        )


@cli.command("story-at")
def story_at(story_id: str, at: str = typer.Option(..., "--at", help="ISO 8601 time")) -> None:
    """A story, its sticker results, counts and content versions as they were at a moment, from the
    log alone: every event of it stamped at or before --at, wherever it sits in the log."""
    from commands.event_store import open_event_store
    from domain.stickers import parse_timestamp
    from projections.replay import story_at as compute

    store = open_event_store(Settings())
    try:
        story = compute(store, story_id, parse_timestamp(at))
    finally:
        store.close()
    if story is None:
        typer.echo(f"no story {story_id} at {at}", err=True)
        raise typer.Exit(1)
    typer.echo(orjson.dumps(story, option=orjson.OPT_INDENT_2).decode())


@cli.command("generate")
def generate_load(
    users: int = typer.Option(200),
    stories: int = typer.Option(500),
    engagements: int = typer.Option(20000),
    seed: int = typer.Option(7),
) -> None:
    """Append a reproducible mixed workload through the write path (demos, benchmarks)."""
    import asyncio

    from commands.event_store import open_event_store
    from commands.synthetic_load import generate

    settings = Settings()
    clock = process_clock(settings)
    store = open_event_store(settings)
    try:
        tally = asyncio.run(
            generate(
                store, settings.platform, users=users, stories=stories, engagements=engagements, seed=seed, clock=clock
            )
        )
    finally:
        store.close()
    typer.echo(f"accepted {tally.accepted}; refused {tally.rejected}; log head {tally.last_position}")


def main(argv: list[str] | None = None) -> None:
    cli(args=argv)


if __name__ == "__main__":
    main()
