"""domain/visibility.audience_allows against an independent model of the contract's rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.visibility import Relationship, audience_allows

HYPOTHESIS = settings(max_examples=200)
USERS = ["alice", "bob", "carol", "dave", "erin"]
PRIVACY = ["public", "followers", "friends", "close_friends", "custom"]


# -- the model: the contract's visibility rules, written as a table of plain questions ------------


def model_allows(owner, privacy, allowed, hidden, viewer, follows_owner, followed_by_owner, close_friend) -> bool:
    """Who may see a story (liveness aside), straight from the contract.

    The owner always sees; otherwise being hidden wins; otherwise the privacy value decides.
    """
    is_owner = viewer == owner
    is_hidden = viewer in hidden
    audience_for = {
        "public": True,
        "followers": follows_owner,
        "friends": follows_owner and followed_by_owner,  # a friend is a mutual follow
        "close_friends": close_friend,
        "custom": viewer in allowed,
    }
    return is_owner or (not is_hidden and audience_for.get(privacy, False))


def allows(*, owner="alice", privacy="public", allowed=(), hidden=(), viewer="bob", relationship=Relationship()):
    return audience_allows(
        owner_id=owner,
        privacy=privacy,
        allowed_viewer_ids=allowed,
        hidden_from_ids=hidden,
        viewer_id=viewer,
        relationship=relationship,
    )


relationships = st.builds(Relationship, st.booleans(), st.booleans(), st.booleans())
user_sets = st.frozensets(st.sampled_from(USERS))


# -- properties ----------------------------------------------------------------------------


@HYPOTHESIS
@given(
    owner=st.sampled_from(USERS),
    privacy=st.one_of(st.sampled_from(PRIVACY), st.text(max_size=12)),
    allowed=user_sets,
    hidden=user_sets,
    viewer=st.sampled_from(USERS),
    relationship=relationships,
    as_list=st.booleans(),
)
def test_audience_allows_matches_the_model(owner, privacy, allowed, hidden, viewer, relationship, as_list):
    if as_list:  # any collection will do
        allowed, hidden = sorted(allowed), sorted(hidden)
    expected = model_allows(
        owner,
        privacy,
        allowed,
        hidden,
        viewer,
        relationship.follows_owner,
        relationship.followed_by_owner,
        relationship.close_friend,
    )
    assert (
        allows(owner=owner, privacy=privacy, allowed=allowed, hidden=hidden, viewer=viewer, relationship=relationship)
        is expected
    )


@HYPOTHESIS
@given(privacy=st.sampled_from(PRIVACY), allowed=user_sets, hidden=user_sets, relationship=relationships)
def test_owner_always_sees(privacy, allowed, hidden, relationship):
    assert allows(
        owner="alice",
        viewer="alice",
        privacy=privacy,
        allowed=allowed | {"x"},
        hidden=hidden | {"alice"},
        relationship=relationship,
    )


@HYPOTHESIS
@given(privacy=st.sampled_from(PRIVACY), allowed=user_sets, relationship=relationships)
def test_hidden_wins_over_every_privacy_and_relationship(privacy, allowed, relationship):
    assert not allows(privacy=privacy, allowed=allowed | {"bob"}, hidden={"bob"}, relationship=relationship)


@HYPOTHESIS
@given(privacy=st.sampled_from(PRIVACY), allowed=user_sets, hidden=user_sets, relationship=relationships)
def test_a_closer_relationship_never_sees_less(privacy, allowed, hidden, relationship):
    """Visibility is monotone in the relationship: adding an edge never hides a story."""
    closest = Relationship(True, True, True)
    if allows(privacy=privacy, allowed=allowed, hidden=hidden, relationship=relationship):
        assert allows(privacy=privacy, allowed=allowed, hidden=hidden, relationship=closest)


# -- examples --------------------------------------------------------------------------------


def test_public_is_for_everyone_not_hidden():
    assert allows(privacy="public", relationship=Relationship())
    assert not allows(privacy="public", hidden={"bob"})


def test_followers_means_the_viewer_follows_the_owner():
    assert allows(privacy="followers", relationship=Relationship(follows_owner=True))
    assert not allows(privacy="followers", relationship=Relationship(followed_by_owner=True, close_friend=True))


def test_friends_means_a_mutual_follow():
    assert allows(privacy="friends", relationship=Relationship(follows_owner=True, followed_by_owner=True))
    assert not allows(privacy="friends", relationship=Relationship(follows_owner=True))
    assert not allows(privacy="friends", relationship=Relationship(followed_by_owner=True))


def test_close_friends_needs_the_owners_list_not_a_follow():
    assert allows(privacy="close_friends", relationship=Relationship(close_friend=True))
    assert not allows(privacy="close_friends", relationship=Relationship(True, True, False))


def test_custom_is_the_allowed_list_only():
    assert allows(privacy="custom", allowed={"bob"})
    assert not allows(privacy="custom", allowed={"carol"}, relationship=Relationship(True, True, True))
    assert not allows(privacy="custom", allowed={"bob"}, hidden={"bob"})


@pytest.mark.parametrize("privacy", ["", "private", "PUBLIC", "everyone", None])
def test_unknown_privacy_hides(privacy):
    assert not allows(privacy=privacy, allowed={"bob"}, relationship=Relationship(True, True, True))
    assert allows(privacy=privacy, viewer="alice")


# -- Relationship -------------------------------------------------------------------------------


@given(relationships)
@settings(max_examples=20)
def test_relationship_friends_and_in_audience(r):
    assert r.friends == (r.follows_owner and r.followed_by_owner)
    assert r.in_audience("followers") == r.follows_owner
    assert r.in_audience("friends") == r.friends


def test_relationship_defaults_to_a_stranger():
    r = Relationship()
    assert not (r.follows_owner or r.followed_by_owner or r.close_friend or r.friends)
    assert not r.in_audience("followers") and not r.in_audience("friends")


def test_close_friend_alone_is_not_in_the_audience():
    r = Relationship(close_friend=True)
    assert not r.in_audience("followers") and not r.in_audience("friends")


def test_relationship_is_immutable():
    with pytest.raises(AttributeError):
        Relationship().follows_owner = True  # type: ignore[misc]
