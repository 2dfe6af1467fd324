"""``python -m projections`` (or ``stories projector``): the projector alone; the expirer is
``stories expirer``."""

from __future__ import annotations

from projections.app import run_projector
from stories.process import configure_logging, process_clock, service_settings, with_backends


def main() -> None:
    """Follow the log into the MongoDB read models and Redis counters."""
    configure_logging()
    settings = service_settings()
    clock = process_clock(settings)
    run_projector(with_backends(settings, "mongodb", "redis"), clock=clock)


if __name__ == "__main__":
    main()
