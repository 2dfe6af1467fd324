"""The aggregate base: replay rebuilds live state; events publish only their own fields."""

from __future__ import annotations

import dataclasses
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.aggregate import Aggregate, DomainEvent
from domain.catalogue import EVENT_TYPES
from domain.engagement import (
    CountdownReminder,
    LinkTaps,
    PollBallot,
    QuestionAnswers,
    QuizAttempt,
    SliderResponse,
    StoryReplies,
    StoryView,
)
from domain.errors import DomainError, NotFound
from domain.highlights import MAX_STORIES, Highlight, HighlightReel
from domain.platform import Platform
from domain.social import CloseFriendship, Follow
from domain.stories import Story
from domain.visibility import Relationship
from tests.conftest import FakeClock

HYPOTHESIS = settings(max_examples=150)
OWNER, OTHER = "alice", "bob"
ORIGINATOR_FIELDS = {"originator_id", "originator_version", "occurred_at"}
STICKERS = [
    {"sticker_type": "poll", "poll": {"question": "?", "options": [{"text": "a"}, {"text": "b"}]}},
    {
        "sticker_type": "quiz",
        "quiz": {"question": "?", "options": [{"text": "a"}, {"text": "b"}], "correct_answer_index": 0},
    },
    {"sticker_type": "question", "question": {"text": "?"}},
    {"sticker_type": "countdown", "countdown": {"title": "t", "end_time": "2026-01-05T00:00:00Z"}},
    {"sticker_type": "slider", "slider": {"question": "?"}},
    {"sticker_type": "link", "link": {"url": "https://example.com"}},
]


# -- builders ----------------------------------------------------------------------------


def state(aggregate: Aggregate) -> dict:
    """Everything an aggregate knows, except what it has not handed over yet."""
    return {k: v for k, v in vars(aggregate).items() if k != "pending_events"}


def assert_replay_matches(aggregate: Aggregate, events: list[DomainEvent]) -> None:
    replayed = type(aggregate).replay(aggregate.id, events)
    assert replayed is not None
    assert state(replayed) == state(aggregate)
    assert replayed.pending_events == []


def make_story(clock, owner: str = OWNER, **overrides) -> Story:
    fields = {"story_type": "image", "media_id": "m1", "privacy": "public", "stickers": STICKERS, **overrides}
    return Story.create(uuid4(), owner, fields, Platform.VIGNETTE, clock())


# -- one scenario per aggregate type: (aggregate, events) -------------------------------------------------


def story_scenario(clock):
    story = make_story(clock, privacy="custom", allowed_viewer_ids=[OTHER], hidden_from_ids=["carol"])
    story.expire(clock.advance(hours=24))
    story.delete(OWNER, clock())
    return story


def view_scenario(clock):
    story = make_story(clock)
    view = StoryView.view(None, story, OTHER, Relationship(), clock())
    return StoryView.view(view, story, OTHER, Relationship(), clock())


def reply_scenario(clock):
    story = make_story(clock)
    replies = StoryReplies.reply(None, story, OTHER, "a", Relationship(), Platform.VIGNETTE, clock())
    return StoryReplies.reply(replies, story, OTHER, "b", Relationship(), Platform.VIGNETTE, clock())


def sticker_scenario(cls, index, *bodies):
    def build(clock):
        story = make_story(clock)
        response = None
        for body in bodies:
            response = cls.respond(response, story, index, OTHER, body, Relationship(), clock()) or response
        return response

    return build


def highlight_scenario(clock):
    stories = {str(s.id): s for s in (make_story(clock) for _ in range(3))}
    ids = list(stories)
    highlight = Highlight.create(uuid4(), OWNER, {"title": "t", "story_ids": ids[:2]}, stories, clock())
    highlight.add_stories(OWNER, ids, stories, clock())
    highlight.remove_stories(OWNER, ids[:1], clock())
    highlight.update(OWNER, {"title": "u", "cover": {"media_url": "https://c"}, "is_pinned": True}, clock())
    highlight.delete(OWNER, clock())
    return highlight


def reel_scenario(clock):
    reel = HighlightReel.open(None, OWNER)
    ids = [uuid4() for _ in range(3)]
    for hid in ids:
        reel.file(hid, clock())
    reel.reorder([str(ids[2]), str(ids[0]), str(ids[1])], clock())
    reel.unfile(ids[0], clock())
    return reel


def follow_scenario(clock):
    edge = Follow.follow(None, OTHER, OWNER, clock())
    edge.unfollow(clock())
    return Follow.follow(edge, OTHER, OWNER, clock())


def close_friend_scenario(clock):
    entry = CloseFriendship.add(None, OWNER, OTHER, clock())
    entry.remove(clock())
    return entry


SCENARIOS = {
    "Story": story_scenario,
    "StoryView": view_scenario,
    "StoryReplies": reply_scenario,
    "PollBallot": sticker_scenario(PollBallot, 0, {"option_index": 1}),
    "QuizAttempt": sticker_scenario(QuizAttempt, 1, {"option_index": 1}),
    "QuestionAnswers": sticker_scenario(QuestionAnswers, 2, {"text": "x"}, {"text": "y"}),
    "CountdownReminder": sticker_scenario(
        CountdownReminder, 3, {"action": "follow"}, {"action": "unfollow"}, {"action": "follow"}
    ),
    "SliderResponse": sticker_scenario(SliderResponse, 4, {"value": 0.25}),
    "LinkTaps": sticker_scenario(LinkTaps, 5, {"action": "tap"}, {"action": "tap"}),
    "Highlight": highlight_scenario,
    "HighlightReel": reel_scenario,
    "Follow": follow_scenario,
    "CloseFriendship": close_friend_scenario,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_replay_rebuilds_the_same_state(clock, name):
    aggregate = SCENARIOS[name](clock)
    events = aggregate.collect_events()
    assert [e.originator_version for e in events] == list(range(1, len(events) + 1))
    assert all(e.originator_id == aggregate.id for e in events)
    assert aggregate.version == len(events)
    assert_replay_matches(aggregate, events)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_replay_in_two_parts_then_continue(clock, name):
    """Events collected over several commands replay the same as all at once."""
    aggregate = SCENARIOS[name](clock)
    events = aggregate.collect_events()
    half = len(events) // 2
    head = type(aggregate).replay(aggregate.id, events[:half]) if half else None
    if head is not None:
        for event in events[half:]:
            head.apply(event)
        assert state(head) == state(aggregate)


def test_replay_of_no_events_is_none():
    assert Story.replay(uuid4(), []) is None
    assert Follow.replay(uuid4(), iter(())) is None


def test_collect_events_hands_over_once(clock):
    edge = Follow.follow(None, OTHER, OWNER, clock())
    assert len(edge.collect_events()) == 1
    assert edge.collect_events() == [] and edge.version == 1


def test_a_command_that_raises_records_nothing(clock):
    edge = Follow.follow(None, OTHER, OWNER, clock())
    edge.collect_events()
    before = state(edge)
    Follow.follow(edge, OTHER, OWNER, clock())  # no-op
    with pytest.raises(NotFound):
        Follow(edge.id).unfollow(clock())
    assert state(edge) == before and edge.pending_events == []


def test_reordering_into_the_same_order_records_nothing(clock):
    reel = HighlightReel.open(None, OWNER)
    assert reel.reorder([], clock()) is False
    assert reel.collect_events() == []


def test_a_reel_replays_its_owner_from_a_reorder_too(clock):
    reel = HighlightReel.open(None, OWNER)
    first, second = uuid4(), uuid4()
    reel.file(first, clock())
    reel.file(second, clock())
    reel.reorder([str(second), str(first)], clock())
    reorder_only = [e for e in reel.collect_events() if type(e).__name__ == "HighlightsReordered"]
    replayed = HighlightReel.replay(reel.id, reorder_only)
    assert replayed.owner_id == OWNER


# -- hypothesis: random command sequences, live vs replayed ---------------------------------------


def run_steps(aggregate_box: list, steps, apply_step) -> None:
    """Apply each step; a step that raises a DomainError must leave no trace.

    After every step the events collected so far must replay to the live state.
    """
    log: list[DomainEvent] = aggregate_box[0].collect_events() if aggregate_box[0] is not None else []
    for step in steps:
        live = aggregate_box[0]
        before = state(live) if live is not None else None
        try:
            apply_step(step)
        except DomainError:
            if live is not None:
                assert state(live) == before
                assert live.pending_events == []
            continue
        live = aggregate_box[0]
        if live is not None:
            log += live.collect_events()
            assert_replay_matches(live, log)


@HYPOTHESIS
@given(st.lists(st.sampled_from(["follow", "unfollow"]), max_size=20))
def test_follow_random_commands_replay_the_same(steps):
    clock = FakeClock()
    box: list[Follow | None] = [None]
    model = {"following": False}

    def apply(step):
        if step == "follow":
            edge = Follow.follow(box[0], OTHER, OWNER, clock.advance(seconds=1))
            assert (edge is None) == model["following"]
            box[0] = edge or box[0]
            model["following"] = True
        elif box[0] is None:
            return  # the application answers NotFound before the domain is asked
        else:
            try:
                box[0].unfollow(clock.advance(seconds=1))
            except NotFound:
                assert not model["following"]
                raise
            model["following"] = False
        assert box[0].active == model["following"]

    run_steps(box, steps, apply)


@HYPOTHESIS
@given(st.lists(st.sampled_from(["add", "remove"]), max_size=20))
def test_close_friendship_random_commands_replay_the_same(steps):
    clock = FakeClock()
    box: list[CloseFriendship | None] = [None]
    model = {"on_list": False}

    def apply(step):
        if step == "add":
            expected_ok = not model["on_list"]
            try:
                box[0] = CloseFriendship.add(box[0], OWNER, OTHER, clock.advance(seconds=1))
            except DomainError:
                assert not expected_ok
                raise
            assert expected_ok
            model["on_list"] = True
        elif box[0] is not None:
            try:
                box[0].remove(clock.advance(seconds=1))
            except NotFound:
                assert not model["on_list"]
                raise
            model["on_list"] = False

    run_steps(box, steps, apply)


_LIBRARY_CLOCK = FakeClock()
OWN = {str(s.id): s for s in (make_story(_LIBRARY_CLOCK) for _ in range(6))}
THEIRS = {str(s.id): s for s in (make_story(_LIBRARY_CLOCK, owner=OTHER) for _ in range(2))}
DELETED = {str(s.id): s for s in (make_story(_LIBRARY_CLOCK) for _ in range(1))}
for _story in DELETED.values():
    _story.delete(OWNER, _LIBRARY_CLOCK())
LIBRARY = {**OWN, **THEIRS, **DELETED}
ALL_IDS = [*sorted(LIBRARY), "missing"]

story_id_lists = st.lists(st.sampled_from(ALL_IDS), max_size=6)
# Values of the types the command model lets through (UpdateHighlight); limits are the domain's.
highlight_changes = st.fixed_dictionaries(
    {},
    optional={
        "title": st.one_of(st.text(max_size=60), st.none()),
        "description": st.one_of(st.text(max_size=220), st.none()),
        "cover": st.one_of(
            st.just({"media_url": "https://cdn.example/c.jpg"}), st.just({"emoji": "x", "color": "#00ff00"}), st.none()
        ),
        "is_pinned": st.booleans(),
        "is_archived": st.booleans(),
        "story_ids": story_id_lists,  # not editable: dropped
    },
)
highlight_steps = st.one_of(
    st.tuples(st.just("update"), st.sampled_from([OWNER, OTHER]), highlight_changes),
    st.tuples(st.just("add"), st.sampled_from([OWNER, OTHER]), story_id_lists),
    st.tuples(st.just("remove"), st.sampled_from([OWNER, OTHER]), story_id_lists),
    st.tuples(st.just("delete"), st.sampled_from([OWNER, OTHER, OWNER]), st.none()),
)


@HYPOTHESIS
@given(
    initial=st.lists(st.sampled_from(sorted(OWN)), min_size=1, max_size=4),
    steps=st.lists(highlight_steps, max_size=15),
)
def test_highlight_random_commands_replay_the_same(initial, steps):
    clock = FakeClock()
    highlight = Highlight.create(uuid4(), OWNER, {"title": "t", "story_ids": initial}, LIBRARY, clock())
    box = [highlight]
    model = {"ids": list(dict.fromkeys(initial)), "deleted": False}

    def apply(step):
        kind, actor, arg = step
        now = clock.advance(seconds=1)
        # What the model expects: None when the command must be refused.
        allowed = not model["deleted"] and actor == OWNER
        if kind == "update":
            editable = {k: v for k, v in arg.items() if k != "story_ids"}
            title = editable.get("title", "ok")
            valid = (
                bool(editable)
                and title is not None
                and 1 <= len(title.strip()) <= 50
                and len(editable.get("description") or "") <= 200
            )
            expect = allowed and valid
            call = lambda: highlight.update(actor, arg, now)  # noqa: E731
        elif kind == "add":
            new = [s for s in dict.fromkeys(arg) if s not in model["ids"]]
            expect = allowed and all(s in OWN for s in new) and len(model["ids"]) + len(new) <= MAX_STORIES
            call = lambda: highlight.add_stories(actor, arg, LIBRARY, now)  # noqa: E731
        elif kind == "remove":
            # Removing every story is refused: a highlight keeps at least one.
            expect = allowed and not (model["ids"] and set(model["ids"]) <= set(arg))
            call = lambda: highlight.remove_stories(actor, arg, now)  # noqa: E731
        else:
            expect = allowed
            call = lambda: highlight.delete(actor, now)  # noqa: E731
        try:
            changed = call()
        except DomainError:
            assert not expect, step
            raise
        assert expect, step
        if kind == "add":
            assert changed == bool(new)
            model["ids"] += new
        elif kind == "remove":
            assert changed == any(s in model["ids"] for s in arg)
            model["ids"] = [s for s in model["ids"] if s not in set(arg)]
        elif kind == "delete":
            model["deleted"] = True
        assert highlight.story_ids == model["ids"] and highlight.deleted == model["deleted"]

    run_steps(box, steps, apply)
    assert highlight.story_ids == model["ids"]


# -- DomainEvent.data() ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_event_data_is_the_events_own_fields(clock, name):
    for event in SCENARIOS[name](clock).collect_events():
        own = {f.name for f in dataclasses.fields(event)} - ORIGINATOR_FIELDS
        data = event.data()
        assert set(data) == own
        assert not ORIGINATOR_FIELDS & set(data)
        assert all(data[k] == getattr(event, k) for k in own)
        assert event.event_type == type(event).__name__


def test_event_data_is_a_copy_of_the_fields_mapping(clock):
    [event] = Follow.follow(None, OTHER, OWNER, clock()).collect_events()
    data = event.data()
    data["follower_id"] = "mallory"
    assert event.follower_id == OTHER and event.data()["follower_id"] == OTHER


def test_events_are_frozen(clock):
    [event] = Follow.follow(None, OTHER, OWNER, clock()).collect_events()
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.follower_id = "mallory"  # type: ignore[misc]


def test_catalogue_holds_every_contract_event_type():
    contract = {
        "StoryCreated",
        "StoryViewed",
        "StoryReplied",
        "PollVoted",
        "QuizAnswered",
        "QuestionAnswered",
        "CountdownFollowed",
        "CountdownUnfollowed",
        "SliderAnswered",
        "LinkTapped",
        "StoryDeleted",
        "StoryExpired",
        "HighlightCreated",
        "HighlightUpdated",
        "HighlightStoriesAdded",
        "HighlightStoriesRemoved",
        "HighlightsReordered",
        "HighlightDeleted",
        "CloseFriendAdded",
        "CloseFriendRemoved",
        "UserFollowed",
        "UserUnfollowed",
    }
    assert contract <= set(EVENT_TYPES)
    assert "StickerEvent" not in EVENT_TYPES
    assert all(cls.__name__ == name and issubclass(cls, DomainEvent) for name, cls in EVENT_TYPES.items())


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_recorded_event_is_in_the_catalogue(clock, name):
    for event in SCENARIOS[name](clock).collect_events():
        assert EVENT_TYPES[event.event_type] is type(event)
