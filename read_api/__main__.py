"""``python -m read_api`` (or ``stories query-api``): the query API alone."""

from __future__ import annotations

import logging

from read_api.app import create_app
from stories.process import api_settings, configure_logging, process_clock, serve, with_backends


def main() -> None:
    """Serve the query API (default port 8185 vignette / 8186 entativa)."""
    configure_logging()
    settings = api_settings()
    clock = process_clock(settings)
    settings = with_backends(settings, "mongodb", "redis")
    port = settings.query_port
    assert port is not None  # Settings fills in the platform's default
    logging.getLogger("stories").info("query API on %s:%s (%s)", settings.host, port, settings.platform.value)
    serve(create_app(settings, clock), settings.host, port)


if __name__ == "__main__":
    main()
