"""How a process starts: its settings (refused with exit status 2 when they cannot work), its
clock, its logging, the backends it needs, and serving an aiohttp app.

Each process's ``__main__`` (``python -m write_api``, ``read_api``, ``projections``) and the
``stories`` command use these, so a process loads only its own side.
"""

from __future__ import annotations

import gc
import logging
import sys
from typing import TYPE_CHECKING, NoReturn

from stories.settings import Settings, jwt_settings_problem

if TYPE_CHECKING:
    from aiohttp import web

    from stories.clock import Clock

GC_YOUNG_THRESHOLD = 50_000


def refuse(problem: object) -> NoReturn:
    print(f"refusing to start: {problem}", file=sys.stderr)
    raise SystemExit(2)


def api_settings() -> Settings:
    """The settings of a process that serves an API: refused when its JWT settings cannot work;
    in dev mode, the data directory's own secret is made if missing."""
    settings = Settings()
    problem = jwt_settings_problem(settings)
    if problem:
        refuse(problem)
    if settings.dev_mode and not (settings.jwt_secret or settings.jwt_public_key):
        from stories.auth import AuthConfigError, dev_secret

        try:
            dev_secret(settings)
        except AuthConfigError as e:
            refuse(e)
    return settings


def service_settings() -> Settings:
    """The settings of a process without an API (projector, expirer, relay): they serve health
    ports too, which dev mode keeps on loopback."""
    from stories.auth import dev_bind_problem

    settings = Settings()
    problem = dev_bind_problem(settings)
    if problem:
        refuse(problem)
    return settings


def process_clock(settings: Settings) -> Clock:
    """The process's clock (real, or STORIES_SIMULATED_CLOCK in dev mode); refused otherwise."""
    from stories.clock import SimulatedClockRefused, clock_from

    try:
        return clock_from(settings)
    except SimulatedClockRefused as e:
        refuse(e)


def with_backends(settings: Settings, *names: str) -> Settings:
    """``settings`` with the embedded servers' URLs filled in; exit status 2 when one is missing."""
    from stories.embedded import MissingBackend, require, resolve_urls

    settings = resolve_urls(settings)
    try:
        require(settings, *names)
    except MissingBackend as e:
        print(str(e), file=sys.stderr)
        raise SystemExit(2) from None
    return settings


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def serve(app: web.Application, host: str, port: int, reuse_port: bool = False) -> None:
    from stories.http import run_app

    try:
        import uvloop

        uvloop.install()
    except ImportError:  # optional speed-up
        pass
    # Answers such as a 1,000-author feed allocate tens of thousands of short-lived objects; with
    # the default thresholds the cyclic GC runs dozens of times per answer and a full collection
    # rescans every module and route. Freeze what start-up built, and collect young objects less often.
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
    run_app(app, host, port, reuse_port=reuse_port)  # web.run_app, with the HTTP layer's own errors as JSON
