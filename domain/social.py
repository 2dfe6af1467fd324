"""The social graph this service keeps: follows and close-friends lists.

Each edge is its own stream, so "does A follow B?" or "is C on B's list?" costs one small read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.aggregate import Aggregate, DomainEvent
from domain.errors import Conflict, NotFound, field_error
from domain.ids import is_user_id, stream_id
from domain.limits import Tally


@dataclass(frozen=True, kw_only=True)
class UserFollowed(DomainEvent):
    follower_id: str
    followee_id: str


@dataclass(frozen=True, kw_only=True)
class UserUnfollowed(DomainEvent):
    follower_id: str
    followee_id: str


@dataclass(frozen=True, kw_only=True)
class CloseFriendAdded(DomainEvent):
    user_id: str
    friend_id: str


@dataclass(frozen=True, kw_only=True)
class CloseFriendRemoved(DomainEvent):
    user_id: str
    friend_id: str


def _check_other_user(actor_id: str, other_id: str, what: str) -> None:
    if not is_user_id(other_id):
        raise field_error("user_id", "must be 1 to 64 characters of A-Za-z0-9_.-")
    if other_id == actor_id:
        raise field_error("user_id", f"you cannot {what} yourself", code=f"cannot_{what.replace(' ', '_')}_self")


class Follow(Aggregate):
    """The edge follower -> followee."""

    active = False

    @staticmethod
    def stream_for(follower_id: str, followee_id: str):
        return stream_id("follow", follower_id, followee_id)

    @classmethod
    def follow(
        cls, current: Follow | None, follower_id: str, followee_id: str, now: datetime,
        tally: Tally | None = None, limit: int | None = None,
    ) -> Follow | None:
        """Start following; None when already following (PUT is idempotent, and a re-follow is
        not a new follow). With ``tally`` (the follower's follow count) and ``limit``, Conflict
        ``limit_reached`` when the follower already follows ``limit`` accounts."""
        _check_other_user(follower_id, followee_id, "follow")
        edge = current or cls(cls.stream_for(follower_id, followee_id))
        if edge.active:
            return None
        counted = tally is not None and limit is not None
        if counted:
            tally.check_room(limit)
        edge._record(UserFollowed, now, follower_id=follower_id, followee_id=followee_id)
        if counted:
            tally.take(limit, now)
        return edge

    def unfollow(self, now: datetime, tally: Tally | None = None) -> None:
        if not self.active:
            raise NotFound("you do not follow this user", code="not_following")
        self._record(UserUnfollowed, now, follower_id=self.follower_id, followee_id=self.followee_id)
        if tally is not None:
            tally.give_back(now)

    def _apply_UserFollowed(self, event: UserFollowed) -> None:
        self.active = True
        self.follower_id, self.followee_id = event.follower_id, event.followee_id

    def _apply_UserUnfollowed(self, event: UserUnfollowed) -> None:
        self.active = False


class CloseFriendship(Aggregate):
    """Whether ``friend_id`` is on ``user_id``'s close-friends list."""

    active = False

    @staticmethod
    def stream_for(user_id: str, friend_id: str):
        return stream_id("close-friend", user_id, friend_id)

    @classmethod
    def add(
        cls, current: CloseFriendship | None, user_id: str, friend_id: str, now: datetime,
        tally: Tally | None = None, limit: int | None = None,
    ) -> CloseFriendship:
        """With ``tally`` (the user's close-friends count) and ``limit``, Conflict
        ``limit_reached`` when the list already holds ``limit`` people."""
        _check_other_user(user_id, friend_id, "add")
        entry = current or cls(cls.stream_for(user_id, friend_id))
        if entry.active:
            raise Conflict("already on your close-friends list", code="already_close_friend")
        counted = tally is not None and limit is not None
        if counted:
            tally.check_room(limit)
        entry._record(CloseFriendAdded, now, user_id=user_id, friend_id=friend_id)
        if counted:
            tally.take(limit, now)
        return entry

    def remove(self, now: datetime, tally: Tally | None = None) -> None:
        if not self.active:
            raise NotFound("not on your close-friends list", code="not_close_friend")
        self._record(CloseFriendRemoved, now, user_id=self.user_id, friend_id=self.friend_id)
        if tally is not None:
            tally.give_back(now)

    def _apply_CloseFriendAdded(self, event: CloseFriendAdded) -> None:
        self.active = True
        self.user_id, self.friend_id = event.user_id, event.friend_id

    def _apply_CloseFriendRemoved(self, event: CloseFriendRemoved) -> None:
        self.active = False
