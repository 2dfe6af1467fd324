"""Views, replies and every sticker response stream."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.aggregate import Aggregate
from domain.engagement import (
    RESPONSE_TYPES,
    CountdownFollowed,
    CountdownReminder,
    CountdownUnfollowed,
    LinkTapped,
    LinkTaps,
    PollBallot,
    PollVoted,
    QuestionAnswered,
    QuestionAnswers,
    QuizAnswered,
    QuizAttempt,
    SliderAnswered,
    SliderResponse,
    StickerResponse,
    StoryReplied,
    StoryReplies,
    StoryView,
    StoryViewed,
    response_type_for,
)
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from domain.platform import Platform
from domain.stories import Story
from domain.visibility import Relationship
from tests.conftest import FakeClock

OWNER, VIEWER, OTHER = "alice", "bob", "carol"
STRANGER = Relationship()
FOLLOWER = Relationship(follows_owner=True)
FRIEND = Relationship(follows_owner=True, followed_by_owner=True)
VIGNETTE, ENTATIVA = Platform.VIGNETTE, Platform.ENTATIVA

# One sticker of every type, in this order: the index of each type is fixed for the tests.
STICKERS = [
    {"sticker_type": "poll", "poll": {"question": "Tea?", "options": [{"text": "yes"}, {"text": "no"}, {"text": "?"}]}},
    {
        "sticker_type": "quiz",
        "quiz": {"question": "2+2", "options": [{"text": "3"}, {"text": "4"}], "correct_answer_index": 1},
    },
    {"sticker_type": "question", "question": {"text": "Ask me"}},
    {"sticker_type": "countdown", "countdown": {"title": "Launch", "end_time": "2026-01-02T12:00:00Z"}},
    {"sticker_type": "slider", "slider": {"question": "Hot?", "emoji": "🔥", "min_value": -10, "max_value": 10}},
    {"sticker_type": "link", "link": {"url": "https://example.com"}},
    {"sticker_type": "mention", "mention": {"user_id": "dave"}},
    {"sticker_type": "location", "location": {"name": "Lisbon", "lat": 38.7, "lng": -9.1}},
    {"sticker_type": "music", "music": {"title": "Song", "artist": "Band", "track_id": "t1"}},
]
INDEX = {s["sticker_type"]: i for i, s in enumerate(STICKERS)}


# -- builders ----------------------------------------------------------------------------


def make_story(clock, *, platform: Platform = VIGNETTE, **overrides) -> Story:
    fields = {
        "story_type": "image",
        "media_url": "https://cdn.example/a.jpg",
        "privacy": "public",
        "stickers": STICKERS,
    }
    fields.update(overrides)
    story = Story.create(uuid4(), OWNER, fields, platform, clock())
    story.collect_events()
    return story


def respond(
    cls: type[StickerResponse],
    story: Story,
    current=None,
    *,
    user: str = VIEWER,
    now,
    index=None,
    relationship: Relationship = FOLLOWER,
    **body,
):
    """One interaction with the story's sticker of ``cls``'s type (or ``index``)."""
    index = INDEX[cls.STICKER_TYPE] if index is None else index
    return cls.respond(current, story, index, user, {"sticker_index": index, **body}, relationship, now)


def state(aggregate: Aggregate) -> dict:
    return {k: v for k, v in vars(aggregate).items() if k != "pending_events"}


def assert_replays_to_same_state(aggregate: Aggregate, events) -> None:
    assert state(type(aggregate).replay(aggregate.id, events)) == state(aggregate)


# -- response_type_for ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("poll", PollBallot),
        ("quiz", QuizAttempt),
        ("question", QuestionAnswers),
        ("countdown", CountdownReminder),
        ("slider", SliderResponse),
        ("link", LinkTaps),
    ],
)
def test_response_type_for_interactive_stickers(clock, kind, cls):
    assert response_type_for(make_story(clock), INDEX[kind]) is cls
    assert RESPONSE_TYPES[kind] is cls


@pytest.mark.parametrize("kind", ["mention", "location", "music"])
def test_decorative_stickers_take_no_interactions(clock, kind):
    with pytest.raises(InvalidInput) as info:
        response_type_for(make_story(clock), INDEX[kind])
    assert info.value.code == "not_interactive"


@pytest.mark.parametrize("index", [-1, len(STICKERS), 99])
def test_response_type_for_a_missing_sticker(clock, index):
    with pytest.raises(InvalidInput) as info:
        response_type_for(make_story(clock), index)
    assert info.value.code == "sticker_not_found"


# -- StoryView ---------------------------------------------------------------------------


def test_views_are_counted_with_view_number(clock):
    story = make_story(clock)
    view = StoryView.view(None, story, VIEWER, STRANGER, clock())
    assert view.id == StoryView.stream_for(story.id, VIEWER)
    view = StoryView.view(view, story, VIEWER, STRANGER, clock.advance(minutes=1))
    view = StoryView.view(view, story, VIEWER, STRANGER, clock.advance(minutes=1))
    events = view.collect_events()
    assert [e.view_number for e in events] == [1, 2, 3]
    assert all(
        isinstance(e, StoryViewed) and e.viewer_id == VIEWER and e.owner_id == OWNER and e.story_id == str(story.id)
        for e in events
    )
    assert view.count == 3
    assert_replays_to_same_state(view, events)


def test_a_replayed_view_stream_continues_numbering(clock):
    story = make_story(clock)
    first = StoryView.view(None, story, VIEWER, STRANGER, clock())
    loaded = StoryView.replay(first.id, first.collect_events())
    again = StoryView.view(loaded, story, VIEWER, STRANGER, clock())
    [event] = again.collect_events()
    assert event.view_number == 2 and event.originator_version == 2


def test_each_viewer_has_their_own_stream(clock):
    story = make_story(clock)
    a = StoryView.view(None, story, VIEWER, STRANGER, clock())
    b = StoryView.view(None, story, OTHER, STRANGER, clock())
    assert a.id != b.id
    assert [e.view_number for e in b.collect_events()] == [1]


def test_owner_views_are_not_recorded(clock):
    story = make_story(clock)
    assert StoryView.view(None, story, OWNER, STRANGER, clock()) is None


def test_owner_view_of_an_expired_story_is_a_conflict(clock):
    story = make_story(clock)
    with pytest.raises(Conflict):
        StoryView.view(None, story, OWNER, STRANGER, clock.advance(hours=25))


@pytest.mark.parametrize("overrides", [{"privacy": "followers"}, {"hidden_from_ids": [VIEWER]}])
def test_cannot_view_what_you_cannot_see(clock, overrides):
    story = make_story(clock, **overrides)
    with pytest.raises(NotFound):
        StoryView.view(None, story, VIEWER, STRANGER, clock())


def test_cannot_view_an_expired_or_deleted_story(clock):
    story = make_story(clock)
    with pytest.raises(NotFound):
        StoryView.view(None, story, VIEWER, FOLLOWER, clock() + timedelta(hours=24))
    story.delete(OWNER, clock())
    with pytest.raises(NotFound):
        StoryView.view(None, story, VIEWER, FOLLOWER, clock())


# -- StoryReplies ----------------------------------------------------------------------------


def reply(story, text="nice!", *, current=None, user=VIEWER, relationship=STRANGER, platform=VIGNETTE, now):
    return StoryReplies.reply(current, story, user, text, relationship, platform, now)


def test_replies_are_numbered_and_stripped(clock):
    story = make_story(clock)
    replies = reply(story, "  hi  ", now=clock())
    replies = reply(story, "again", current=replies, now=clock())
    events = replies.collect_events()
    assert [(e.reply_number, e.text) for e in events] == [(1, "hi"), (2, "again")]
    assert all(isinstance(e, StoryReplied) and e.user_id == VIEWER and e.owner_id == OWNER for e in events)
    assert replies.id == StoryReplies.stream_for(story.id, VIEWER)
    assert_replays_to_same_state(replies, events)


def test_everyone_may_reply_by_default(clock):
    assert reply(make_story(clock), relationship=STRANGER, now=clock()).count == 1


def test_owner_cannot_reply(clock):
    with pytest.raises(Forbidden) as info:
        reply(make_story(clock), user=OWNER, now=clock())
    assert info.value.code == "own_story"


def test_replies_off(clock):
    story = make_story(clock, allow_replies="off")
    with pytest.raises(Forbidden) as info:
        reply(story, relationship=FRIEND, now=clock())
    assert info.value.code == "replies_disabled"


def test_replies_from_the_audience_on_vignette_means_followers(clock):
    story = make_story(clock, allow_replies="audience")
    with pytest.raises(Forbidden) as info:
        reply(story, relationship=Relationship(followed_by_owner=True), now=clock())
    assert info.value.code == "replies_restricted"
    assert reply(story, relationship=FOLLOWER, now=clock()).count == 1


def test_replies_from_the_audience_on_entativa_means_friends(clock):
    story = make_story(clock, platform=ENTATIVA, allow_replies="audience")
    with pytest.raises(Forbidden):
        reply(story, relationship=FOLLOWER, platform=ENTATIVA, now=clock())
    assert reply(story, relationship=FRIEND, platform=ENTATIVA, now=clock()).count == 1


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "x" * 1001])
def test_reply_text_limits(clock, text):
    with pytest.raises(InvalidInput) as info:
        reply(make_story(clock), text, now=clock())
    assert info.value.details[0]["field"] == "text"


def test_reply_of_1000_characters(clock):
    replies = reply(make_story(clock), " " + "x" * 1000 + " ", now=clock())
    assert replies.collect_events()[0].text == "x" * 1000


def test_cannot_reply_to_a_hidden_or_expired_story(clock):
    with pytest.raises(NotFound):
        reply(make_story(clock, hidden_from_ids=[VIEWER]), now=clock())
    with pytest.raises(NotFound):
        reply(make_story(clock), now=clock() + timedelta(hours=24))


# -- rules shared by every sticker response -----------------------------------------------------------


VALID_BODIES = {
    PollBallot: {"option_index": 0},
    QuizAttempt: {"option_index": 0},
    QuestionAnswers: {"text": "hello"},
    CountdownReminder: {"action": "follow"},
    SliderResponse: {"value": 1},
    LinkTaps: {"action": "tap"},
}


@pytest.mark.parametrize("cls", list(VALID_BODIES))
def test_owner_cannot_respond_to_own_stickers(clock, cls):
    with pytest.raises(Forbidden) as info:
        respond(cls, make_story(clock), user=OWNER, now=clock(), **VALID_BODIES[cls])
    assert info.value.code == "own_story"


@pytest.mark.parametrize("cls", list(VALID_BODIES))
def test_owner_of_an_expired_story_gets_story_expired(clock, cls):
    story = make_story(clock)
    with pytest.raises(Conflict) as info:
        respond(cls, story, user=OWNER, now=clock.advance(hours=25), **VALID_BODIES[cls])
    assert info.value.code == "story_expired"


@pytest.mark.parametrize("cls", list(VALID_BODIES))
def test_others_cannot_respond_to_an_expired_or_hidden_story(clock, cls):
    with pytest.raises(NotFound):
        respond(cls, make_story(clock, hidden_from_ids=[VIEWER]), now=clock(), **VALID_BODIES[cls])
    with pytest.raises(NotFound):
        respond(cls, make_story(clock, privacy="close_friends"), now=clock(), **VALID_BODIES[cls])
    with pytest.raises(NotFound):
        respond(cls, make_story(clock), now=clock() + timedelta(hours=24), **VALID_BODIES[cls])


@pytest.mark.parametrize("cls", list(VALID_BODIES))
def test_wrong_sticker_type_is_invalid(clock, cls):
    wrong = next(i for i, s in enumerate(STICKERS) if s["sticker_type"] != cls.STICKER_TYPE)
    with pytest.raises(InvalidInput):
        respond(cls, make_story(clock), index=wrong, now=clock(), **VALID_BODIES[cls])


@pytest.mark.parametrize("cls", list(VALID_BODIES))
@pytest.mark.parametrize("index", [-1, len(STICKERS)])
def test_wrong_sticker_index_is_invalid(clock, cls, index):
    with pytest.raises(InvalidInput) as info:
        respond(cls, make_story(clock), index=index, now=clock(), **VALID_BODIES[cls])
    assert info.value.code == "sticker_not_found"


@pytest.mark.parametrize("cls", list(VALID_BODIES))
def test_each_response_has_a_stream_per_story_sticker_and_user(clock, cls):
    story = make_story(clock)
    response = respond(cls, story, now=clock(), **VALID_BODIES[cls])
    assert response.id == cls.stream_for(story.id, VIEWER, INDEX[cls.STICKER_TYPE])
    assert response.id != cls.stream_for(story.id, OTHER, INDEX[cls.STICKER_TYPE])
    [event] = response.collect_events()
    assert (event.story_id, event.owner_id, event.user_id, event.sticker_index) == (
        str(story.id),
        OWNER,
        VIEWER,
        INDEX[cls.STICKER_TYPE],
    )


# -- poll -----------------------------------------------------------------------------------


def test_poll_vote(clock):
    ballot = respond(PollBallot, make_story(clock), option_index=2, now=clock())
    events = ballot.collect_events()
    assert [(type(e), e.option_index) for e in events] == [(PollVoted, 2)]
    assert_replays_to_same_state(ballot, events)


def test_poll_one_vote_per_user(clock):
    story = make_story(clock)
    ballot = respond(PollBallot, story, option_index=0, now=clock())
    ballot.collect_events()
    for option in (0, 1):
        with pytest.raises(Conflict) as info:
            respond(PollBallot, story, ballot, option_index=option, now=clock())
        assert info.value.code == "already_voted"
    assert ballot.collect_events() == []
    assert respond(PollBallot, story, user=OTHER, option_index=1, now=clock()) is not None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"option_index": -1},
        {"option_index": 3},
        {"option_index": "0"},
        {"option_index": True},
        {"option_index": 1.0},
    ],
)
def test_poll_option_must_be_an_index_of_an_option(clock, body):
    with pytest.raises(InvalidInput) as info:
        respond(PollBallot, make_story(clock), now=clock(), **body)
    assert info.value.details[0]["field"] == "option_index"


@settings(max_examples=150)
@given(st.lists(st.tuples(st.sampled_from(["u1", "u2", "u3", "u4", "u5", "u6"]), st.integers(0, 2)), max_size=30))
def test_poll_tally_counts_each_voter_once(votes):
    clock = FakeClock()  # hypothesis runs many examples per test: no function-scoped fixture
    story = make_story(clock)
    ballots: dict[str, PollBallot] = {}
    logged = []
    first_vote: dict[str, int] = {}
    for user, option in votes:
        try:
            ballot = respond(PollBallot, story, ballots.get(user), user=user, option_index=option, now=clock())
        except Conflict:
            assert user in first_vote
            continue
        assert user not in first_vote
        first_vote[user] = option
        ballots[user] = ballot
        logged += ballot.collect_events()
    tally = Counter(e.option_index for e in logged)
    voters = Counter(e.user_id for e in logged)
    assert all(n == 1 for n in voters.values())
    assert sum(tally.values()) == len({user for user, _ in votes})
    assert tally == Counter(first_vote.values())


# -- quiz -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("option", "correct"), [(1, True), (0, False)])
def test_quiz_answer_tells_whether_it_was_correct(clock, option, correct):
    attempt = respond(QuizAttempt, make_story(clock), option_index=option, now=clock())
    events = attempt.collect_events()
    [event] = events
    assert isinstance(event, QuizAnswered)
    assert (event.option_index, event.correct, event.correct_answer_index) == (option, correct, 1)
    assert attempt.result == event
    assert_replays_to_same_state(attempt, events)


def test_quiz_one_attempt(clock):
    story = make_story(clock)
    attempt = respond(QuizAttempt, story, option_index=0, now=clock())
    with pytest.raises(Conflict) as info:
        respond(QuizAttempt, story, attempt, option_index=1, now=clock())
    assert info.value.code == "already_answered"
    assert len(attempt.collect_events()) == 1


@pytest.mark.parametrize("option", [-1, 2, None])
def test_quiz_option_out_of_range(clock, option):
    with pytest.raises(InvalidInput):
        respond(QuizAttempt, make_story(clock), option_index=option, now=clock())


# -- question ---------------------------------------------------------------------------------


def test_question_takes_many_answers(clock):
    story = make_story(clock)
    answers = respond(QuestionAnswers, story, text=" first ", now=clock())
    answers = respond(QuestionAnswers, story, answers, text="second", now=clock())
    answers = respond(QuestionAnswers, story, answers, text="second", now=clock())
    events = answers.collect_events()
    assert [(type(e), e.answer_number, e.text) for e in events] == [
        (QuestionAnswered, 1, "first"),
        (QuestionAnswered, 2, "second"),
        (QuestionAnswered, 3, "second"),
    ]
    assert_replays_to_same_state(answers, events)


@pytest.mark.parametrize("text", [None, "", "   ", "x" * 501, 5])
def test_question_answer_text_limits(clock, text):
    with pytest.raises(InvalidInput) as info:
        respond(QuestionAnswers, make_story(clock), text=text, now=clock())
    assert info.value.details[0]["field"] == "text"


def test_question_answer_of_500_characters(clock):
    assert respond(QuestionAnswers, make_story(clock), text="y" * 500, now=clock()) is not None


# -- countdown --------------------------------------------------------------------------------


def test_countdown_follow_and_unfollow_are_idempotent(clock):
    story = make_story(clock)  # ends 2026-01-02T12:00Z, a day after the clock's start
    reminder = respond(CountdownReminder, story, action="follow", now=clock())
    assert reminder.following
    assert respond(CountdownReminder, story, reminder, action="follow", now=clock()) is None
    assert respond(CountdownReminder, story, reminder, action="unfollow", now=clock()) is reminder
    assert not reminder.following
    assert respond(CountdownReminder, story, reminder, action="unfollow", now=clock()) is None
    assert respond(CountdownReminder, story, reminder, action="follow", now=clock()) is reminder
    events = reminder.collect_events()
    assert [type(e) for e in events] == [CountdownFollowed, CountdownUnfollowed, CountdownFollowed]
    assert_replays_to_same_state(reminder, events)


def test_countdown_unfollow_when_never_followed_changes_nothing(clock):
    assert respond(CountdownReminder, make_story(clock), action="unfollow", now=clock()) is None


def test_countdown_over_cannot_be_followed(clock):
    story = make_story(clock, expires_in_hours=48)
    assert respond(CountdownReminder, story, action="follow", now=clock() + timedelta(hours=24, seconds=-1))
    with pytest.raises(Conflict) as info:
        respond(CountdownReminder, story, action="follow", now=clock.advance(hours=24))  # exactly at end_time
    assert info.value.code == "countdown_over"


def test_countdown_over_can_still_be_unfollowed(clock):
    story = make_story(clock, expires_in_hours=48)
    reminder = respond(CountdownReminder, story, action="follow", now=clock())
    assert respond(CountdownReminder, story, reminder, action="unfollow", now=clock.advance(hours=30)) is reminder


@pytest.mark.parametrize("action", [None, "tap", "FOLLOW", ""])
def test_countdown_action_must_be_follow_or_unfollow(clock, action):
    with pytest.raises(InvalidInput) as info:
        respond(CountdownReminder, make_story(clock), action=action, now=clock())
    assert info.value.details[0]["field"] == "action"


# -- slider ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-10, 10, 0, 3.5])
def test_slider_value_inside_min_max(clock, value):
    response = respond(SliderResponse, make_story(clock), value=value, now=clock())
    events = response.collect_events()
    assert [(type(e), e.value) for e in events] == [(SliderAnswered, float(value))]
    assert_replays_to_same_state(response, events)


@pytest.mark.parametrize("value", [-10.01, 11, float("nan"), float("inf"), None, "5", True])
def test_slider_value_outside_or_not_a_number(clock, value):
    with pytest.raises(InvalidInput) as info:
        respond(SliderResponse, make_story(clock), value=value, now=clock())
    assert info.value.details[0]["field"] == "value"


def test_slider_default_range_is_0_to_1(clock):
    stickers = [{"sticker_type": "slider", "slider": {"question": "?"}}]
    story = make_story(clock, stickers=stickers)
    assert SliderResponse.respond(None, story, 0, VIEWER, {"value": 1}, STRANGER, clock()) is not None
    with pytest.raises(InvalidInput):
        SliderResponse.respond(None, story, 0, VIEWER, {"value": 1.5}, STRANGER, clock())


def test_slider_once_per_user(clock):
    story = make_story(clock)
    response = respond(SliderResponse, story, value=1, now=clock())
    with pytest.raises(Conflict) as info:
        respond(SliderResponse, story, response, value=2, now=clock())
    assert info.value.code == "already_answered"


# -- link -----------------------------------------------------------------------------------


def test_link_taps_are_counted(clock):
    story = make_story(clock)
    taps = None
    for _ in range(3):
        taps = respond(LinkTaps, story, taps, action="tap", now=clock())
    events = taps.collect_events()
    assert [(type(e), e.tap_number) for e in events] == [(LinkTapped, 1), (LinkTapped, 2), (LinkTapped, 3)]
    assert_replays_to_same_state(taps, events)


@pytest.mark.parametrize("action", [None, "follow", "click"])
def test_link_action_must_be_tap(clock, action):
    with pytest.raises(InvalidInput):
        respond(LinkTaps, make_story(clock), action=action, now=clock())
