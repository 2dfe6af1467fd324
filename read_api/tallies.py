"""Pure arithmetic for served results: percentages that sum to 100.0, rounded rates."""

from __future__ import annotations

from collections.abc import Sequence

from domain.engagement import ABANDONING_ACTIONS


def percentages(counts: Sequence[int]) -> list[float]:
    """Shares of ``counts`` in percent with one decimal, summing to exactly 100.0 when any count
    is positive (largest-remainder rounding), all 0.0 otherwise."""
    total = sum(counts)
    if total <= 0:
        return [0.0 for _ in counts]
    tenths = [c * 1000 / total for c in counts]  # in units of 0.1 %
    floors = [int(t) for t in tenths]
    short = 1000 - sum(floors)
    # Hand the missing tenths to the largest remainders (earlier options win ties).
    order = sorted(range(len(counts)), key=lambda i: (-(tenths[i] - floors[i]), i))
    for i in order[:short]:
        floors[i] += 1
    return [f / 10 for f in floors]


def rate(part: float, whole: float) -> float:
    """part / whole in percent, one decimal; 0.0 when whole is 0."""
    return round(part * 100 / whole, 1) if whole else 0.0


def completion_rate(unique_viewers: int, navigation: dict[str, int]) -> float:
    """Unique viewers who neither exited nor swiped away, in percent of unique viewers (one
    decimal). ``navigation`` counts each viewer's last navigation (contract, "Product depth")."""
    left = sum(navigation.get(action, 0) for action in ABANDONING_ACTIONS)
    return rate(max(unique_viewers - left, 0), unique_viewers)
