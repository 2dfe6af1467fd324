"""stories.clock: the real clock, the simulated clock (STORIES_SIMULATED_CLOCK), and the refusal
outside dev mode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from stories.clock import (
    RealClock,
    SimulatedClock,
    SimulatedClockRefused,
    clock_from,
    parse_simulated_clock,
    real_seconds,
    simulated_clock_spec,
)
from stories.settings import Settings

ORIGIN = datetime(2030, 1, 1, tzinfo=UTC)


def settings(**kw) -> Settings:
    return Settings(_env_file=None, **kw)


def test_real_clock_by_default_is_utc_to_the_millisecond():
    clock = clock_from(settings())
    assert isinstance(clock, RealClock) and clock.scale == 1.0
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    now = clock()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert now.microsecond % 1000 == 0
    assert before <= now <= datetime.now(UTC)
    assert real_seconds(clock, 5.0) == 5.0


def test_blank_setting_is_the_real_clock_even_outside_dev_mode():
    assert isinstance(clock_from(settings(simulated_clock="  ")), RealClock)


def test_simulated_clock_is_refused_outside_dev_mode():
    spec = simulated_clock_spec(ORIGIN, 1000.0, 60.0)
    with pytest.raises(SimulatedClockRefused, match="STORIES_DEV_MODE"):
        clock_from(settings(simulated_clock=spec))


def test_simulated_clock_in_dev_mode_reads_origin_plus_scaled_elapsed_time():
    clock = clock_from(settings(dev_mode=True, simulated_clock="2030-01-01T00:00:00Z,1000.5,1000"))
    assert isinstance(clock, SimulatedClock)
    assert clock.origin == ORIGIN and clock.real_epoch == 1000.5 and clock.scale == 1000.0
    fake = SimulatedClock(clock.origin, clock.real_epoch, clock.scale, real_time=lambda: 1000.5 + 86.4)
    assert fake() == ORIGIN + timedelta(days=1)  # 86.4 real seconds at x1000 = one day
    assert SimulatedClock(ORIGIN, 1000.5, 1000.0, real_time=lambda: 1000.5)() == ORIGIN


def test_simulated_clock_answers_aware_utc_milliseconds():
    clock = SimulatedClock(ORIGIN, 0.0, 3.0, real_time=lambda: 0.1234567)
    now = clock()
    assert now.utcoffset() == timedelta(0)
    assert now.microsecond % 1000 == 0
    assert now == ORIGIN + timedelta(milliseconds=370)  # 0.37037 s, truncated


def test_the_real_clock_of_a_simulated_clock_moves_it_forward():
    clock = clock_from(settings(dev_mode=True, simulated_clock=simulated_clock_spec(ORIGIN, 0.0, 1.0)))
    a = clock()
    assert a > ORIGIN  # real now is long after the epoch 0
    assert clock() >= a


def test_processes_with_the_same_setting_agree():
    spec = simulated_clock_spec(ORIGIN, 1_700_000_000.25, 500.0)
    one, two = (parse_simulated_clock(spec) for _ in range(2))
    t = 1_700_000_123.0
    assert (
        SimulatedClock(one.origin, one.real_epoch, one.scale, lambda: t)()
        == SimulatedClock(two.origin, two.real_epoch, two.scale, lambda: t)()
    )


def test_spec_round_trips_and_zone_is_normalised_to_utc():
    paris = datetime(2030, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    parsed = parse_simulated_clock(simulated_clock_spec(paris, 12.5, 2.0))
    assert parsed.origin == ORIGIN and parsed.origin.utcoffset() == timedelta(0)
    assert (parsed.real_epoch, parsed.scale) == (12.5, 2.0)
    assert parse_simulated_clock("2030-01-01T00:00:00,0,1").origin == ORIGIN  # naive = UTC
    assert parse_simulated_clock(parsed.spec()) == parsed


def test_waits_are_divided_by_the_scale():
    clock = SimulatedClock(ORIGIN, 0.0, 1000.0)
    assert clock.real_seconds(3600) == pytest.approx(3.6)
    assert real_seconds(clock, 3600) == pytest.approx(3.6)
    assert real_seconds(lambda: ORIGIN, 7.0) == 7.0  # any plain callable is a real-time clock


@pytest.mark.parametrize(
    "spec",
    [
        "2030-01-01T00:00:00Z",
        "2030-01-01T00:00:00Z,0",
        "2030-01-01T00:00:00Z,0,1,2",
        "yesterday,0,1",
        "2030-01-01T00:00:00Z,soon,1",
        "2030-01-01T00:00:00Z,0,fast",
        "2030-01-01T00:00:00Z,0,0",
        "2030-01-01T00:00:00Z,0,-5",
        "2030-01-01T00:00:00Z,0,inf",
        "2030-01-01T00:00:00Z,nan,1",
        "2030-01-01T00:00:00Z,0,nan",
    ],
)
def test_malformed_setting_is_refused_with_a_clear_message(spec):
    with pytest.raises(SimulatedClockRefused, match="STORIES_SIMULATED_CLOCK"):
        clock_from(settings(dev_mode=True, simulated_clock=spec))


def test_expirer_waits_real_seconds_for_a_simulated_due_time():
    """The expirer sleeps until the next due time divided by the clock's scale, capped at the interval."""
    from projections.expiry import Expirer

    class FakeRedis:
        def __init__(self, due):
            self.due = due

        def zrange(self, *a, **kw):
            return [(b"s", self.due)] if self.due is not None else []

    now = SimulatedClock(ORIGIN, 0.0, 1000.0, real_time=lambda: 0.0)
    expirer = Expirer.__new__(Expirer)  # only the wait computation; no store, no committer
    expirer.clock, expirer.scale = now, now.scale
    expirer.keys = type("K", (), {"expiry_due": "due"})()
    expirer.client = FakeRedis(ORIGIN.timestamp() + 3600)  # due in one simulated hour
    assert expirer.seconds_to_next_due(5.0) == pytest.approx(3.6)
    expirer.client = FakeRedis(ORIGIN.timestamp() + 86400)  # a simulated day: capped by the interval
    assert expirer.seconds_to_next_due(5.0) == 5.0
    expirer.client = FakeRedis(ORIGIN.timestamp() - 10)  # overdue
    assert expirer.seconds_to_next_due(5.0) == 0.0
    expirer.client = FakeRedis(None)
    assert expirer.seconds_to_next_due(5.0) == 5.0
