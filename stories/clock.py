"""The processes' clock: the real UTC clock, or (dev mode only) a simulated, accelerated one.

``STORIES_SIMULATED_CLOCK=ORIGIN_ISO,REAL_EPOCH_S,SCALE`` makes every process read
``ORIGIN + (real_now - REAL_EPOCH) * SCALE``: started with the same value, the command API,
the query API, the projector and the expirer all agree on one accelerated timeline (the soak
benchmark runs 14 days in minutes this way). Only wall-clock *readings* are simulated: tokens'
``exp``, HTTP timeouts and Redis TTLs stay in real time.

Every clock answers an aware UTC ``datetime`` with millisecond precision (what MongoDB keeps),
like ``commands.application.utc_now``, and has a ``scale`` (simulated seconds per real second)
so that a process that waits for a simulated moment can turn the wait into real seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from stories.settings import Settings


class SimulatedClockRefused(ValueError):
    """A simulated clock outside dev mode, or a malformed STORIES_SIMULATED_CLOCK."""


def _to_millis(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class RealClock:
    """The machine's UTC clock, to the millisecond."""

    scale = 1.0

    def __call__(self) -> datetime:
        return _to_millis(datetime.now(UTC))

    def real_seconds(self, simulated_seconds: float) -> float:
        return simulated_seconds

    def __repr__(self) -> str:
        return "RealClock()"


@dataclass(frozen=True)
class SimulatedClock:
    """``origin + (real_time() - real_epoch) * scale``, to the millisecond."""

    origin: datetime
    real_epoch: float
    scale: float
    real_time: Callable[[], float] = time.time

    def __call__(self) -> datetime:
        elapsed = (self.real_time() - self.real_epoch) * self.scale
        return _to_millis(self.origin + timedelta(seconds=elapsed))

    def real_seconds(self, simulated_seconds: float) -> float:
        """How long a wait of ``simulated_seconds`` on this clock lasts in real seconds."""
        return simulated_seconds / self.scale

    def spec(self) -> str:
        return simulated_clock_spec(self.origin, self.real_epoch, self.scale)


Clock = Callable[[], datetime]


def parse_simulated_clock(spec: str) -> SimulatedClock:
    """``ORIGIN_ISO,REAL_EPOCH_S,SCALE`` -> SimulatedClock; SimulatedClockRefused when malformed."""
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) != 3:
        raise SimulatedClockRefused(
            f"STORIES_SIMULATED_CLOCK must be ORIGIN_ISO,REAL_EPOCH_S,SCALE (three comma-separated values), got {spec!r}"
        )
    origin_text, epoch_text, scale_text = parts
    try:
        origin = datetime.fromisoformat(origin_text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise SimulatedClockRefused(
            f"STORIES_SIMULATED_CLOCK: ORIGIN {origin_text!r} is not an ISO 8601 time"
        ) from None
    origin = origin.replace(tzinfo=UTC) if origin.tzinfo is None else origin.astimezone(UTC)
    try:
        real_epoch, scale = float(epoch_text), float(scale_text)
    except ValueError:
        raise SimulatedClockRefused(
            f"STORIES_SIMULATED_CLOCK: REAL_EPOCH_S {epoch_text!r} and SCALE {scale_text!r} must be numbers"
        ) from None
    if not real_epoch == real_epoch or real_epoch in (float("inf"), float("-inf")):
        raise SimulatedClockRefused("STORIES_SIMULATED_CLOCK: REAL_EPOCH_S must be a finite number")
    if not 0 < scale < float("inf"):
        raise SimulatedClockRefused(f"STORIES_SIMULATED_CLOCK: SCALE must be a positive number, got {scale_text!r}")
    return SimulatedClock(origin, real_epoch, scale)


def simulated_clock_spec(origin: datetime, real_epoch: float, scale: float) -> str:
    """The STORIES_SIMULATED_CLOCK value for a timeline starting at ``origin`` at ``real_epoch``."""
    origin = origin.replace(tzinfo=UTC) if origin.tzinfo is None else origin.astimezone(UTC)
    return f"{origin.isoformat()},{real_epoch!r},{scale!r}"


def clock_from(settings: Settings) -> Clock:
    """The clock a process reads: real, or the simulated one when ``simulated_clock`` is set.

    Raises SimulatedClockRefused when a simulated clock is asked for outside dev mode (a
    production process must never run on a made-up time) or the value is malformed; processes
    call this at start-up and refuse to start with that message."""
    spec = settings.simulated_clock
    if not spec or not spec.strip():
        return RealClock()
    if not settings.dev_mode:
        raise SimulatedClockRefused(
            "STORIES_SIMULATED_CLOCK is set but STORIES_DEV_MODE is not true: "
            "a simulated clock is for dev and benchmarks only"
        )
    return parse_simulated_clock(spec)


def real_seconds(clock: Clock, simulated_seconds: float) -> float:
    """A wait of ``simulated_seconds`` on ``clock``, in real seconds (any callable clock: scale 1)."""
    return simulated_seconds / float(getattr(clock, "scale", 1.0) or 1.0)
