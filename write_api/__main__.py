"""``python -m write_api`` (or ``stories command-api``): the command API alone."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from stories.embedded import _die_with_parent
from stories.process import api_settings, configure_logging, process_clock, serve
from write_api.app import create_app


def main() -> None:
    """Serve the command API (default port 8085 vignette / 8086 entativa)."""
    configure_logging()
    settings = api_settings()
    clock = process_clock(settings)
    workers = settings.command_workers
    if workers > 1 and not os.environ.get("STORIES_COMMAND_WORKER"):
        # More processes on the same port, each with its own group committer: the GIL bounds
        # one process; the log's optimistic concurrency keeps them correct together.
        env = dict(os.environ, STORIES_COMMAND_WORKER="1")
        for _ in range(workers - 1):
            subprocess.Popen([sys.executable, "-m", "write_api"], env=env, preexec_fn=_die_with_parent)
    logging.getLogger("stories").info(
        "command API on %s:%s (%s, %d worker(s))",
        settings.host,
        settings.command_port,
        settings.platform.value,
        workers,
    )
    port = settings.command_port
    assert port is not None  # Settings fills in the platform's default
    serve(create_app(settings, clock=clock), settings.host, port, reuse_port=workers > 1)


if __name__ == "__main__":
    main()
