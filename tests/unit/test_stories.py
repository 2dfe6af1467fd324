"""Story.create rules, delete, expire, liveness and who may engage with a story."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import uuid4

import pytest

from domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from domain.platform import Platform
from domain.stories import Story, StoryCreated, StoryDeleted, StoryExpired
from domain.visibility import Relationship

VIGNETTE, ENTATIVA = Platform.VIGNETTE, Platform.ENTATIVA
OWNER, OTHER = "alice", "bob"
FOLLOWER = Relationship(follows_owner=True)
STRANGER = Relationship()
DROP = object()  # an override value meaning "leave this field out"


# -- builders ----------------------------------------------------------------------------


def story_fields(**overrides) -> dict:
    """A valid image story body; overrides replace fields, ``DROP`` removes one."""
    fields = {"story_type": "image", "media_url": "https://cdn.example/a.jpg", "privacy": "public"}
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not DROP}


def text_fields(**overrides) -> dict:
    return story_fields(**{"story_type": "text", "media_url": DROP, "text_content": "hello", **overrides})


def make_story(clock, *, owner: str = OWNER, platform: Platform = VIGNETTE, **overrides) -> Story:
    return Story.create(uuid4(), owner, story_fields(**overrides), platform, clock())


def create_error(clock, fields: dict, *, platform: Platform = VIGNETTE, owner: str = OWNER) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        Story.create(uuid4(), owner, fields, platform, clock())
    return info.value


def problem_fields(error: InvalidInput) -> set[str]:
    return {d["field"] for d in error.details or []}


# -- create: the happy path ----------------------------------------------------------------


def test_create_records_one_story_created_event_with_defaults(clock):
    story = Story.create(uuid4(), OWNER, story_fields(privacy=DROP), VIGNETTE, clock())
    [event] = story.collect_events()
    assert isinstance(event, StoryCreated)
    assert event.originator_id == story.id and event.originator_version == 1
    assert event.occurred_at == clock()
    assert event.user_id == OWNER and event.story_id == str(story.id)
    assert event.duration == 5.0
    assert event.privacy == "followers"
    assert event.allow_replies == "everyone"
    assert event.stickers == [] and event.allowed_viewer_ids == [] and event.hidden_from_ids == []
    assert datetime.fromisoformat(event.expires_at) == clock() + timedelta(hours=24)
    assert story.owner_id == OWNER and story.version == 1
    assert story.created_at == clock() and story.expires_at == clock() + timedelta(hours=24)
    assert not story.deleted and not story.expired


def test_create_default_privacy_is_friends_on_entativa(clock):
    story = Story.create(uuid4(), OWNER, story_fields(privacy=DROP), ENTATIVA, clock())
    assert story.fields["privacy"] == "friends"


@pytest.mark.parametrize("story_type", ["image", "video"])
@pytest.mark.parametrize("media", [{"media_id": "m-1"}, {"media_url": "https://cdn.example/v.mp4"}])
def test_media_story_needs_either_media_id_or_media_url(clock, story_type, media):
    story = Story.create(
        uuid4(), OWNER, story_fields(**{"story_type": story_type, "media_url": DROP, **media}), VIGNETTE, clock()
    )
    assert story.fields["story_type"] == story_type


def test_text_story_with_text_content(clock):
    story = Story.create(uuid4(), OWNER, text_fields(background_color="#112233"), VIGNETTE, clock())
    assert story.fields["text_content"] == "hello" and story.fields["media_url"] is None


def test_lists_are_deduplicated_and_sorted(clock):
    story = make_story(
        clock, privacy="custom", allowed_viewer_ids=["zed", "bob", "zed"], hidden_from_ids=["y", "x", "y"]
    )
    assert story.fields["allowed_viewer_ids"] == ["bob", "zed"]
    assert story.allowed_viewer_ids == frozenset({"bob", "zed"})
    assert story.hidden_from_ids == frozenset({"x", "y"})


# -- create: story type, media and text ------------------------------------------------------


@pytest.mark.parametrize("story_type", ["gif", "", None, "IMAGE"])
def test_unknown_story_type_is_rejected(clock, story_type):
    assert "story_type" in problem_fields(create_error(clock, story_fields(story_type=story_type)))


def test_missing_story_type_is_rejected(clock):
    assert "story_type" in problem_fields(create_error(clock, story_fields(story_type=DROP)))


@pytest.mark.parametrize("story_type", ["image", "video"])
def test_media_story_without_media_is_rejected(clock, story_type):
    error = create_error(clock, story_fields(story_type=story_type, media_url=DROP, text_content="only text"))
    assert problem_fields(error) == {"media_url"}
    assert error.code == "validation_error"


@pytest.mark.parametrize("text", [DROP, None, "", "   \n\t"])
def test_text_story_without_text_is_rejected(clock, text):
    fields = story_fields(story_type="text", media_url=DROP, text_content=text)
    assert problem_fields(create_error(clock, fields)) == {"text_content"}


def test_text_content_limit_is_2200_characters(clock):
    Story.create(uuid4(), OWNER, text_fields(text_content="x" * 2200), VIGNETTE, clock())
    assert "text_content" in problem_fields(create_error(clock, text_fields(text_content="x" * 2201)))


def test_every_problem_is_listed_at_once(clock):
    fields = story_fields(duration=0, expires_in_hours=3, background_color="red", allow_replies="maybe")
    assert problem_fields(create_error(clock, fields)) == {
        "duration",
        "expires_in_hours",
        "background_color",
        "allow_replies",
    }


# -- create: duration, colours, expiry -----------------------------------------------------------


@pytest.mark.parametrize("duration", [1, 1.0, 5, 7.5, 15, 15.0])
def test_duration_inside_1_to_15_seconds(clock, duration):
    assert make_story(clock, duration=duration).fields["duration"] == float(duration)


@pytest.mark.parametrize("duration", [0, 0.99, 15.01, 16, -5, float("nan"), float("inf")])
def test_duration_outside_1_to_15_seconds_is_rejected(clock, duration):
    assert problem_fields(create_error(clock, story_fields(duration=duration))) == {"duration"}


@pytest.mark.parametrize("colour", ["#000000", "#ffFFff", "#12345678", "#abcdefAB"])
def test_background_colour_accepts_rgb_and_rgba(clock, colour):
    assert make_story(clock, background_color=colour).fields["background_color"] == colour


@pytest.mark.parametrize("colour", ["red", "#fff", "#1234567", "123456", "#12345g", "#123456789", "#123456\n", ""])
def test_background_colour_must_be_hex(clock, colour):
    assert problem_fields(create_error(clock, story_fields(background_color=colour))) == {"background_color"}


@pytest.mark.parametrize("count", [2, 3, 5])
def test_gradient_of_2_to_5_colours(clock, count):
    gradient = ["#000000", "#FFFFFF", "#123456", "#ABCDEF", "#00000000"][:count]
    assert make_story(clock, background_gradient=gradient).fields["background_gradient"] == gradient


@pytest.mark.parametrize(
    "gradient",
    [[], ["#000000"], ["#000000"] * 6, ["#000000", "white"], ["#000000", 7], ["#000000", None]],
)
def test_gradient_out_of_bounds_or_not_colours_is_rejected(clock, gradient):
    assert problem_fields(create_error(clock, story_fields(background_gradient=gradient))) == {"background_gradient"}


@pytest.mark.parametrize("hours", [6, 12, 24, 48])
def test_expiry_is_6_12_24_or_48_hours(clock, hours):
    story = make_story(clock, expires_in_hours=hours)
    assert story.expires_at == clock() + timedelta(hours=hours)
    assert datetime.fromisoformat(story.fields["expires_at"]) == story.expires_at


@pytest.mark.parametrize("hours", [0, 1, 5, 7, 23, 25, 36, 72, -24, None])
def test_other_expiry_values_are_rejected(clock, hours):
    assert problem_fields(create_error(clock, story_fields(expires_in_hours=hours))) == {"expires_in_hours"}


@pytest.mark.parametrize("policy", ["everyone", "audience", "off"])
def test_reply_policies(clock, policy):
    assert make_story(clock, allow_replies=policy).fields["allow_replies"] == policy


# -- create: privacy --------------------------------------------------------------------------


@pytest.mark.parametrize("privacy", ["public", "followers", "close_friends"])
def test_vignette_privacy_values(clock, privacy):
    assert make_story(clock, privacy=privacy).fields["privacy"] == privacy


@pytest.mark.parametrize("privacy", ["public", "friends", "close_friends"])
def test_entativa_privacy_values(clock, privacy):
    assert make_story(clock, platform=ENTATIVA, privacy=privacy).fields["privacy"] == privacy


@pytest.mark.parametrize(
    ("platform", "privacy"),
    [(VIGNETTE, "friends"), (ENTATIVA, "followers"), (VIGNETTE, "private"), (ENTATIVA, "everyone"), (VIGNETTE, None)],
)
def test_privacy_values_of_the_other_platform_are_rejected(clock, platform, privacy):
    assert problem_fields(create_error(clock, story_fields(privacy=privacy), platform=platform)) == {"privacy"}


@pytest.mark.parametrize("platform", [VIGNETTE, ENTATIVA])
def test_custom_story_needs_allowed_viewers(clock, platform):
    for allowed in (DROP, None, []):
        error = create_error(clock, story_fields(privacy="custom", allowed_viewer_ids=allowed), platform=platform)
        assert problem_fields(error) == {"allowed_viewer_ids"}
    story = make_story(clock, platform=platform, privacy="custom", allowed_viewer_ids=[OTHER])
    assert story.allowed_viewer_ids == {OTHER}


def test_only_a_custom_story_lists_allowed_viewers(clock):
    error = create_error(clock, story_fields(privacy="public", allowed_viewer_ids=[OTHER]))
    assert problem_fields(error) == {"allowed_viewer_ids"}


@pytest.mark.parametrize("name", ["allowed_viewer_ids", "hidden_from_ids"])
@pytest.mark.parametrize("bad_id", ["", "has space", "x" * 65, "slash/y", "new\nline", 42])
def test_listed_users_must_be_user_ids(clock, name, bad_id):
    fields = story_fields(privacy="custom", allowed_viewer_ids=[OTHER])
    fields[name] = [OTHER, bad_id]
    assert problem_fields(create_error(clock, fields)) == {name}


@pytest.mark.parametrize("name", ["allowed_viewer_ids", "hidden_from_ids"])
def test_at_most_1000_listed_users(clock, name):
    fields = story_fields(privacy="custom", allowed_viewer_ids=[OTHER])
    fields[name] = [f"u{i}" for i in range(1000)]
    Story.create(uuid4(), OWNER, fields, VIGNETTE, clock())
    fields[name] = [f"u{i}" for i in range(1001)]
    assert problem_fields(create_error(clock, fields)) == {name}


def test_story_cannot_be_hidden_from_its_owner(clock):
    error = create_error(clock, story_fields(hidden_from_ids=[OTHER, OWNER]))
    assert problem_fields(error) == {"hidden_from_ids"}
    assert make_story(clock, hidden_from_ids=[OTHER]).hidden_from_ids == {OTHER}


def test_invalid_stickers_are_rejected_by_create(clock):
    error = create_error(clock, story_fields(stickers=[{"sticker_type": "poll"}]))
    assert any(f.startswith("stickers.0") for f in problem_fields(error))


def test_valid_stickers_are_kept(clock):
    stickers = [{"sticker_type": "question", "question": {"text": "ask me"}}]
    assert make_story(clock, stickers=stickers).stickers == stickers


# -- delete -------------------------------------------------------------------------------


def test_owner_deletes(clock):
    story = make_story(clock)
    story.collect_events()
    story.delete(OWNER, clock.advance(minutes=5))
    [event] = story.collect_events()
    assert isinstance(event, StoryDeleted)
    assert event.story_id == str(story.id) and event.user_id == OWNER and event.originator_version == 2
    assert story.deleted and not story.is_live(clock())


def test_others_may_not_delete(clock):
    story = make_story(clock)
    story.collect_events()
    with pytest.raises(Forbidden) as info:
        story.delete(OTHER, clock())
    assert info.value.code == "not_owner"
    assert not story.deleted and story.collect_events() == []


def test_deleting_twice_is_not_found(clock):
    story = make_story(clock)
    story.delete(OWNER, clock())
    story.collect_events()
    for actor in (OWNER, OTHER):
        with pytest.raises(NotFound):
            story.delete(actor, clock())
    assert story.collect_events() == []


def test_owner_may_delete_an_expired_story(clock):
    story = make_story(clock)
    clock.advance(hours=25)
    story.expire(clock())
    story.delete(OWNER, clock())
    assert story.deleted and story.expired


# -- expire -------------------------------------------------------------------------------


def test_expire_after_due_time_records_the_due_time(clock):
    story = make_story(clock, expires_in_hours=6)
    due = story.expires_at
    story.collect_events()
    clock.advance(hours=7)  # a late sweep
    story.expire(clock())
    [event] = story.collect_events()
    assert isinstance(event, StoryExpired)
    assert event.expired_at == due.isoformat() and event.occurred_at == clock()
    assert story.expired and not story.is_live(clock())


def test_expire_exactly_at_due_time(clock):
    story = make_story(clock)
    story.expire(story.expires_at)
    assert story.expired


def test_expire_before_due_is_refused(clock):
    story = make_story(clock)
    story.collect_events()
    with pytest.raises(Conflict) as info:
        story.expire(story.expires_at - timedelta(microseconds=1))
    assert info.value.code == "not_due"
    assert not story.expired and story.collect_events() == []


def test_expire_happens_exactly_once(clock):
    story = make_story(clock)
    clock.advance(hours=25)
    story.expire(clock())
    story.collect_events()
    with pytest.raises(Conflict) as info:
        story.expire(clock.advance(hours=1))
    assert info.value.code == "already_expired"
    assert story.collect_events() == []


def test_deleted_story_does_not_expire(clock):
    story = make_story(clock)
    story.delete(OWNER, clock())
    story.collect_events()
    with pytest.raises(Conflict) as info:
        story.expire(clock.advance(hours=25))
    assert info.value.code == "story_deleted"
    assert story.collect_events() == [] and not story.expired


# -- is_live ------------------------------------------------------------------------------


def test_is_live_until_the_due_time(clock):
    story = make_story(clock, expires_in_hours=12)
    assert story.is_live(clock())
    assert story.is_live(story.expires_at - timedelta(microseconds=1))
    assert not story.is_live(story.expires_at)
    assert not story.is_live(clock.advance(hours=13))


def test_an_expired_story_is_not_live_whatever_the_clock_says(clock):
    story = make_story(clock)
    story.expire(story.expires_at)
    assert not story.is_live(clock())  # a clock behind the sweep does not revive it


# -- check_can_engage ---------------------------------------------------------------------------


def test_owner_and_audience_can_engage_with_a_live_story(clock):
    story = make_story(clock, privacy="followers")
    story.check_can_engage(OWNER, STRANGER, clock())
    story.check_can_engage(OTHER, FOLLOWER, clock())


def test_outside_the_audience_is_not_found(clock):
    story = make_story(clock, privacy="followers")
    with pytest.raises(NotFound):
        story.check_can_engage(OTHER, STRANGER, clock())


def test_hidden_viewer_is_not_found_even_on_a_public_story(clock):
    story = make_story(clock, privacy="public", hidden_from_ids=[OTHER])
    with pytest.raises(NotFound):
        story.check_can_engage(OTHER, Relationship(True, True, True), clock())
    story.check_can_engage("carol", STRANGER, clock())


def test_expired_story_is_not_found_for_others(clock):
    story = make_story(clock)
    with pytest.raises(NotFound):
        story.check_can_engage(OTHER, FOLLOWER, clock.advance(hours=25))  # due, not yet swept
    story.expire(clock())
    with pytest.raises(NotFound):
        story.check_can_engage(OTHER, FOLLOWER, clock())


def test_expired_story_is_a_conflict_for_the_owner(clock):
    story = make_story(clock)
    with pytest.raises(Conflict) as info:
        story.check_can_engage(OWNER, STRANGER, clock.advance(hours=24))
    assert info.value.code == "story_expired"
    story.expire(clock())
    with pytest.raises(Conflict) as info:
        story.check_can_engage(OWNER, STRANGER, clock())
    assert info.value.code == "story_expired"


def test_deleted_story_is_not_found_for_everyone(clock):
    story = make_story(clock)
    story.delete(OWNER, clock())
    for actor in (OWNER, OTHER):
        with pytest.raises(NotFound):
            story.check_can_engage(actor, FOLLOWER, clock())


def test_check_not_owner(clock):
    story = make_story(clock)
    story.check_not_owner(OTHER, "vote")
    with pytest.raises(Forbidden) as info:
        story.check_not_owner(OWNER, "vote")
    assert info.value.code == "own_story"


def test_replayed_story_has_the_same_state(clock):
    story = make_story(clock, privacy="custom", allowed_viewer_ids=[OTHER])
    story.expire(clock.advance(hours=24))
    events = story.collect_events()
    again = Story.replay(story.id, events)
    for name in (
        "owner_id",
        "fields",
        "created_at",
        "expires_at",
        "deleted",
        "expired",
        "version",
        "allowed_viewer_ids",
        "hidden_from_ids",
    ):
        assert getattr(again, name) == getattr(story, name), name
