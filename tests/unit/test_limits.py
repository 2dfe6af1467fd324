"""The contract's limits: the domain's rules (live stories, follows, close friends) checked against
models under random sequences, the private count records read from their newest record only, and
the command side end to end on a SQLite log (limits passed in, concurrency)."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commands import models
from commands import use_cases as uc
from commands.application import StoriesApplication
from commands.event_store import EventStore, StreamConflict
from commands.group_commit import Batch, GroupCommitter
from domain.catalogue import EVENT_TYPES
from domain.errors import Conflict
from domain.limits import (
    CLOSE_FRIENDS,
    FOLLOWS,
    Limits,
    LiveStories,
    LiveStoriesRecorded,
    Tally,
    TallyRecorded,
)
from domain.platform import Platform
from domain.social import CloseFriendship, Follow
from domain.stories import Story
from tests.conftest import FakeClock

HYPOTHESIS = settings(max_examples=200)
TEXT = {"story_type": "text", "text_content": "hi"}


def keep(aggregate, events_so_far: list):
    """Store its pending events; what ``load_last`` gives the next command: the newest event replayed."""
    events_so_far.extend(aggregate.pending_events)
    aggregate.pending_events = []
    if not events_so_far:
        return None
    return type(aggregate).replay(aggregate.id, events_so_far[-1:])


def assert_limit_reached(info, kind: str, limit: int) -> None:
    assert info.value.code == "limit_reached"
    assert info.value.details == {"limit": limit, "kind": kind}


# -- the rules, against models ---------------------------------------------------------------

live_steps = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.sampled_from([6, 12, 24, 48])),
        st.tuples(st.just("delete"), st.integers(min_value=0, max_value=50)),
        st.tuples(st.just("wait"), st.integers(min_value=1, max_value=60 * 30)),  # minutes
    ),
    max_size=40,
)


@HYPOTHESIS
@given(limit=st.integers(min_value=1, max_value=4), steps=live_steps)
def test_live_story_count_equals_a_model_and_never_exceeds_the_limit(limit, steps):
    clock = FakeClock()
    model: dict[str, object] = {}  # story id -> expires_at, every story ever created and not deleted
    stories: dict[str, Story] = {}
    ledger_events: list = []
    ledger = None
    for kind, arg in steps:
        now = clock()
        live_now = {s for s, e in model.items() if now < e}
        current = LiveStories.open(ledger, "alice")
        if kind == "create":
            try:
                story = Story.create(
                    uuid4(), "alice", {**TEXT, "expires_in_hours": arg}, Platform.VIGNETTE, now, current, limit
                )
            except Conflict as error:
                assert len(live_now) >= limit and error.details == {"limit": limit, "kind": "live_stories"}
                assert not current.pending_events
            else:
                assert len(live_now) < limit
                story.collect_events()
                model[str(story.id)] = story.expires_at
                stories[str(story.id)] = story
        elif kind == "delete" and stories:
            sid = sorted(stories)[arg % len(stories)]
            story = stories.pop(sid)
            story.delete("alice", now, current)
            model.pop(sid)
        else:
            clock.advance(minutes=arg)
        ledger = keep(current, ledger_events)
        now = clock()
        expected = sum(1 for e in model.values() if now < e)
        got = LiveStories.open(ledger, "alice").count(now)
        assert got == expected <= limit
        if ledger is not None:  # a record holds only what was live when it was written
            assert len(ledger.live) <= limit


@HYPOTHESIS
@given(
    limit=st.integers(min_value=1, max_value=4),
    steps=st.lists(st.tuples(st.sampled_from(["follow", "unfollow"]), st.sampled_from("abcdef")), max_size=40),
)
def test_follow_count_equals_the_active_edges_and_never_exceeds_the_limit(limit, steps):
    clock = FakeClock()
    edges: dict[str, Follow | None] = {}
    tally_events: list = []
    tally = None
    for kind, other in steps:
        now = clock.advance(seconds=1)
        current = Tally.open(tally, FOLLOWS, "me")
        edge = edges.get(other)
        if edge is not None:
            edge.collect_events()
        was_active = edge is not None and edge.active
        active = sum(1 for e in edges.values() if e is not None and e.active)
        if kind == "follow":
            try:
                result = Follow.follow(edge, "me", other, now, current, limit)
            except Conflict as error:
                assert active >= limit and not was_active
                assert error.details == {"limit": limit, "kind": "follows"}
                assert not current.pending_events and not (edge and edge.pending_events)
            else:
                if was_active:
                    assert result is None and not current.pending_events  # a re-follow is not a new follow
                else:
                    assert active < limit
                    edges[other] = result
        elif edge is not None and edge.active:
            edge.unfollow(now, current)
        tally = keep(current, tally_events)
        active = sum(1 for e in edges.values() if e is not None and e.active)
        assert Tally.open(tally, FOLLOWS, "me").count == active <= limit


@HYPOTHESIS
@given(
    limit=st.integers(min_value=1, max_value=3),
    steps=st.lists(st.tuples(st.sampled_from(["add", "remove"]), st.sampled_from("abcde")), max_size=30),
)
def test_close_friend_count_equals_the_list_and_never_exceeds_the_limit(limit, steps):
    clock = FakeClock()
    entries: dict[str, CloseFriendship] = {}
    tally_events: list = []
    tally = None
    for kind, other in steps:
        now = clock.advance(seconds=1)
        current = Tally.open(tally, CLOSE_FRIENDS, "me")
        entry = entries.get(other)
        was_active = entry is not None and entry.active
        listed = sum(1 for e in entries.values() if e.active)
        if kind == "add":
            try:
                entries[other] = CloseFriendship.add(entry, "me", other, now, current, limit)
            except Conflict as error:
                if was_active:
                    assert error.code == "already_close_friend"
                else:
                    assert listed >= limit and error.details == {"limit": limit, "kind": "close_friends"}
                assert not current.pending_events
        elif entry is not None and entry.active:
            entry.remove(now, current)
        tally = keep(current, tally_events)
        listed = sum(1 for e in entries.values() if e.active)
        assert Tally.open(tally, CLOSE_FRIENDS, "me").count == listed <= limit


def test_an_expired_story_frees_its_slot_without_story_expired(clock):
    ledger = LiveStories.open(None, "alice")
    Story.create(uuid4(), "alice", {**TEXT, "expires_in_hours": 6}, Platform.VIGNETTE, clock(), ledger, 1)
    with pytest.raises(Conflict) as info:
        Story.create(uuid4(), "alice", TEXT, Platform.VIGNETTE, clock.advance(hours=5, minutes=59), ledger, 1)
    assert_limit_reached(info, "live_stories", 1)
    Story.create(uuid4(), "alice", TEXT, Platform.VIGNETTE, clock.advance(minutes=1), ledger, 1)
    [_, second] = ledger.collect_events()
    assert len(second.live) == 1  # the expired one was pruned from the record


def test_deleting_a_story_frees_its_slot_and_an_untracked_one_records_nothing(clock):
    ledger = LiveStories.open(None, "alice")
    story = Story.create(uuid4(), "alice", TEXT, Platform.VIGNETTE, clock(), ledger, 1)
    story.delete("alice", clock(), ledger)
    assert ledger.count(clock()) == 0 and len(ledger.collect_events()) == 2
    old = Story.create(uuid4(), "alice", TEXT, Platform.VIGNETTE, clock())  # from before the limits
    old.delete("alice", clock(), ledger)
    assert ledger.collect_events() == []


def test_a_tally_never_goes_below_zero(clock):
    # An edge made before the upgrade was never counted: its removal does not go negative.
    edge = Follow.follow(None, "me", "you", clock())
    tally = Tally.open(None, FOLLOWS, "me")
    edge.unfollow(clock(), tally)
    assert tally.count == 0 and tally.collect_events() == []


def test_count_records_are_private():
    for record in (TallyRecorded, LiveStoriesRecorded):
        assert record not in EVENT_TYPES.values()
    assert Tally.stream_for(FOLLOWS, "a") != Tally.stream_for(CLOSE_FRIENDS, "a") != Tally.stream_for(FOLLOWS, "b")
    assert Limits() == Limits(100, 7_500, 1_500, 100, 200)


# -- the store: only the newest record is read -----------------------------------------------


def test_load_last_reads_only_the_newest_record(event_store_url, clock):
    store = EventStore(event_store_url)
    try:
        tally = Tally.open(None, FOLLOWS, "me")
        for _ in range(5):
            tally.take(10, clock())
        tally.give_back(clock())
        store.append(tally.collect_events())
        for load in (lambda: store.load(Tally, tally.id, last=True), lambda: Batch(store).load_last(Tally, tally.id)):
            loaded = load()
            assert (loaded.count, loaded.version) == (4, 6)
        with store.reading() as reader:
            loaded = Batch(store, reader).load_last(Tally, tally.id)
            assert (loaded.count, loaded.version) == (4, 6)
        assert store.load(Tally, uuid4(), last=True) is None
        # appending after the newest record conflicts with a writer that got there first
        first, second = store.load(Tally, tally.id, last=True), store.load(Tally, tally.id, last=True)
        first.take(10, clock())
        second.take(10, clock())
        store.append(first.collect_events())
        with pytest.raises(StreamConflict):
            store.append(second.collect_events())
        # and the log readers skip the records
        assert list(store.read()) == []
    finally:
        store.close()


# -- the command side, in process --------------------------------------------------------------

SMALL = Limits(live_stories=2, follows=2, close_friends=2, highlight_stories=2, highlights=2)


@pytest.fixture
def app(sqlite_url, clock):
    store = EventStore(sqlite_url)
    committer = GroupCommitter(store)
    yield StoriesApplication(store, committer, Platform.VIGNETTE, clock=clock, limits=SMALL)
    committer.close()
    store.close()


def run(app, command):
    return asyncio.run(app.execute(command))


def body(**extra):
    return models.CreateStory.model_validate({**TEXT, **extra})


def test_each_limit_through_the_application(app, clock):
    store = app.store
    s1, _ = run(app, uc.CreateStory("alice", body()))
    s2, _ = run(app, uc.CreateStory("alice", body()))
    head = store.head()
    with pytest.raises(Conflict) as info:
        run(app, uc.CreateStory("alice", body()))
    assert_limit_reached(info, "live_stories", 2)
    assert store.head() == head
    run(app, uc.DeleteStory("alice", str(s1.story_id)))
    run(app, uc.CreateStory("alice", body()))

    for who in ("b", "c"):
        run(app, uc.Follow("alice", who))
    run(app, uc.Follow("alice", "b"))  # already following: not a new follow
    with pytest.raises(Conflict) as info:
        run(app, uc.Follow("alice", "d"))
    assert_limit_reached(info, "follows", 2)
    run(app, uc.Unfollow("alice", "b"))
    run(app, uc.Follow("alice", "d"))

    for who in ("b", "c"):
        run(app, uc.AddCloseFriend("alice", who))
    with pytest.raises(Conflict) as info:
        run(app, uc.AddCloseFriend("alice", "d"))
    assert_limit_reached(info, "close_friends", 2)
    run(app, uc.RemoveCloseFriend("alice", "c"))
    run(app, uc.AddCloseFriend("alice", "d"))

    sid = str(s2.story_id)
    hl = models.CreateHighlight.model_validate({"title": "t", "story_ids": [sid]})
    h1, _ = run(app, uc.CreateHighlight("alice", hl))
    run(app, uc.CreateHighlight("alice", hl))
    with pytest.raises(Conflict) as info:
        run(app, uc.CreateHighlight("alice", hl))
    assert_limit_reached(info, "highlights", 2)

    clock.advance(hours=25)  # everything expired: room for new stories
    more = [str(run(app, uc.CreateStory("alice", body()))[0].story_id) for _ in range(2)]
    hid = str(h1.highlight_id)
    with pytest.raises(Conflict) as info:
        run(app, uc.AddHighlightStories("alice", hid, models.HighlightStories(story_ids=more)))
    assert_limit_reached(info, "highlight_stories", 2)
    run(app, uc.AddHighlightStories("alice", hid, models.HighlightStories(story_ids=more[:1])))


def test_a_command_answers_the_position_of_its_domain_event(app):
    _answer, position = run(app, uc.CreateStory("alice", body()))
    [logged] = [e for e in app.store.read() if e.position == position]
    assert logged.event.event_type == "StoryCreated"
    _, position = run(app, uc.Follow("alice", "bob"))
    [logged] = [e for e in app.store.read() if e.position == position]
    assert logged.event.event_type == "UserFollowed"


def test_two_creates_for_the_last_slot_in_one_batch(app):
    run(app, uc.CreateStory("alice", body()))

    async def both():
        return await asyncio.gather(
            *(app.execute(uc.CreateStory("alice", body())) for _ in range(2)), return_exceptions=True
        )

    results = asyncio.run(both())
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "tuple"]


def test_two_processes_racing_for_the_last_slot(sqlite_url, clock):
    """Two command processes (two stores, two committers) on one log: exactly one create wins."""
    apps = []
    for _ in range(2):
        store = EventStore(sqlite_url)
        apps.append(StoriesApplication(store, GroupCommitter(store), Platform.VIGNETTE, clock=clock, limits=SMALL))
    try:
        run(apps[0], uc.CreateStory("alice", body()))
        for _ in range(3):
            barrier = threading.Barrier(2)
            results: list = []

            def create(app, barrier=barrier, results=results):
                barrier.wait()
                try:
                    results.append(
                        app.committer.run_sync(lambda b: app.step(uc.CreateStory("alice", body()))(b, clock()))
                    )
                except Conflict as error:
                    results.append(error)

            threads = [threading.Thread(target=create, args=(a,)) for a in apps]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sum(isinstance(r, Conflict) for r in results) == 1, results
            assert [r.code for r in results if isinstance(r, Conflict)] == ["limit_reached"]
            assert (
                LiveStories.open(
                    apps[0].store.load(LiveStories, LiveStories.stream_for("alice"), last=True), "alice"
                ).count(clock())
                == 2
            )
            clock.advance(hours=25)  # expire both for the next round
            run(apps[0], uc.CreateStory("alice", body()))
    finally:
        for a in apps:
            a.committer.close()
            a.store.close()


def test_story_expiry_time_is_the_ledgers(clock):
    ledger = LiveStories.open(None, "alice")
    story = Story.create(uuid4(), "alice", {**TEXT, "expires_in_hours": 12}, Platform.VIGNETTE, clock(), ledger, 5)
    assert ledger.live == {str(story.id): story.expires_at} and story.expires_at == clock() + timedelta(hours=12)
