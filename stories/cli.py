"""The ``stories`` command: one entry point for every process and the people's tools."""

from __future__ import annotations

import logging
import sys
from typing import Optional

import orjson
import typer

from stories.settings import Settings, jwt_settings_problem

cli = typer.Typer(help="Stories: event-sourced 24-hour stories.", no_args_is_help=True, add_completion=False)


def _settings() -> Settings:
    settings = Settings()
    problem = jwt_settings_problem(settings)
    if problem:
        typer.echo(f"refusing to start: {problem}", err=True)
        raise typer.Exit(2)
    return settings


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _serve(app, host: str, port: int) -> None:
    from aiohttp import web

    try:
        import uvloop

        uvloop.install()
    except ImportError:  # optional speed-up
        pass
    web.run_app(app, host=host, port=port, access_log=None, print=lambda *_: None)


@cli.command("command-api")
def command_api() -> None:
    """Serve the command API (default port 8085 vignette / 8086 entativa)."""
    from write_api.app import create_app

    _logging()
    settings = _settings()
    logging.getLogger("stories").info("command API on %s:%s (%s)", settings.host, settings.command_port, settings.platform.value)
    _serve(create_app(settings), settings.host, settings.command_port)


def _with_backends(settings: Settings, *names: str) -> Settings:
    from stories.embedded import MissingBackend, require, resolve_urls

    settings = resolve_urls(settings)
    try:
        require(settings, *names)
    except MissingBackend as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2)
    return settings


@cli.command("query-api")
def query_api() -> None:
    """Serve the query API (default port 8185 vignette / 8186 entativa)."""
    from read_api.app import create_app

    _logging()
    settings = _with_backends(_settings(), "mongodb", "redis")
    logging.getLogger("stories").info("query API on %s:%s (%s)", settings.host, settings.query_port, settings.platform.value)
    _serve(create_app(settings), settings.host, settings.query_port)


@cli.command("projector")
def projector() -> None:
    """Follow the log into the MongoDB read models and Redis counters."""
    from projections.app import run_projector

    _logging()
    run_projector(_with_backends(Settings(), "mongodb", "redis"))


@cli.command("expirer")
def expirer(once: bool = typer.Option(False, "--once", help="run one sweep and exit")) -> None:
    """The expiry projector: append StoryExpired for every story past its time, exactly once."""
    import asyncio
    import signal

    from commands.event_store import EventStore
    from projections.expiry import Expirer
    from stories.backends import redis_client

    _logging()
    settings = _with_backends(Settings(), "redis")
    store = EventStore(settings.event_store_url)
    worker = Expirer(store, redis_client(settings), settings.redis_prefix, settings.platform)

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


@cli.command("relay")
def relay() -> None:
    """Publish the event log to STORIES_BROKER_URL (Redis Streams or NATS JetStream), in order."""
    from brokers.__main__ import main as brokers_main

    _logging()
    _with_backends(Settings(), "redis", "broker")  # fail early with a clear message
    raise typer.Exit(brokers_main(["relay"]))


@cli.command("tail")
def tail_events(
    from_start: bool = typer.Option(False, "--from-start", help="from the oldest kept event, not from now"),
    limit: Optional[int] = typer.Option(None, help="stop after this many events"),
) -> None:
    """Print the broker's events as another service would consume them: position type stream."""
    import asyncio

    from brokers.tail import tail

    settings = _with_backends(Settings(), "broker")
    asyncio.run(tail(settings.broker_url, settings.broker_prefix, from_start, limit, sys.stdout))


@cli.command("asyncapi")
def asyncapi() -> None:
    """Print the AsyncAPI 3.0 document of every published event type."""
    from brokers.asyncapi import asyncapi_document

    typer.echo(orjson.dumps(asyncapi_document(Settings().broker_prefix), option=orjson.OPT_INDENT_2).decode())


@cli.command("run")
def run() -> None:
    """Every process at once on the embedded defaults (what ``make run`` calls); Ctrl-C stops all."""
    from stories.supervisor import run_everything

    _logging()
    raise typer.Exit(run_everything(_settings()))


@cli.command("token")
def token(user_id: str, ttl: int = typer.Option(3600, help="seconds until it expires")) -> None:
    """Mint a dev token (HS256 with STORIES_JWT_SECRET, or the dev secret in dev mode)."""
    from stories.auth import mint_token

    settings = _settings()
    if settings.jwt_public_key:
        typer.echo("RS256 is configured: mint tokens with your identity provider", err=True)
        raise typer.Exit(2)
    try:
        typer.echo(mint_token(settings, user_id, ttl))
    except ValueError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2)


@cli.command("export")
def export(
    after: int = typer.Option(0, help="only events after this position"),
    until: Optional[int] = typer.Option(None, help="only events up to this position"),
) -> None:
    """Print every event as one JSON line, in log order."""
    from commands.event_store import EventStore

    settings = Settings()
    store = EventStore(settings.event_store_url)
    out = sys.stdout.buffer
    try:
        for logged in store.read(after, until):
            out.write(orjson.dumps(logged.envelope(settings.platform.value)) + b"\n")
    finally:
        out.flush()
        store.close()


def main(argv: list[str] | None = None) -> None:
    cli(args=argv)


if __name__ == "__main__":
    main()
