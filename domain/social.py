"""The social graph this service keeps: follows and close-friends lists.

Each edge is its own stream, so "does A follow B?" or "is C on B's list?" costs one small read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Self
from uuid import UUID

from domain.aggregate import SELF, Aggregate, DomainEvent
from domain.errors import Conflict, NotFound, field_error
from domain.ids import is_user_id, stream_id
from domain.limits import Tally


@dataclass(frozen=True, kw_only=True)
class UserFollowed(DomainEvent):
    PERSONAL: ClassVar[dict[str, str]] = {"follower_id": SELF, "followee_id": SELF}
    follower_id: str
    followee_id: str


@dataclass(frozen=True, kw_only=True)
class UserUnfollowed(DomainEvent):
    PERSONAL: ClassVar[dict[str, str]] = {"follower_id": SELF, "followee_id": SELF}
    follower_id: str
    followee_id: str


@dataclass(frozen=True, kw_only=True)
class CloseFriendAdded(DomainEvent):
    PERSONAL: ClassVar[dict[str, str]] = {"user_id": SELF, "friend_id": SELF}
    user_id: str
    friend_id: str


@dataclass(frozen=True, kw_only=True)
class CloseFriendRemoved(DomainEvent):
    PERSONAL: ClassVar[dict[str, str]] = {"user_id": SELF, "friend_id": SELF}
    user_id: str
    friend_id: str


@dataclass(frozen=True, kw_only=True)
class UserMuted(DomainEvent):
    """``user_id`` no longer sees ``muted_id``'s stories in their tray (never shown to ``muted_id``)."""

    PERSONAL: ClassVar[dict[str, str]] = {"user_id": SELF, "muted_id": SELF}
    user_id: str
    muted_id: str


@dataclass(frozen=True, kw_only=True)
class UserUnmuted(DomainEvent):
    PERSONAL: ClassVar[dict[str, str]] = {"user_id": SELF, "muted_id": SELF}
    user_id: str
    muted_id: str


def _check_other_user(actor_id: str, other_id: str, what: str) -> None:
    if not is_user_id(other_id):
        raise field_error("user_id", "must be 1 to 64 characters of A-Za-z0-9_.-")
    if other_id == actor_id:
        raise field_error("user_id", f"you cannot {what} yourself", code=f"cannot_{what.replace(' ', '_')}_self")


class _CountedEdge(Aggregate):
    """An on/off edge from one user to another whose starts count against a limit (``Tally``):
    a follow, a mute. ``start`` on an active edge changes nothing (PUT is idempotent: None);
    ``stop`` on an inactive one is NotFound. Subclasses name their words and events."""

    active = False
    KIND = ""  # the stream kind, and the verb in ``cannot_<verb>_self``
    ENDS: tuple[str, str] = ("", "")  # the events' field names for (actor, other)
    STARTED: type[DomainEvent]
    STOPPED: type[DomainEvent]
    NOT_ACTIVE = ("", "")  # (message, code) of the NotFound that stopping an inactive edge raises

    @classmethod
    def stream_for(cls, actor_id: str, other_id: str) -> UUID:
        return stream_id(cls.KIND, actor_id, other_id)

    @classmethod
    def start(
        cls,
        current: Self | None,
        actor_id: str,
        other_id: str,
        now: datetime,
        tally: Tally | None = None,
        limit: int | None = None,
    ) -> Self | None:
        """None when already active. With ``tally`` (the actor's count of such edges) and
        ``limit``, Conflict ``limit_reached`` when the actor already has ``limit`` of them."""
        _check_other_user(actor_id, other_id, cls.KIND)
        edge = current or cls(cls.stream_for(actor_id, other_id))
        if edge.active:
            return None
        if tally is not None and limit is not None:
            tally.check_room(limit)
        edge._record(cls.STARTED, now, **dict(zip(cls.ENDS, (actor_id, other_id))))
        if tally is not None and limit is not None:
            tally.take(limit, now)
        return edge

    def stop(self, now: datetime, tally: Tally | None = None) -> None:
        if not self.active:
            raise NotFound(self.NOT_ACTIVE[0], code=self.NOT_ACTIVE[1])
        self._record(self.STOPPED, now, **{name: getattr(self, name) for name in self.ENDS})
        if tally is not None:
            tally.give_back(now)

    def _started(self, event: DomainEvent) -> None:
        self.active = True
        for name in self.ENDS:  # follower_id and followee_id, user_id and muted_id
            setattr(self, name, getattr(event, name))

    def _stopped(self, event: DomainEvent) -> None:
        self.active = False


class Follow(_CountedEdge):
    """The edge follower -> followee (a re-follow is not a new follow)."""

    KIND, ENDS = "follow", ("follower_id", "followee_id")
    STARTED, STOPPED = UserFollowed, UserUnfollowed
    NOT_ACTIVE = ("you do not follow this user", "not_following")
    _apply_UserFollowed, _apply_UserUnfollowed = _CountedEdge._started, _CountedEdge._stopped
    # the same methods under the domain's words (``vars``: the classmethod itself, not one bound to the base)
    follow, unfollow = vars(_CountedEdge)["start"], _CountedEdge.stop


class Mute(_CountedEdge):
    """Whether ``user_id`` has muted ``muted_id``'s stories. Not an unfollow: the follow stays."""

    KIND, ENDS = "mute", ("user_id", "muted_id")
    STARTED, STOPPED = UserMuted, UserUnmuted
    NOT_ACTIVE = ("you do not mute this user", "not_muted")
    _apply_UserMuted, _apply_UserUnmuted = _CountedEdge._started, _CountedEdge._stopped
    mute, unmute = vars(_CountedEdge)["start"], _CountedEdge.stop


class CloseFriendship(Aggregate):
    """Whether ``friend_id`` is on ``user_id``'s close-friends list."""

    active = False

    @staticmethod
    def stream_for(user_id: str, friend_id: str) -> UUID:
        return stream_id("close-friend", user_id, friend_id)

    @classmethod
    def add(
        cls,
        current: CloseFriendship | None,
        user_id: str,
        friend_id: str,
        now: datetime,
        tally: Tally | None = None,
        limit: int | None = None,
    ) -> CloseFriendship:
        """With ``tally`` (the user's close-friends count) and ``limit``, Conflict
        ``limit_reached`` when the list already holds ``limit`` people."""
        _check_other_user(user_id, friend_id, "add")
        entry = current or cls(cls.stream_for(user_id, friend_id))
        if entry.active:
            raise Conflict("already on your close-friends list", code="already_close_friend")
        if tally is not None and limit is not None:
            tally.check_room(limit)
        entry._record(CloseFriendAdded, now, user_id=user_id, friend_id=friend_id)
        if tally is not None and limit is not None:
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
