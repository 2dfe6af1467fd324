"""Highlights: permanent, titled collections of an owner's stories, kept past expiry.

A Highlight stream holds one highlight; the owner's HighlightReel stream holds the order of
all of them, so "reorder" can check it was given the caller's whole list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from domain.aggregate import SELF, Aggregate, DomainEvent
from domain.errors import Forbidden, InvalidInput, NotFound, field_error, limit_reached
from domain.ids import canonical_id, stream_id
from domain.limits import HIGHLIGHT_STORIES, HIGHLIGHTS, Limits
from domain.stories import Story
from domain.visibility import Relationship

TITLE_LIMIT = 50
DESCRIPTION_LIMIT = 200
MAX_STORIES = Limits.highlight_stories  # the defaults; the configured limits are parameters
MAX_HIGHLIGHTS = Limits.highlights
EDITABLE_FIELDS = ("title", "description", "cover", "is_pinned", "is_archived")
COVER_FIELDS = ("story_id", "media_url", "emoji", "color")
COVER_EMOJI_LIMIT = 16
COVER_COLOUR_PATTERN = r"^#[0-9A-Fa-f]{6}$"
_COVER_COLOUR = re.compile(COVER_COLOUR_PATTERN)


def _cover_from_url(cover: Any) -> Any:
    """Version 1 stored the cover as an image URL string."""
    return {"media_url": cover} if isinstance(cover, str) else cover


@dataclass(frozen=True, kw_only=True)
class HighlightCreated(DomainEvent):
    PERSONAL: ClassVar[dict[str, str]] = {
        "user_id": SELF,
        "title": "user_id",
        "description": "user_id",
        "cover": "user_id",
    }
    highlight_id: str
    user_id: str
    title: str
    description: str
    cover: dict[str, Any] | None  # {story_id?, media_url?, emoji?, color?}: strings
    story_ids: list[str]
    is_pinned: bool
    is_archived: bool

    class_version: ClassVar[int] = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1's cover was a URL string; version 2's is an object."""
        state["cover"] = _cover_from_url(state.get("cover"))


@dataclass(frozen=True, kw_only=True)
class HighlightUpdated(DomainEvent):
    PERSONAL: ClassVar[dict[str, str]] = {"user_id": SELF, "changes": "user_id"}
    highlight_id: str
    user_id: str
    changes: dict[str, Any]  # only the fields the owner changed

    class_version: ClassVar[int] = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1's cover was a URL string; version 2's is an object."""
        changes = state.get("changes") or {}
        if "cover" in changes:
            state["changes"] = {**changes, "cover": _cover_from_url(changes["cover"])}


@dataclass(frozen=True, kw_only=True)
class HighlightStoriesAdded(DomainEvent):
    PERSONAL: ClassVar[dict[str, str]] = {"user_id": SELF}
    highlight_id: str
    user_id: str
    story_ids: list[str]


@dataclass(frozen=True, kw_only=True)
class HighlightStoriesRemoved(DomainEvent):
    PERSONAL: ClassVar[dict[str, str]] = {"user_id": SELF}
    highlight_id: str
    user_id: str
    story_ids: list[str]


@dataclass(frozen=True, kw_only=True)
class HighlightDeleted(DomainEvent):
    PERSONAL: ClassVar[dict[str, str]] = {"user_id": SELF}
    highlight_id: str
    user_id: str


@dataclass(frozen=True, kw_only=True)
class HighlightFiled(DomainEvent):
    """The reel's record that a highlight joined the owner's list (at the end)."""

    PERSONAL: ClassVar[dict[str, str]] = {"user_id": SELF}
    user_id: str
    highlight_id: str


@dataclass(frozen=True, kw_only=True)
class HighlightUnfiled(DomainEvent):
    PERSONAL: ClassVar[dict[str, str]] = {"user_id": SELF}
    user_id: str
    highlight_id: str


@dataclass(frozen=True, kw_only=True)
class HighlightsReordered(DomainEvent):
    PERSONAL: ClassVar[dict[str, str]] = {"user_id": SELF}
    user_id: str
    highlight_ids: list[str]


def check_highlight_fields(fields: dict[str, Any]) -> None:
    problems = []
    if "title" in fields and not 1 <= len((fields["title"] or "").strip()) <= TITLE_LIMIT:
        problems.append({"field": "title", "message": f"must be 1 to {TITLE_LIMIT} characters"})
    if len(fields.get("description") or "") > DESCRIPTION_LIMIT:
        problems.append({"field": "description", "message": f"at most {DESCRIPTION_LIMIT} characters"})
    if problems:
        raise InvalidInput("the highlight breaks the rules", details=problems)


def _same_id(value: str) -> str:
    """One spelling per UUID (the canonical one); anything else as given."""
    return canonical_id(value) or value


def _distinct_ids(story_ids: Iterable[str]) -> list[str]:
    """Canonical ids, each once, in the order given: two spellings of one story are one story."""
    return list(dict.fromkeys(_same_id(s) for s in story_ids))


def check_cover(cover: Any, story_ids: Iterable[str]) -> dict[str, str] | None:
    """The cover object ``{story_id?, media_url?, emoji?, color?}`` (None: no cover); its
    ``story_id`` must be one of the highlight's stories. Returns it in its stored form."""
    if cover is None:
        return None
    if not isinstance(cover, dict):
        raise field_error("cover", "must be an object {story_id?, media_url?, emoji?, color?}")
    problems = [{"field": f"cover.{k}", "message": "unknown field"} for k in cover if k not in COVER_FIELDS]
    stored: dict[str, str] = {k: v for k, v in cover.items() if v is not None}
    if not all(isinstance(v, str) for v in stored.values()):
        problems.append({"field": "cover", "message": "every cover field is a string"})
    else:
        if "media_url" in stored and not stored["media_url"].startswith(("http://", "https://")):
            problems.append({"field": "cover.media_url", "message": "must be an http(s) URL"})
        if "emoji" in stored and not 1 <= len(stored["emoji"]) <= COVER_EMOJI_LIMIT:
            problems.append({"field": "cover.emoji", "message": f"1 to {COVER_EMOJI_LIMIT} characters"})
        if "color" in stored and not _COVER_COLOUR.fullmatch(stored["color"]):
            problems.append({"field": "cover.color", "message": "must be a #RRGGBB colour"})
        if "story_id" in stored:
            ids = {_same_id(s): s for s in story_ids}
            if _same_id(stored["story_id"]) not in ids:
                problems.append({"field": "cover.story_id", "message": "must be one of the highlight's stories"})
            else:
                stored["story_id"] = ids[_same_id(stored["story_id"])]
    if problems:
        raise InvalidInput("the cover breaks the rules", code="invalid_cover", details=problems)
    return stored


def check_own_stories(owner_id: str, story_ids: Iterable[str], stories: dict[str, Story | None]) -> None:
    """Every id must name a story the owner posted and has not deleted (expired is fine)."""
    bad = [s for s in story_ids if (st := stories.get(s)) is None or st.owner_id != owner_id or st.deleted]
    if bad:
        raise InvalidInput(
            "a highlight holds only your own stories",
            code="invalid_story_ids",
            details=[{"field": "story_ids", "message": f"not one of your stories: {s}"} for s in bad],
        )


def _check_story_limit(count: int, limit: int) -> None:
    if count > limit:
        raise limit_reached(HIGHLIGHT_STORIES, limit, f"a highlight holds at most {limit} stories")


class Highlight(Aggregate):
    deleted = False

    @classmethod
    def create(
        cls,
        highlight_id: UUID,
        owner_id: str,
        fields: dict[str, Any],
        stories: dict[str, Story | None],
        now: datetime,
        limit: int = MAX_STORIES,
    ) -> Highlight:
        """``limit``: stories per highlight (more is Conflict ``limit_reached``)."""
        check_highlight_fields({"title": fields.get("title"), **fields})
        story_ids = _distinct_ids(fields.get("story_ids") or [])
        if not story_ids:
            raise field_error("story_ids", "a highlight holds at least one story")
        _check_story_limit(len(story_ids), limit)
        check_own_stories(owner_id, story_ids, stories)
        cover = check_cover(fields.get("cover"), story_ids)
        highlight = cls(highlight_id)
        highlight._record(
            HighlightCreated,
            now,
            highlight_id=str(highlight_id),
            user_id=owner_id,
            title=fields["title"].strip(),
            description=fields.get("description") or "",
            cover=cover,
            story_ids=story_ids,
            is_pinned=bool(fields.get("is_pinned", False)),
            is_archived=bool(fields.get("is_archived", False)),
        )
        return highlight

    def visible_to(
        self, viewer_id: str, story_of: Callable[[str], Story | None], relationship_of: Callable[[Story], Relationship]
    ) -> bool:
        """May ``viewer_id`` know this highlight exists? The owner while it is not deleted;
        others only while it is also not archived and holds a story they may see by audience
        (a highlight's stories outlive expiry; a deleted one shows nothing), as the query side
        serves it. ``story_of`` loads one of its stories by id, ``relationship_of`` the
        viewer's graph edges to a story's owner; both are called only until a visible story
        turns up."""
        if self.deleted:
            return False
        if viewer_id == self.owner_id:
            return True
        if self.is_archived:
            return False
        for story_id in self.story_ids:
            story = story_of(story_id)
            if story is not None and not story.deleted and story.audience_allows(viewer_id, relationship_of(story)):
                return True
        return False

    def check_owner(self, actor_id: str) -> None:
        if self.deleted:
            raise NotFound("highlight not found")
        if actor_id != self.owner_id:
            raise Forbidden("only the owner can change a highlight", code="not_owner")

    def update(self, actor_id: str, changes: dict[str, Any], now: datetime) -> bool:
        """Record the fields that really change; False when none does."""
        self.check_owner(actor_id)
        changes = {k: v for k, v in changes.items() if k in EDITABLE_FIELDS}
        if not changes:
            raise InvalidInput(
                "nothing to change",
                code="empty_update",
                details=[{"field": "", "message": f"give one of {', '.join(EDITABLE_FIELDS)}"}],
            )
        check_highlight_fields(changes)
        if "cover" in changes:
            changes["cover"] = check_cover(changes["cover"], self.story_ids)
        if "title" in changes:
            changes["title"] = changes["title"].strip()
        if changes.get("description") is None and "description" in changes:
            changes["description"] = ""
        changes = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if not changes:
            return False
        self._record(HighlightUpdated, now, highlight_id=str(self.id), user_id=self.owner_id, changes=changes)
        return True

    def add_stories(
        self,
        actor_id: str,
        story_ids: list[str],
        stories: dict[str, Story | None],
        now: datetime,
        limit: int = MAX_STORIES,
    ) -> bool:
        """``stories``: the stories named, and the highlight's own; a deleted story is gone from
        the highlight as served, so it does not count against the limit."""
        self.check_owner(actor_id)
        new = [s for s in _distinct_ids(story_ids) if s not in self.story_ids]
        kept = [s for s in self.story_ids if s not in stories or ((st := stories[s]) is not None and not st.deleted)]
        _check_story_limit(len(kept) + len(new), limit)
        check_own_stories(self.owner_id, new, stories)
        if not new:
            return False
        self._record(HighlightStoriesAdded, now, highlight_id=str(self.id), user_id=self.owner_id, story_ids=new)
        return True

    def remove_stories(self, actor_id: str, story_ids: list[str], now: datetime) -> bool:
        self.check_owner(actor_id)
        present = [s for s in _distinct_ids(story_ids) if s in self.story_ids]
        if not present:
            return False
        if len(present) == len(self.story_ids):
            raise field_error(
                "story_ids",
                "a highlight keeps at least one story; delete the highlight instead",
                code="highlight_would_be_empty",
            )
        self._record(HighlightStoriesRemoved, now, highlight_id=str(self.id), user_id=self.owner_id, story_ids=present)
        return True

    def delete(self, actor_id: str, now: datetime) -> None:
        self.check_owner(actor_id)
        self._record(HighlightDeleted, now, highlight_id=str(self.id), user_id=self.owner_id)

    @property
    def erased(self) -> bool:
        """Its author's account was erased (their id reads None): it exists for no one."""
        return self.owner_id is None

    def _apply_HighlightCreated(self, event: HighlightCreated) -> None:
        self.owner_id = event.user_id
        self.title, self.description, self.cover = event.title, event.description, event.cover
        self.is_pinned, self.is_archived = event.is_pinned, event.is_archived
        self.story_ids = list(event.story_ids)

    def _apply_HighlightUpdated(self, event: HighlightUpdated) -> None:
        for name, value in event.changes.items():
            setattr(self, name, value)

    def _apply_HighlightStoriesAdded(self, event: HighlightStoriesAdded) -> None:
        self.story_ids.extend(event.story_ids)

    def _apply_HighlightStoriesRemoved(self, event: HighlightStoriesRemoved) -> None:
        gone = set(event.story_ids)
        self.story_ids = [s for s in self.story_ids if s not in gone]

    def _apply_HighlightDeleted(self, event: HighlightDeleted) -> None:
        self.deleted = True


class HighlightReel(Aggregate):
    """The order of one owner's highlights."""

    def __init__(self, aggregate_id: UUID) -> None:
        super().__init__(aggregate_id)
        self.highlight_ids: list[str] = []

    @staticmethod
    def stream_for(owner_id: str) -> UUID:
        return stream_id("highlight-reel", owner_id)

    @classmethod
    def open(cls, current: HighlightReel | None, owner_id: str) -> HighlightReel:
        reel = current or cls(cls.stream_for(owner_id))
        reel.owner_id = owner_id
        return reel

    def file(self, highlight_id: UUID, now: datetime, limit: int = MAX_HIGHLIGHTS) -> None:
        """``limit``: highlights per user (one more is Conflict ``limit_reached``)."""
        if len(self.highlight_ids) >= limit:
            raise limit_reached(HIGHLIGHTS, limit, f"you have the most highlights allowed ({limit})")
        self._record(HighlightFiled, now, user_id=self.owner_id, highlight_id=str(highlight_id))

    def unfile(self, highlight_id: UUID, now: datetime) -> None:
        if str(highlight_id) in self.highlight_ids:
            self._record(HighlightUnfiled, now, user_id=self.owner_id, highlight_id=str(highlight_id))

    def reorder(self, highlight_ids: list[str], now: datetime) -> bool:
        """False when the order is already this one (nothing recorded)."""
        if sorted(highlight_ids) != sorted(self.highlight_ids) or len(set(highlight_ids)) != len(highlight_ids):
            raise InvalidInput(
                "give every one of your highlights exactly once",
                code="not_your_whole_list",
                details=[{"field": "highlight_ids", "message": "must be a permutation of your highlights"}],
            )
        if highlight_ids == self.highlight_ids:
            return False
        self._record(HighlightsReordered, now, user_id=self.owner_id, highlight_ids=list(highlight_ids))
        return True

    def _apply_HighlightFiled(self, event: HighlightFiled) -> None:
        self.owner_id = event.user_id
        self.highlight_ids.append(event.highlight_id)

    def _apply_HighlightUnfiled(self, event: HighlightUnfiled) -> None:
        self.highlight_ids.remove(event.highlight_id)

    def _apply_HighlightsReordered(self, event: HighlightsReordered) -> None:
        self.owner_id = event.user_id
        self.highlight_ids = list(event.highlight_ids)
