"""Command API request models, the per-user rate limiter and the idempotency fingerprint."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import get_args
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from commands import models
from commands.idempotency import request_fingerprint
from domain.platform import Platform
from domain.stories import EXPIRY_HOURS, Story, StoryType
from domain.visibility import Privacy
from write_api.rate_limit import RateLimiter

DROP = object()


# -- builders ----------------------------------------------------------------------------


def story_body(**overrides) -> dict:
    body = {"story_type": "image", "media_url": "https://cdn.example/a.jpg"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not DROP}


def sticker(kind: str, **overrides) -> dict:
    payloads = {
        "poll": {"question": "Tea?", "options": [{"text": "yes"}, {"text": "no"}]},
        "quiz": {"question": "2+2", "options": [{"text": "3"}, {"text": "4"}], "correct_answer_index": 1},
        "question": {"text": "Ask"},
        "countdown": {"title": "Launch", "end_time": "2026-02-01T00:00:00Z"},
        "slider": {"question": "Hot?", "min_value": 0, "max_value": 10},
        "mention": {"user_id": "bob"},
        "location": {"name": "Lisbon", "lat": 38.7, "lng": -9.1},
        "music": {"title": "Song", "artist": "Band", "track_id": "t1"},
        "link": {"url": "https://example.com", "label": "go"},
    }
    return {"sticker_type": kind, kind: payloads[kind], **overrides}


def error_locs(model, body: dict) -> set[tuple]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return {tuple(e["loc"]) for e in info.value.errors()}


def rejected(model, body: dict) -> bool:
    try:
        model.model_validate(body)
    except ValidationError:
        return True
    return False


class Clock:
    """A monotonic clock in seconds that the test moves."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# -- CreateStory ------------------------------------------------------------------------------


def test_minimal_story_body_gets_the_defaults():
    body = models.CreateStory.model_validate(story_body())
    assert body.duration == 5 and body.expires_in_hours == 24 and body.allow_replies == "everyone"
    assert body.privacy is None and body.stickers == [] and body.allowed_viewer_ids == []
    fields = body.fields()
    assert fields["media_url"] == "https://cdn.example/a.jpg" and "privacy" not in fields and "media_id" not in fields


def test_full_story_body_is_accepted_and_the_domain_takes_its_fields():
    body = story_body(
        story_type="video",
        media_id="m-1",
        thumbnail_url="https://cdn.example/t.jpg",
        text_content="caption",
        background_color="#112233",
        background_gradient=["#000000", "#FFFFFFFF"],
        duration=15,
        stickers=[
            sticker(k)
            for k in ("poll", "quiz", "question", "countdown", "slider", "mention", "location", "music", "link")
        ],
        privacy="custom",
        allowed_viewer_ids=["bob", "carol"],
        hidden_from_ids=["dave"],
        allow_replies="audience",
        expires_in_hours=48,
    )
    fields = models.CreateStory.model_validate(body).fields()
    story = Story.create(uuid4(), "alice", fields, Platform.VIGNETTE, datetime(2026, 1, 1, tzinfo=UTC))
    assert story.fields["privacy"] == "custom" and len(story.stickers) == 9
    assert story.stickers[0]["poll"]["options"] == [{"text": "yes"}, {"text": "no"}]
    assert "quiz" not in story.stickers[0]  # unset payloads are left out, so exactly one payload remains


def test_text_story_body():
    assert models.CreateStory.model_validate({"story_type": "text", "text_content": "hi"}).text_content == "hi"


@pytest.mark.parametrize("where", ["top", "sticker", "payload", "option"])
def test_extra_fields_are_rejected_at_every_level(where):
    body = story_body(stickers=[sticker("poll")])
    target = {
        "top": body,
        "sticker": body["stickers"][0],
        "payload": body["stickers"][0]["poll"],
        "option": body["stickers"][0]["poll"]["options"][0],
    }[where]
    target["user_id"] = "mallory"
    assert rejected(models.CreateStory, body)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("story_type", "gif"),
        ("duration", 0.5),
        ("duration", 16),
        ("duration", float("nan")),
        ("expires_in_hours", 36),
        ("expires_in_hours", "24h"),
        ("privacy", "private"),
        ("allow_replies", "no"),
        ("background_color", "red"),
        ("background_gradient", ["#000000"]),
        ("background_gradient", ["#000000"] * 6),
        ("media_url", "ftp://cdn.example/a.jpg"),
        ("media_url", "not a url"),
        ("media_id", ""),
        ("media_url", "https://cdn.example/" + "a" * 2048),
        ("text_content", "x" * 2201),
        ("allowed_viewer_ids", ["has space"]),
        ("hidden_from_ids", ["x" * 65]),
        ("allowed_viewer_ids", ["u"] * 1001),
        ("stickers", [sticker("link")] * 11),
    ],
)
def test_story_field_bounds(field, value):
    assert {loc[0] for loc in error_locs(models.CreateStory, story_body(**{field: value}))} == {field}


@pytest.mark.parametrize(
    ("field", "value"),
    [("duration", 1), ("duration", 15), ("text_content", "x" * 2200), ("expires_in_hours", 6), ("privacy", "friends")],
)
def test_story_field_bounds_inclusive(field, value):
    models.CreateStory.model_validate(story_body(**{field: value}))


def test_story_type_is_required():
    assert ("story_type",) in error_locs(models.CreateStory, story_body(story_type=DROP))


# -- Sticker ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["poll", "quiz", "question", "countdown", "slider", "mention", "location", "music", "link"]
)
def test_each_sticker_type_is_accepted(kind):
    parsed = models.Sticker.model_validate(sticker(kind))
    assert parsed.sticker_type == kind and getattr(parsed, kind) is not None


@pytest.mark.parametrize(
    "body",
    [
        sticker("poll", x=1.5),
        sticker("poll", y=-0.1),
        sticker("poll", width=2),
        sticker("poll", height=-1),
        sticker("poll", rotation=181),
        sticker("poll", rotation=-180.5),
        {"sticker_type": "poll", "poll": {"question": "q", "options": [{"text": "only"}]}},
        {"sticker_type": "poll", "poll": {"question": "q", "options": [{"text": str(i)} for i in range(5)]}},
        {"sticker_type": "poll", "poll": {"question": "", "options": [{"text": "a"}, {"text": "b"}]}},
        {"sticker_type": "poll", "poll": {"question": "q", "options": [{"text": "a"}, {"text": "b" * 201}]}},
        {
            "sticker_type": "quiz",
            "quiz": {"question": "q", "options": [{"text": "a"}, {"text": "b"}], "correct_answer_index": 4},
        },
        {"sticker_type": "slider", "slider": {"question": "q", "max_value": float("inf")}},
        {"sticker_type": "location", "location": {"name": "n", "lat": 91, "lng": 0}},
        {"sticker_type": "location", "location": {"name": "n", "lat": 0, "lng": -181}},
        {"sticker_type": "mention", "mention": {"user_id": "bad id"}},
        {"sticker_type": "link", "link": {"url": "javascript:alert(1)"}},
        {"sticker_type": "sparkles"},
    ],
)
def test_sticker_bounds(body):
    assert rejected(models.Sticker, body)


def test_sticker_defaults():
    parsed = models.Sticker.model_validate({"sticker_type": "question", "question": {"text": "?"}})
    assert (parsed.x, parsed.y, parsed.width, parsed.height, parsed.rotation) == (0.5, 0.5, 0.3, 0.1, 0.0)


# -- other bodies -------------------------------------------------------------------------------


def test_reply_body():
    assert models.ReplyToStory.model_validate({"text": "hi"}).text == "hi"
    for bad in ({"text": ""}, {"text": "x" * 1001}, {}, {"text": "hi", "user_id": "x"}):
        assert rejected(models.ReplyToStory, bad)


@pytest.mark.parametrize(
    "body",
    [
        {"sticker_index": 0, "option_index": 3},
        {"sticker_index": 9, "action": "tap"},
        {"sticker_index": 0, "text": "x" * 500},
        {"sticker_index": 1, "value": -5.5},
        {"sticker_index": 2, "action": "unfollow"},
    ],
)
def test_interact_bodies(body):
    assert models.Interact.model_validate(body).model_dump(exclude_none=True) == body


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"sticker_index": -1},
        {"sticker_index": 10},
        {"sticker_index": 0, "option_index": 4},
        {"sticker_index": 0, "text": ""},
        {"sticker_index": 0, "action": "like"},
        {"sticker_index": 0, "value": float("nan")},
        {"sticker_index": 0, "extra": 1},
    ],
)
def test_interact_bounds(body):
    assert rejected(models.Interact, body)


@pytest.mark.parametrize(
    "body",
    [
        {"sticker_index": 0, "option_index": True},
        {"sticker_index": 0, "value": True},
        {"sticker_index": True, "action": "tap"},
    ],
)
def test_interact_rejects_booleans_as_numbers(body):
    assert rejected(models.Interact, body)


def test_create_highlight_body():
    body = models.CreateHighlight.model_validate({"title": "Trips", "story_ids": ["a"]})
    assert body.is_pinned is False and body.description is None
    for bad in (
        {"title": "", "story_ids": ["a"]},
        {"title": "x" * 51, "story_ids": ["a"]},
        {"title": "t", "story_ids": []},
        {"title": "t", "story_ids": ["a"] * 1001},
        {"title": "t", "story_ids": ["a"], "description": "d" * 201},
        {"title": "t", "story_ids": [""]},
        {"title": "t", "story_ids": ["a"], "user_id": "x"},
    ):
        assert rejected(models.CreateHighlight, bad), bad


def test_update_highlight_changes_are_only_the_fields_sent():
    assert models.UpdateHighlight.model_validate({"title": "New"}).changes() == {"title": "New"}
    assert models.UpdateHighlight.model_validate({"cover": None}).changes() == {"cover": None}
    assert models.UpdateHighlight.model_validate({"description": None, "is_pinned": True}).changes() == {
        "description": None,
        "is_pinned": True,
    }


@pytest.mark.parametrize(
    "body", [{}, {"title": None}, {"is_pinned": None}, {"is_archived": None}, {"title": ""}, {"story_ids": ["a"]}]
)
def test_update_highlight_rejects_empty_and_null_required(body):
    assert rejected(models.UpdateHighlight, body)


def test_highlight_stories_and_reorder_bodies():
    assert models.HighlightStories.model_validate({"story_ids": ["a", "b"]}).story_ids == ["a", "b"]
    assert rejected(models.HighlightStories, {"story_ids": []})
    assert models.ReorderHighlights.model_validate({"highlight_ids": []}).highlight_ids == []
    assert rejected(models.ReorderHighlights, {"highlight_ids": ["h"] * 1001})


# -- RateLimiter ------------------------------------------------------------------------------


def test_burst_then_wait():
    clock = Clock()
    limiter = RateLimiter(rate_per_s=1, burst=3, clock=clock)
    assert [limiter.retry_after("u") for _ in range(3)] == [0, 0, 0]
    assert limiter.retry_after("u") == 1
    clock.t += 0.5
    assert limiter.retry_after("u") == 1  # half a token: still wait, at least 1 s
    clock.t += 0.5
    assert limiter.retry_after("u") == 0
    assert limiter.retry_after("u") == 1


def test_retry_after_is_the_time_to_the_next_token():
    clock = Clock()
    limiter = RateLimiter(rate_per_s=0.1, burst=1, clock=clock)  # one token every 10 s
    assert limiter.retry_after("u") == 0
    assert limiter.retry_after("u") == 10
    clock.t += 3
    assert limiter.retry_after("u") == 7
    clock.t += 7
    assert limiter.retry_after("u") == 0


def test_refill_is_capped_at_the_burst():
    clock = Clock()
    limiter = RateLimiter(rate_per_s=10, burst=2, clock=clock)
    limiter.retry_after("u")
    clock.t += 3600
    assert [limiter.retry_after("u") for _ in range(3)] == [0, 0, 1]


def test_users_have_their_own_buckets():
    clock = Clock()
    limiter = RateLimiter(rate_per_s=1, burst=1, clock=clock)
    assert limiter.retry_after("a") == 0
    assert limiter.retry_after("a") == 1
    assert limiter.retry_after("b") == 0


def test_zero_rate_disables_the_limit():
    limiter = RateLimiter(rate_per_s=0, burst=0, clock=Clock())
    assert all(limiter.retry_after("u") == 0 for _ in range(1000))


@settings(max_examples=100)
@given(
    rate=st.sampled_from([0.5, 1, 2, 5]),
    burst=st.integers(1, 5),
    gaps=st.lists(st.floats(min_value=0, max_value=3), min_size=1, max_size=40),
)
def test_never_more_than_burst_plus_rate_times_elapsed(rate, burst, gaps):
    """Token bucket bound: over any run, allowed <= burst + rate * elapsed; a denial's wait is honest."""
    clock = Clock()
    limiter = RateLimiter(rate_per_s=rate, burst=burst, clock=clock)
    start, allowed = clock.t, 0
    for gap in gaps:
        clock.t += gap
        wait = limiter.retry_after("u")
        if wait == 0:
            allowed += 1
        else:
            assert wait >= 1
            # Waiting as told is enough. (The bucket is kept in floats: waiting *exactly* ``wait``
            # can leave 1 - 1e-14 tokens, so the check allows a microsecond more.)
            clock.t += wait + 1e-6
            assert limiter.retry_after("u") == 0
            allowed += 1
        assert allowed <= burst + rate * (clock.t - start) + 1e-9


# -- request_fingerprint ------------------------------------------------------------------------


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=15,
)


def reversed_keys(value):
    if isinstance(value, dict):
        return {k: reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(v) for v in value]
    return value


@settings(max_examples=150)
@given(st.dictionaries(st.text(max_size=5), json_values, max_size=5))
def test_fingerprint_is_stable_under_key_order_at_every_depth(body):
    assert request_fingerprint("POST", "/api/v1/stories", body) == request_fingerprint(
        "POST", "/api/v1/stories", reversed_keys(body)
    )


def test_fingerprint_depends_on_method_path_and_body():
    body = {"text": "hi"}
    base = request_fingerprint("POST", "/api/v1/stories/1/reply", body)
    assert base == request_fingerprint("POST", "/api/v1/stories/1/reply", {"text": "hi"})
    assert base != request_fingerprint("PUT", "/api/v1/stories/1/reply", body)
    assert base != request_fingerprint("POST", "/api/v1/stories/2/reply", body)
    assert base != request_fingerprint("POST", "/api/v1/stories/1/reply", {"text": "ho"})
    assert base != request_fingerprint("POST", "/api/v1/stories/1/reply", None)
    assert request_fingerprint("POST", "/p", [1, 2]) != request_fingerprint("POST", "/p", [2, 1])
    assert len(base) == 64 and int(base, 16) >= 0


# -- highlight cover ----------------------------------------------------------------------------


def test_highlight_cover_object():
    full = {"story_id": "s1", "media_url": "https://cdn.example/c.jpg", "emoji": "🌴", "color": "#12ab9F"}
    body = models.CreateHighlight.model_validate({"title": "t", "story_ids": ["s1"], "cover": full})
    assert body.model_dump(mode="json", exclude_none=True)["cover"] == full
    body = models.CreateHighlight.model_validate({"title": "t", "story_ids": ["s1"], "cover": {"emoji": "x"}})
    assert body.model_dump(mode="json", exclude_none=True)["cover"] == {"emoji": "x"}
    assert models.UpdateHighlight.model_validate({"cover": {"color": "#000000"}}).changes() == {
        "cover": {"color": "#000000"}
    }
    assert models.UpdateHighlight.model_validate({"cover": {}}).changes() == {"cover": {}}


@pytest.mark.parametrize(
    "cover",
    [
        "https://cdn.example/c.jpg",
        ["x"],
        {"media_url": "ftp://x/y"},
        {"media_url": "nope"},
        {"emoji": ""},
        {"emoji": "x" * 17},
        {"color": "red"},
        {"color": "#1234567"},
        {"color": "#12345678"},
        {"size": 1},
        {"story_id": ""},
        {"story_id": 5},
        {"emoji": True},
    ],
)
def test_bad_highlight_covers_are_rejected(cover):
    assert rejected(models.CreateHighlight, {"title": "t", "story_ids": ["s1"], "cover": cover})
    assert rejected(models.UpdateHighlight, {"cover": cover})


# -- ids in other spellings (issue 11 item 7) ------------------------------------------------------

CANONICAL = "0f8fad5b-d9cb-469f-a165-70867728950e"
SPELLINGS = [
    CANONICAL,
    CANONICAL.upper(),
    CANONICAL.replace("-", ""),
    CANONICAL.replace("-", "").upper(),
    "{" + CANONICAL + "}",
    "{" + CANONICAL.upper() + "}",
    "urn:uuid:" + CANONICAL,
    "URN:UUID:" + CANONICAL.upper(),
]
# UUID() takes these too, but they are no spelling of a UUID anyone writes: they name nothing.
NOT_IDS = [
    "",
    "not-a-uuid",
    CANONICAL[:-1],
    CANONICAL + "0",
    " " + CANONICAL,
    CANONICAL + "\n",
    "+" + CANONICAL.replace("-", "")[1:],
    CANONICAL.replace("-", "")[:31] + "_" + CANONICAL[-1],
    "{" + CANONICAL,
    CANONICAL + "}",
    "urn:" + CANONICAL,
    "uuid:" + CANONICAL,
    "0x" + CANONICAL[2:],
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_canonical_id_of_every_spelling(spelling):
    from domain.ids import canonical_id

    assert canonical_id(spelling) == CANONICAL


@pytest.mark.parametrize("value", [*NOT_IDS, None, 5, b"x"])
def test_canonical_id_of_what_is_no_uuid_is_none(value):
    from domain.ids import canonical_id

    assert canonical_id(value) is None


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_body_ids_are_canonicalised_at_the_edge(spelling):
    other = str(uuid4())
    body = models.CreateHighlight.model_validate(
        {"title": "t", "story_ids": [spelling, other.upper()], "cover": {"story_id": spelling}}
    )
    assert body.story_ids == [CANONICAL, other] and body.cover.story_id == CANONICAL
    assert body.model_dump(mode="json", exclude_none=True)["story_ids"] == [CANONICAL, other]
    assert models.HighlightStories.model_validate({"story_ids": [spelling]}).story_ids == [CANONICAL]
    assert models.ReorderHighlights.model_validate({"highlight_ids": [spelling]}).highlight_ids == [CANONICAL]
    assert models.UpdateHighlight.model_validate({"cover": {"story_id": spelling}}).changes() == {
        "cover": {"story_id": CANONICAL}
    }


def test_body_ids_that_are_no_uuid_are_kept_for_the_domain_to_reject():
    assert models.HighlightStories.model_validate({"story_ids": ["a", "not-a-uuid"]}).story_ids == ["a", "not-a-uuid"]


def test_the_bodies_offer_the_domains_expiry_choices():
    """``expires_in_hours`` stays a Literal (an enum of numbers in the OpenAPI document); its
    choices are the domain's."""
    for model in (models.CreateStory, models.ShareStory):
        assert get_args(model.model_fields["expires_in_hours"].annotation) == EXPIRY_HOURS


def test_the_domains_words_are_given_as_strings_and_come_out_as_its_enums():
    story = models.CreateStory.model_validate(story_body(privacy="close_friends"))
    assert story.story_type is StoryType.IMAGE and story.privacy is Privacy.CLOSE_FRIENDS
    with pytest.raises(ValidationError):
        models.CreateStory.model_validate(story_body(privacy="everyone"))
