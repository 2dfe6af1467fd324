"""Follow edges and close-friends entries."""

from __future__ import annotations

import pytest

from domain.errors import Conflict, InvalidInput, NotFound
from domain.social import CloseFriendAdded, CloseFriendRemoved, CloseFriendship, Follow, UserFollowed, UserUnfollowed

ALICE, BOB = "alice", "bob"
BAD_USER_IDS = ["", "has space", "x" * 65, "a/b", "émile", "tab\t", "line\n", None, 42]


def state(aggregate) -> dict:
    return {k: v for k, v in vars(aggregate).items() if k != "pending_events"}


# -- Follow -------------------------------------------------------------------------------


def test_follow_records_the_edge(clock):
    edge = Follow.follow(None, BOB, ALICE, clock())
    assert edge.id == Follow.stream_for(BOB, ALICE)
    assert edge.active and (edge.follower_id, edge.followee_id) == (BOB, ALICE)
    [event] = edge.collect_events()
    assert isinstance(event, UserFollowed)
    assert (event.follower_id, event.followee_id, event.originator_version) == (BOB, ALICE, 1)


def test_follow_edges_are_directed(clock):
    assert Follow.stream_for(BOB, ALICE) != Follow.stream_for(ALICE, BOB)


def test_following_twice_changes_nothing(clock):
    edge = Follow.follow(None, BOB, ALICE, clock())
    edge.collect_events()
    assert Follow.follow(edge, BOB, ALICE, clock()) is None
    assert edge.collect_events() == [] and edge.active


def test_unfollow_and_follow_again(clock):
    edge = Follow.follow(None, BOB, ALICE, clock())
    edge.unfollow(clock())
    assert not edge.active
    assert Follow.follow(edge, BOB, ALICE, clock()) is edge
    events = edge.collect_events()
    assert [type(e) for e in events] == [UserFollowed, UserUnfollowed, UserFollowed]
    assert [e.originator_version for e in events] == [1, 2, 3]
    assert events[1].follower_id == BOB and events[1].followee_id == ALICE
    assert edge.active


def test_unfollow_when_not_following_is_not_found(clock):
    edge = Follow.follow(None, BOB, ALICE, clock())
    edge.unfollow(clock())
    edge.collect_events()
    with pytest.raises(NotFound) as info:
        edge.unfollow(clock())
    assert info.value.code == "not_following"
    assert edge.collect_events() == []


def test_unfollow_on_a_fresh_edge_is_not_found(clock):
    with pytest.raises(NotFound):
        Follow(Follow.stream_for(BOB, ALICE)).unfollow(clock())


def test_cannot_follow_yourself(clock):
    with pytest.raises(InvalidInput) as info:
        Follow.follow(None, ALICE, ALICE, clock())
    assert info.value.code == "cannot_follow_self"
    assert info.value.details == [{"field": "user_id", "message": "you cannot follow yourself"}]


@pytest.mark.parametrize("followee", BAD_USER_IDS)
def test_cannot_follow_an_invalid_user_id(clock, followee):
    with pytest.raises(InvalidInput) as info:
        Follow.follow(None, BOB, followee, clock())
    assert info.value.details[0]["field"] == "user_id"


@pytest.mark.parametrize("followee", ["a", "x" * 64, "A.b-c_9"])
def test_user_id_edges(clock, followee):
    assert Follow.follow(None, BOB, followee, clock()).active


# -- CloseFriendship -------------------------------------------------------------------------


def test_add_close_friend(clock):
    entry = CloseFriendship.add(None, ALICE, BOB, clock())
    assert entry.id == CloseFriendship.stream_for(ALICE, BOB) != CloseFriendship.stream_for(BOB, ALICE)
    assert entry.active and (entry.user_id, entry.friend_id) == (ALICE, BOB)
    [event] = entry.collect_events()
    assert isinstance(event, CloseFriendAdded) and (event.user_id, event.friend_id) == (ALICE, BOB)


def test_adding_twice_is_a_conflict(clock):
    entry = CloseFriendship.add(None, ALICE, BOB, clock())
    entry.collect_events()
    with pytest.raises(Conflict) as info:
        CloseFriendship.add(entry, ALICE, BOB, clock())
    assert info.value.code == "already_close_friend"
    assert entry.collect_events() == []


def test_remove_and_add_again(clock):
    entry = CloseFriendship.add(None, ALICE, BOB, clock())
    entry.remove(clock())
    assert not entry.active
    assert CloseFriendship.add(entry, ALICE, BOB, clock()) is entry
    assert [type(e) for e in entry.collect_events()] == [CloseFriendAdded, CloseFriendRemoved, CloseFriendAdded]


def test_removing_an_absent_friend_is_not_found(clock):
    entry = CloseFriendship.add(None, ALICE, BOB, clock())
    entry.remove(clock())
    entry.collect_events()
    with pytest.raises(NotFound) as info:
        entry.remove(clock())
    assert info.value.code == "not_close_friend"
    assert entry.collect_events() == []
    with pytest.raises(NotFound):
        CloseFriendship(CloseFriendship.stream_for(ALICE, "carol")).remove(clock())


def test_cannot_add_yourself(clock):
    with pytest.raises(InvalidInput) as info:
        CloseFriendship.add(None, ALICE, ALICE, clock())
    assert info.value.code == "cannot_add_self"


@pytest.mark.parametrize("friend", BAD_USER_IDS)
def test_cannot_add_an_invalid_user_id(clock, friend):
    with pytest.raises(InvalidInput):
        CloseFriendship.add(None, ALICE, friend, clock())


def test_replays_match(clock):
    edge = Follow.follow(None, BOB, ALICE, clock())
    edge.unfollow(clock())
    assert state(Follow.replay(edge.id, edge.collect_events())) == state(edge)
    entry = CloseFriendship.add(None, ALICE, BOB, clock())
    assert state(CloseFriendship.replay(entry.id, entry.collect_events())) == state(entry)
