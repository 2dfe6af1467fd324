"""``brokers/lag.py``: how far the broker is behind the log, measured on a stand-in log, and the
line ``stories tail --lag`` prints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from brokers.lag import Lag, format_lag, measure

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@dataclass
class _Event:
    occurred_at: datetime


@dataclass
class _Logged:
    position: int
    event: _Event


class _Log:
    """Positions 1..head; ``events`` maps the positions holding domain events to their time
    (the others are internal records)."""

    def __init__(self, head: int, events: dict[int, datetime]) -> None:
        self._head, self.events = head, events

    def head(self) -> int:
        return self._head

    def read_batch(self, after: int, limit: int, until=None):
        rows = list(range(after + 1, min(after + limit, self._head) + 1))
        found = [_Logged(p, _Event(self.events[p])) for p in rows if p in self.events]
        return found, (rows[-1] if rows else after)


def test_caught_up_is_zero():
    log = _Log(10, dict.fromkeys(range(1, 11), T0))
    assert measure(log, 10, lambda: T0) == Lag(10, 10, 0, 0.0, None, None)
    assert measure(_Log(0, {}), None, lambda: T0) == Lag(0, None, 0, 0.0, None, None)


def test_behind_counts_positions_and_ages_the_oldest_missing_event():
    log = _Log(400, {p: T0 + timedelta(seconds=p) for p in range(1, 401) if p % 3})  # every third: internal
    lag = measure(log, 299, lambda: T0 + timedelta(seconds=1000))
    # 300 is an internal record: the oldest missing event is at 301
    assert (lag.head, lag.position, lag.events) == (400, 299, 101)
    assert lag.oldest_missing_position == 301
    assert lag.oldest_missing == T0 + timedelta(seconds=301)
    assert lag.seconds == 1000 - 301


def test_an_empty_broker_is_behind_by_the_whole_log():
    log = _Log(5, dict.fromkeys(range(1, 6), T0))
    lag = measure(log, None, lambda: T0 + timedelta(minutes=1))
    assert (lag.events, lag.seconds, lag.oldest_missing_position) == (5, 60.0, 1)


def test_only_internal_records_missing_is_caught_up():
    log = _Log(250, dict.fromkeys(range(1, 101), T0))  # 101..250: internal records (beyond one scan)
    assert measure(log, 100, lambda: T0).events == 0


def test_a_clock_behind_the_event_gives_zero_seconds_not_negative():
    log = _Log(2, {1: T0, 2: T0 + timedelta(hours=1)})
    assert measure(log, 1, lambda: T0).seconds == 0.0


def test_the_line_tail_lag_prints():
    behind = Lag(1234, 1200, 34, 12.345, T0, 1201)
    assert format_lag(behind) == (
        "head=1234 broker=1200 lag_events=34 lag_seconds=12.3 oldest_missing=2026-01-01T12:00:00+00:00"
    )
    assert format_lag(Lag(7, None, 7, 0.0, T0, 1)).startswith("head=7 broker=- lag_events=7 ")
    assert format_lag(Lag(7, 7, 0, 0.0, None, None)) == (
        "head=7 broker=7 lag_events=0 lag_seconds=0.0 oldest_missing=-"
    )
