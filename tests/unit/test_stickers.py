"""domain/stickers.check_stickers: the rules a story's sticker list must follow."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import InvalidInput
from domain.stickers import (
    INTERACTIVE_TYPES,
    MAX_STICKERS,
    PAYLOAD_TYPES,
    STICKER_TYPES,
    StickerType,
    check_stickers,
    interactive_sticker,
    parse_timestamp,
)

DECORATIVE_TYPES = tuple(t for t in STICKER_TYPES if t not in INTERACTIVE_TYPES)  # mention, location, music, link
HYPOTHESIS = settings(max_examples=150)


# -- builders ----------------------------------------------------------------------------

PAYLOADS = {
    "poll": {"question": "Tea or coffee?", "options": [{"text": "tea"}, {"text": "coffee"}]},
    "quiz": {"question": "2 + 2?", "options": [{"text": "3"}, {"text": "4"}, {"text": "5"}], "correct_answer_index": 1},
    "question": {"text": "Ask me anything"},
    "countdown": {"title": "Launch", "end_time": "2026-02-01T00:00:00Z"},
    "slider": {"question": "How hot?", "emoji": "🔥", "min_value": 0.0, "max_value": 10.0},
    "mention": {"user_id": "bob"},
    "location": {"name": "Lisbon", "lat": 38.72, "lng": -9.14},
    "music": {"title": "Song", "artist": "Band", "track_id": "t-1"},
    "link": {"url": "https://example.com", "label": "read"},
}


def make_sticker(kind: str, payload: dict | None = None, **overrides) -> dict:
    """A valid sticker of ``kind``; ``payload`` replaces the payload, overrides the rest."""
    sticker = {
        "sticker_type": kind,
        "x": 0.5,
        "y": 0.5,
        "width": 0.3,
        "height": 0.1,
        "rotation": 0.0,
        kind: copy.deepcopy(PAYLOADS[kind]) if payload is None else payload,
    }
    sticker.update(overrides)
    return sticker


def problems(stickers: list[dict]) -> set[str]:
    """The fields check_stickers complains about (empty when the list is valid)."""
    try:
        check_stickers(stickers)
    except InvalidInput as error:
        assert error.code == "validation_error"
        assert error.details, "an InvalidInput from check_stickers lists its problems"
        return {d["field"] for d in error.details}
    return set()


# -- strategies ----------------------------------------------------------------------------

unit = st.floats(min_value=0, max_value=1)
short_text = st.text(min_size=1, max_size=20)
option_lists = st.lists(st.builds(lambda t: {"text": t}, short_text), min_size=2, max_size=4)
fixed_zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])
end_times = st.one_of(
    st.datetimes(timezones=fixed_zones).map(datetime.isoformat),
    st.datetimes().map(datetime.isoformat),  # no zone: taken as UTC
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat().replace("+00:00", "Z")),
)
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@st.composite
def quiz_payloads(draw):
    options = draw(option_lists)
    return {
        "question": draw(short_text),
        "options": options,
        "correct_answer_index": draw(st.integers(0, len(options) - 1)),
    }


@st.composite
def slider_payloads(draw):
    low = draw(finite)
    high = draw(finite.filter(lambda h: h > low))
    return {"question": draw(short_text), "emoji": "😍", "min_value": low, "max_value": high}


VALID_PAYLOADS = {
    "poll": st.fixed_dictionaries({"question": short_text, "options": option_lists}),
    "quiz": quiz_payloads(),
    "question": st.fixed_dictionaries({"text": short_text}),
    "countdown": st.fixed_dictionaries({"title": short_text, "end_time": end_times}),
    "slider": st.one_of(slider_payloads(), st.just({"question": "defaults 0..1"})),
    "mention": st.fixed_dictionaries({"user_id": st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True)}),
    "location": st.fixed_dictionaries(
        {
            "name": short_text,
            "lat": st.floats(min_value=-90, max_value=90),
            "lng": st.floats(min_value=-180, max_value=180),
        }
    ),
    "music": st.fixed_dictionaries({"title": short_text, "artist": short_text, "track_id": short_text}),
    "link": st.fixed_dictionaries({"url": st.just("https://example.com/x")}, optional={"label": short_text}),
}


@st.composite
def valid_stickers(draw, kind: str):
    sticker = {"sticker_type": kind, kind: draw(VALID_PAYLOADS[kind])}
    for name in ("x", "y", "width", "height"):
        if draw(st.booleans()):  # a missing position takes the default
            sticker[name] = draw(unit)
    if draw(st.booleans()):
        sticker["rotation"] = draw(st.floats(min_value=-180, max_value=180))
    return sticker


@st.composite
def valid_sticker_lists(draw, min_size: int = 0):
    """Up to 10 stickers, at most one of each interactive type, in any order."""
    interactive = draw(st.lists(st.sampled_from(sorted(INTERACTIVE_TYPES)), unique=True))
    decorative = draw(st.lists(st.sampled_from(DECORATIVE_TYPES), max_size=MAX_STICKERS - len(interactive)))
    kinds = draw(st.permutations(interactive + decorative))
    stickers = [draw(valid_stickers(kind)) for kind in kinds]
    if len(stickers) < min_size:
        stickers += [draw(valid_stickers("music")) for _ in range(min_size - len(stickers))]
    return stickers


# Each breaker takes a valid list and returns (broken list, a field the checker must name).


@st.composite
def broken_sticker_lists(draw):
    stickers = draw(valid_sticker_lists(min_size=1))
    i = draw(st.integers(0, len(stickers) - 1))
    target = stickers[i]
    kind = target["sticker_type"]
    how = draw(
        st.sampled_from(
            [
                "too_many",
                "duplicate_interactive",
                "position",
                "rotation",
                "unknown_type",
                "no_payload",
                "extra_payload",
                "payload_misnamed",
                "type_specific",
            ]
        )
    )
    if how == "too_many":
        extra = draw(
            st.lists(valid_stickers("link"), min_size=MAX_STICKERS + 1 - len(stickers), max_size=5 + MAX_STICKERS)
        )
        return stickers + extra, "stickers."
    if how == "duplicate_interactive":
        twin_kind = draw(st.sampled_from(sorted(INTERACTIVE_TYPES)))
        present = [s for s in stickers if s["sticker_type"] == twin_kind]
        stickers = stickers[: MAX_STICKERS - 1 - (not present)]  # stay within 10 once the twins are in
        if not any(s["sticker_type"] == twin_kind for s in stickers):
            stickers.append(draw(valid_stickers(twin_kind)))
        stickers.append(draw(valid_stickers(twin_kind)))
        return stickers, f"stickers.{len(stickers) - 1}.sticker_type"
    if how == "position":
        name = draw(st.sampled_from(["x", "y", "width", "height"]))
        target[name] = draw(
            st.one_of(
                st.floats(max_value=0, exclude_max=True, allow_nan=False),
                st.floats(min_value=1, exclude_min=True, allow_nan=False),
                st.just(float("nan")),
            )
        )
        return stickers, f"stickers.{i}.{name}"
    if how == "rotation":
        target["rotation"] = draw(
            st.one_of(
                st.floats(max_value=-180, exclude_max=True, allow_nan=False),
                st.floats(min_value=180, exclude_min=True, allow_nan=False),
            )
        )
        return stickers, f"stickers.{i}.rotation"
    if how == "unknown_type":
        target["sticker_type"] = draw(st.sampled_from(["gif", "Poll", "", None, "emoji"]))
        return stickers, f"stickers.{i}.sticker_type"
    if how == "no_payload":
        del target[kind]
        return stickers, f"stickers.{i}"
    if how == "extra_payload":
        other = draw(st.sampled_from([t for t in STICKER_TYPES if t != kind]))
        target[other] = copy.deepcopy(PAYLOADS[other])
        return stickers, f"stickers.{i}"
    if how == "payload_misnamed":
        other = draw(st.sampled_from([t for t in STICKER_TYPES if t != kind]))
        target[other] = target.pop(kind)
        return stickers, f"stickers.{i}"
    # type specific: break the payload in a way only its own rule catches
    payload = target[kind]
    if kind in ("poll", "quiz") and draw(st.booleans()):
        payload["options"] = draw(
            st.one_of(
                st.just([]),
                st.lists(st.just({"text": "o"}), min_size=1, max_size=1),
                st.lists(st.just({"text": "o"}), min_size=5, max_size=8),
            )
        )
        if kind == "quiz":
            payload["correct_answer_index"] = 0
        return stickers, f"stickers.{i}.{kind}.options"
    if kind in ("poll", "quiz"):  # a quiz pointing past its options (a poll becomes such a quiz)
        options = payload["options"]
        bad = draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=len(options))))
        target.pop(kind)
        target["sticker_type"] = "quiz"
        target["quiz"] = {**payload, "correct_answer_index": bad}
        if any(s["sticker_type"] == "quiz" for j, s in enumerate(stickers) if j != i):
            stickers = [s for j, s in enumerate(stickers) if j == i or s["sticker_type"] != "quiz"]
            i = stickers.index(target)
        return stickers, f"stickers.{i}.quiz.correct_answer_index"
    if kind == "slider":
        low = draw(finite)
        payload["min_value"], payload["max_value"] = low, draw(st.floats(max_value=low, allow_nan=False))
        return stickers, f"stickers.{i}.slider.max_value"
    if kind == "countdown":
        payload["end_time"] = draw(
            st.sampled_from(["", "tomorrow", "2026-13-01T00:00:00", "2026-02-30T10:00:00Z", "12:00", None, 1767225600])
        )
        if payload["end_time"] is None:
            del payload["end_time"]
        return stickers, f"stickers.{i}.countdown.end_time"
    if kind == "location":
        name, limit = draw(st.sampled_from([("lat", 90), ("lng", 180)]))
        payload[name] = draw(
            st.one_of(
                st.floats(min_value=limit, exclude_min=True, allow_nan=False),
                st.floats(max_value=-limit, exclude_max=True, allow_nan=False),
            )
        )
        return stickers, f"stickers.{i}.location.{name}"
    # question / mention / music / link have no payload rules here: drop the payload instead
    del target[kind]
    return stickers, f"stickers.{i}"


# -- properties ----------------------------------------------------------------------------


@HYPOTHESIS
@given(valid_sticker_lists())
def test_valid_sticker_lists_pass(stickers):
    assert problems(stickers) == set()


@HYPOTHESIS
@given(valid_sticker_lists())
def test_every_payload_the_rules_accept_reads_as_its_typed_payload(stickers):
    for sticker in stickers:
        kind = StickerType(sticker["sticker_type"])
        payload = PAYLOAD_TYPES[kind].from_dict(sticker[kind])
        assert payload == PAYLOAD_TYPES[kind].from_dict(copy.deepcopy(sticker[kind]))
    assert set(PAYLOAD_TYPES) == set(StickerType)


@HYPOTHESIS
@given(broken_sticker_lists())
def test_each_broken_rule_is_reported_with_its_field(case):
    stickers, field = case
    found = problems(stickers)
    assert field in found, (field, found)


@settings(max_examples=100)
@given(valid_sticker_lists(), st.data())
def test_interactive_sticker_finds_the_right_sticker(stickers, data):
    if stickers:
        i = data.draw(st.integers(0, len(stickers) - 1))
        assert interactive_sticker(stickers, i) is stickers[i]
        assert interactive_sticker(stickers, i, stickers[i]["sticker_type"]) is stickers[i]
    for bad in (-1, len(stickers), len(stickers) + 5):
        with pytest.raises(InvalidInput) as info:
            interactive_sticker(stickers, bad)
        assert info.value.code == "sticker_not_found"


# -- examples: count and uniqueness -----------------------------------------------------------------


def test_empty_list_is_fine():
    assert problems([]) == set()


def test_ten_stickers_allowed_eleven_not():
    ten = [make_sticker(k) for k in sorted(INTERACTIVE_TYPES)] + [make_sticker("link") for _ in range(5)]
    assert problems(ten) == set()
    assert problems([*ten, make_sticker("music")]) == {"stickers."}


@pytest.mark.parametrize("kind", sorted(INTERACTIVE_TYPES))
def test_one_of_each_interactive_type(kind):
    assert problems([make_sticker(kind), make_sticker("music"), make_sticker(kind)]) == {"stickers.2.sticker_type"}


@pytest.mark.parametrize("kind", DECORATIVE_TYPES)
def test_decorative_types_may_repeat(kind):
    assert problems([make_sticker(kind), make_sticker(kind), make_sticker(kind)]) == set()


def test_every_interactive_type_together_is_fine():
    assert problems([make_sticker(k) for k in STICKER_TYPES]) == set()


# -- examples: geometry --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x", "y", "width", "height"])
def test_positions_are_inclusive_0_to_1(name):
    assert problems([make_sticker("music", **{name: 0}), make_sticker("music", **{name: 1})]) == set()
    assert problems([make_sticker("music", **{name: -0.01})]) == {f"stickers.0.{name}"}
    assert problems([make_sticker("music", **{name: 1.01})]) == {f"stickers.0.{name}"}


def test_missing_positions_are_fine():
    assert problems([{"sticker_type": "question", "question": {"text": "hi"}}]) == set()


def test_rotation_is_inclusive_minus_180_to_180():
    assert problems([make_sticker("music", rotation=-180), make_sticker("music", rotation=180)]) == set()
    assert problems([make_sticker("music", rotation=180.5)]) == {"stickers.0.rotation"}
    assert problems([make_sticker("music", rotation=-181)]) == {"stickers.0.rotation"}


def test_problems_of_several_stickers_are_all_listed():
    stickers = [make_sticker("poll", x=2), make_sticker("link", rotation=400), make_sticker("poll")]
    assert problems(stickers) == {"stickers.0.x", "stickers.1.rotation", "stickers.2.sticker_type"}


# -- examples: payloads -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STICKER_TYPES)
def test_each_type_needs_its_own_payload(kind):
    missing = make_sticker(kind)
    del missing[kind]
    assert problems([missing]) == {"stickers.0"}
    none = make_sticker(kind, **{kind: None})
    assert problems([none]) == {"stickers.0"}


@pytest.mark.parametrize("kind", STICKER_TYPES)
def test_a_second_payload_is_rejected(kind):
    other = "music" if kind != "music" else "link"
    assert problems([make_sticker(kind, **{other: PAYLOADS[other]})]) == {"stickers.0"}


def test_another_types_payload_set_to_none_is_ignored():
    assert problems([make_sticker("poll", quiz=None, link=None)]) == set()


@pytest.mark.parametrize("kind", ["poll", "quiz"])
@pytest.mark.parametrize("count", [0, 1, 5])
def test_poll_and_quiz_need_2_to_4_options(kind, count):
    payload = {**PAYLOADS[kind], "options": [{"text": str(n)} for n in range(count)], "correct_answer_index": 0}
    if kind == "poll":
        del payload["correct_answer_index"]
    assert f"stickers.0.{kind}.options" in problems([make_sticker(kind, payload)])


@pytest.mark.parametrize("count", [2, 3, 4])
def test_poll_with_2_to_4_options(count):
    payload = {"question": "?", "options": [{"text": str(n)} for n in range(count)]}
    assert problems([make_sticker("poll", payload)]) == set()


@pytest.mark.parametrize(("index", "ok"), [(0, True), (2, True), (3, False), (-1, False), (None, False)])
def test_quiz_correct_answer_must_point_at_an_option(index, ok):
    payload = {**PAYLOADS["quiz"], "correct_answer_index": index}  # three options
    if index is None:
        del payload["correct_answer_index"]
    expected = set() if ok else {"stickers.0.quiz.correct_answer_index"}
    assert problems([make_sticker("quiz", payload)]) == expected


@pytest.mark.parametrize(
    ("low", "high", "ok"),
    [(0, 1, True), (-5, 5, True), (1, 1, False), (2, 1, False), (None, None, True), (None, 0, False), (1, None, False)],
)
def test_slider_min_below_max(low, high, ok):
    payload = {"question": "?"}
    if low is not None:
        payload["min_value"] = low
    if high is not None:
        payload["max_value"] = high
    assert problems([make_sticker("slider", payload)]) == (set() if ok else {"stickers.0.slider.max_value"})


@pytest.mark.parametrize(
    "end_time",
    [
        "2026-02-01T00:00:00Z",
        "2026-02-01T00:00:00+00:00",
        "2026-02-01T05:30:00+05:30",
        "2026-02-01T00:00:00",
        "2026-02-01T00:00:00.123456Z",
    ],
)
def test_countdown_end_time_iso(end_time):
    assert problems([make_sticker("countdown", {"title": "t", "end_time": end_time})]) == set()


@pytest.mark.parametrize("end_time", ["", "soon", "01/02/2026 10:00", "2026-02-01T24:01:00", None, 1767225600, []])
def test_countdown_end_time_not_iso(end_time):
    payload = {"title": "t", "end_time": end_time}
    assert problems([make_sticker("countdown", payload)]) == {"stickers.0.countdown.end_time"}


def test_countdown_without_end_time():
    assert problems([make_sticker("countdown", {"title": "t"})]) == {"stickers.0.countdown.end_time"}


def test_parse_timestamp_treats_naive_as_utc_and_z_as_utc():
    utc = datetime(2026, 2, 1, tzinfo=UTC)
    assert parse_timestamp("2026-02-01T00:00:00") == utc
    assert parse_timestamp("2026-02-01T00:00:00Z") == utc
    assert parse_timestamp("2026-02-01T05:30:00+05:30") == utc


@pytest.mark.parametrize(("lat", "lng"), [(90, 180), (-90, -180), (0, 0)])
def test_location_in_range(lat, lng):
    assert problems([make_sticker("location", {"name": "p", "lat": lat, "lng": lng})]) == set()


@pytest.mark.parametrize(
    ("lat", "lng", "field"),
    [(90.1, 0, "lat"), (-91, 0, "lat"), (0, 180.5, "lng"), (0, -181, "lng"), (float("nan"), 0, "lat")],
)
def test_location_out_of_range(lat, lng, field):
    assert problems([make_sticker("location", {"name": "p", "lat": lat, "lng": lng})]) == {
        f"stickers.0.location.{field}"
    }


def test_interactive_sticker_checks_the_type():
    stickers = [make_sticker("poll"), make_sticker("music")]
    assert interactive_sticker(stickers, 0, "poll") is stickers[0]
    with pytest.raises(InvalidInput):
        interactive_sticker(stickers, 1, "poll")
    with pytest.raises(InvalidInput):
        interactive_sticker(stickers, 0, "quiz")


@HYPOTHESIS
@given(
    valid_stickers("quiz"),
    st.lists(st.integers(0, 50), min_size=4, max_size=4),
    st.integers(0, 50),
    st.sampled_from(["owner", "answered", "other"]),
)
def test_a_quiz_gives_nothing_away_before_an_attempt(quiz, counts, correct, who):
    """Counts such as [1, 2, 0] with 2 correct attempts would reveal the answer: only the owner and
    those who answered get them (contract, Query API)."""
    from datetime import datetime

    from read_api.presenter import sticker_with_results

    now = datetime(2026, 1, 1, tzinfo=UTC)
    stickers = [{"x": 0.5, "y": 0.5, "width": 0.2, "height": 0.1, "rotation": 0.0, **quiz}]
    for i, sticker in enumerate(stickers):
        options = {str(k): n for k, n in enumerate(counts[: len(sticker["quiz"]["options"])])}
        results = {str(i): {"total": sum(options.values()), "options": options, "correct": correct}}
        mine = {"option": 0} if who == "answered" else {}
        served = sticker_with_results(i, copy.deepcopy(sticker), results, mine, who == "owner", now, None)["quiz"]
        if who == "other":
            assert served["options"] == [{"text": o["text"]} for o in sticker["quiz"]["options"]]
            assert not {"correct_answer_index", "total_attempts", "correct_attempts"} & set(served)
        else:
            assert served["correct_answer_index"] == sticker["quiz"]["correct_answer_index"]
            assert [o["selected_count"] for o in served["options"]] == list(options.values())
            assert served["correct_attempts"] == correct


@HYPOTHESIS
@given(
    st.lists(
        st.floats(min_value=-1.7976931348623157e308, max_value=1.7976931348623157e308, allow_nan=False),
        min_size=1,
        max_size=50,
    )
)
def test_a_slider_average_is_right_for_any_finite_values(values):
    """Issue 11: answers near the ends of a huge range overflowed the sum, and the average was null."""
    import math
    from fractions import Fraction

    from projections.redis_schema import SLIDER_SUM_SCALE
    from read_api.presenter import slider_average

    ssum = 0.0
    for v in values:  # what the stores do: one increment per answer
        ssum += v * SLIDER_SUM_SCALE
    average = slider_average({"total": len(values), "ssum": ssum}, len(values))
    exact = float(sum(map(Fraction, values)) / len(values))
    assert average is not None and math.isfinite(average)
    assert math.isclose(average, round(exact, 3), rel_tol=1e-9, abs_tol=1e-3 + 1e-9 * max(map(abs, values)))
