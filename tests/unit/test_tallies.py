"""read_api/tallies: poll/quiz percentages (one decimal, summing to 100.0) and rounded rates."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from read_api.tallies import percentages, rate

HYPOTHESIS = settings(max_examples=400)
counts_lists = st.lists(st.integers(min_value=0, max_value=10**7), min_size=0, max_size=12)
small_counts = st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=6)


def tenths(p: float) -> int:
    return round(p * 10)


def is_one_decimal(p: float) -> bool:
    return round(p, 1) == p and abs(p * 10 - round(p * 10)) < 1e-9


# -- percentages ------------------------------------------------------------------------------


@HYPOTHESIS
@given(st.one_of(counts_lists, small_counts))
@example([1, 1, 1])
@example([1, 2])
@example([2, 1, 1, 1, 1, 1, 1])
@example([0, 0, 7])
@example([10**7, 1, 1])
def test_percentages_one_decimal_sum_100_close_and_monotone(counts):
    shares = percentages(counts)
    total = sum(counts)
    assert len(shares) == len(counts)
    assert all(isinstance(p, float) for p in shares)
    assert all(is_one_decimal(p) for p in shares), shares
    if total <= 0:
        assert shares == [0.0] * len(counts)
        return
    assert sum(tenths(p) for p in shares) == 1000, (counts, shares)
    for c, p in zip(counts, shares):
        exact = Fraction(c * 100, total)
        assert abs(Fraction(tenths(p), 10) - exact) <= Fraction(1, 10), (counts, shares)
        assert 0.0 <= p <= 100.0
        if c == 0:
            assert p == 0.0
        if c == total:
            assert p == 100.0
    for i, ci in enumerate(counts):
        for j, cj in enumerate(counts):
            if ci > cj:
                assert shares[i] >= shares[j], (counts, shares)


@HYPOTHESIS
@given(small_counts, st.integers(min_value=1, max_value=50))
def test_percentages_depend_only_on_proportions(counts, factor):
    if sum(counts) == 0:
        return
    assert percentages([c * factor for c in counts]) == percentages(counts)


@HYPOTHESIS
@given(st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=6))
def test_percentages_are_exact_when_the_share_is_a_whole_tenth(counts):
    total = sum(counts)
    shares = percentages(counts)
    for c, p in zip(counts, shares):
        if total and (c * 1000) % total == 0:
            assert tenths(p) == c * 1000 // total


@pytest.mark.parametrize(
    "counts, expected",
    [
        ([], []),
        ([0, 0], [0.0, 0.0]),
        ([3, 1], [75.0, 25.0]),
        ([1, 1, 1], [33.4, 33.3, 33.3]),  # the spare tenth goes to the earliest tie
        ([2, 1], [66.7, 33.3]),
        ([1, 0, 0, 0], [100.0, 0.0, 0.0, 0.0]),
        ([1, 1, 1, 1, 1, 1, 1], [14.3, 14.3, 14.3, 14.3, 14.3, 14.3, 14.2]),
    ],
)
def test_percentages_examples(counts, expected):
    assert percentages(counts) == expected


# -- rate -------------------------------------------------------------------------------------


@HYPOTHESIS
@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=10**6))
def test_rate_is_the_rounded_share_in_percent(part, whole):
    r = rate(part, whole)
    assert isinstance(r, float)
    if whole == 0:
        assert r == 0.0
        return
    assert is_one_decimal(r)
    assert abs(Fraction(r).limit_denominator(10) - Fraction(part * 100, whole)) <= Fraction(1, 20) + Fraction(1, 10**9)
    if part == whole:
        assert r == 100.0
    if part == 0:
        assert r == 0.0


@HYPOTHESIS
@given(
    st.integers(min_value=0, max_value=1000),
    st.integers(min_value=0, max_value=1000),
    st.integers(min_value=1, max_value=1000),
)
def test_rate_is_monotone_in_part(a, b, whole):
    low, high = sorted((a, b))
    assert rate(low, whole) <= rate(high, whole)


@pytest.mark.parametrize(
    "part, whole, expected",
    [
        (0, 0, 0.0),
        (5, 0, 0.0),
        (1, 3, 33.3),
        (2, 3, 66.7),
        (1, 8, 12.5),
        (3, 2, 150.0),
        (7, 7, 100.0),
    ],
)
def test_rate_examples(part, whole, expected):
    assert rate(part, whole) == expected
