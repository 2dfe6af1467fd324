"""The contract's limits, and the private records that count against them in O(1).

Limits (each a setting): live stories per author, accounts a user follows, close friends per
user, stories per highlight, highlights per user. Going over one is a Conflict ``limit_reached``
with ``details = {"limit": N, "kind": ...}``.

The last two are counted by aggregates a command loads anyway (a Highlight holds its story ids,
the owner's HighlightReel its highlight ids). The first three would need the author's whole
history, so each is kept in a per-user private stream whose every record holds the *absolute*
state; a command loads only the stream's latest record (``Batch.load_last``) and appends the next
one. Concurrent writers collide on that record's version (optimistic concurrency), so two
creates racing for the last slot cannot both succeed.

- ``Tally`` (follows, close friends): the count.
- ``LiveStories``: the author's live stories as {story_id: expires_at}, pruned of expired ones
  on every write, so a record holds at most ``limit`` entries. A story past its ``expires_at``
  does not count whether or not ``StoryExpired`` was appended; deleting one frees its slot.

These records are not domain events: they are not in ``domain.catalogue.EVENT_TYPES``, so the
log readers (projector, relay, export, replay) skip them, as they skip idempotency records.
Logs written before the limits existed have no records: counting starts at the upgrade (older
follows, close friends and live stories are not counted; a removal never takes a count below 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar
from uuid import UUID

from domain.aggregate import SELF, Aggregate, DomainEvent
from domain.errors import limit_reached
from domain.ids import stream_id


class LimitKind(StrEnum):
    """Which limit (``details.kind`` of a ``limit_reached``; ``TallyRecorded.kind``)."""

    LIVE_STORIES = "live_stories"
    FOLLOWS = "follows"
    CLOSE_FRIENDS = "close_friends"
    MUTED = "muted"
    HIGHLIGHT_STORIES = "highlight_stories"
    HIGHLIGHTS = "highlights"


LIVE_STORIES, FOLLOWS, CLOSE_FRIENDS, MUTED = (
    LimitKind.LIVE_STORIES,
    LimitKind.FOLLOWS,
    LimitKind.CLOSE_FRIENDS,
    LimitKind.MUTED,
)
HIGHLIGHT_STORIES, HIGHLIGHTS = LimitKind.HIGHLIGHT_STORIES, LimitKind.HIGHLIGHTS


@dataclass(frozen=True)
class Limits:
    """The contract's defaults; the command API passes the configured values."""

    live_stories: int = 100
    follows: int = 7_500
    close_friends: int = 1_500
    highlight_stories: int = 100
    highlights: int = 200
    muted: int = 7_500


_MESSAGES: dict[LimitKind, str] = {
    FOLLOWS: "you follow the most accounts allowed ({limit})",
    CLOSE_FRIENDS: "your close-friends list is full ({limit})",
    LIVE_STORIES: "you have the most live stories allowed ({limit})",
    MUTED: "you mute the most accounts allowed ({limit})",
}


@dataclass(frozen=True, kw_only=True)
class TallyRecorded(DomainEvent):
    """Private: the user's count of ``kind`` after a change."""

    PERSONAL: ClassVar[dict[str, str]] = {"user_id": SELF}
    user_id: str
    kind: str
    count: int


class Tally(Aggregate):
    """How many follows / close friends a user has (load only the latest record)."""

    count = 0
    kind: LimitKind
    user_id: str

    @staticmethod
    def stream_for(kind: str, user_id: str) -> UUID:
        return stream_id("tally", kind, user_id)

    @classmethod
    def open(cls, current: Tally | None, kind: str, user_id: str) -> Tally:
        tally = current or cls(cls.stream_for(kind, user_id))
        tally.kind, tally.user_id = LimitKind(kind), user_id
        return tally

    def check_room(self, limit: int) -> None:
        """Raise before anything is recorded when one more would go over ``limit``."""
        if self.count >= limit:
            raise limit_reached(self.kind, limit, _MESSAGES[self.kind].format(limit=limit))

    def take(self, limit: int, now: datetime) -> None:
        self.check_room(limit)
        self._record(TallyRecorded, now, user_id=self.user_id, kind=str(self.kind), count=self.count + 1)

    def give_back(self, now: datetime) -> None:
        # Never below 0: an edge made before the upgrade was never counted.
        if self.count > 0:
            self._record(TallyRecorded, now, user_id=self.user_id, kind=str(self.kind), count=self.count - 1)

    def _apply_TallyRecorded(self, event: TallyRecorded) -> None:
        self.user_id, self.kind, self.count = event.user_id, LimitKind(event.kind), event.count


@dataclass(frozen=True, kw_only=True)
class LiveStoriesRecorded(DomainEvent):
    """Private: the author's live stories after a change, {story_id: expires_at (ISO 8601)}."""

    PERSONAL: ClassVar[dict[str, str]] = {"user_id": SELF}
    user_id: str
    live: dict[str, str]


class LiveStories(Aggregate):
    """An author's live stories (load only the latest record)."""

    def __init__(self, aggregate_id: UUID) -> None:
        super().__init__(aggregate_id)
        self.live: dict[str, datetime] = {}

    @staticmethod
    def stream_for(user_id: str) -> UUID:
        return stream_id("live-stories", user_id)

    @classmethod
    def open(cls, current: LiveStories | None, user_id: str) -> LiveStories:
        ledger = current or cls(cls.stream_for(user_id))
        ledger.user_id = user_id
        return ledger

    def live_at(self, now: datetime) -> dict[str, datetime]:
        """The stories still live at ``now`` (a story is live while ``now < expires_at``)."""
        return {s: e for s, e in self.live.items() if now < e}

    def count(self, now: datetime) -> int:
        return len(self.live_at(now))

    def check_room(self, limit: int, now: datetime) -> None:
        if self.count(now) >= limit:
            raise limit_reached(LIVE_STORIES, limit, _MESSAGES[LIVE_STORIES].format(limit=limit))

    def admit(self, story_id: str, expires_at: datetime, limit: int, now: datetime) -> None:
        self.check_room(limit, now)
        live = self.live_at(now)
        live[story_id] = expires_at
        self._write(live, now)

    def release(self, story_id: str, now: datetime) -> bool:
        """The story was deleted; False when it held no slot (expired, or from before the upgrade)."""
        live = self.live_at(now)
        if live.pop(story_id, None) is None:
            return False
        self._write(live, now)
        return True

    def _write(self, live: dict[str, datetime], now: datetime) -> None:
        self._record(LiveStoriesRecorded, now, user_id=self.user_id, live={s: e.isoformat() for s, e in live.items()})

    def _apply_LiveStoriesRecorded(self, event: LiveStoriesRecorded) -> None:
        self.user_id = event.user_id
        self.live = {s: datetime.fromisoformat(e) for s, e in event.live.items()}
