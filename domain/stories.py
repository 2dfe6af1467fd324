"""The Story aggregate: a story's content and settings, and its life (live, deleted, expired).

Its stream stays small: views, votes and answers live in streams of their own
(``domain/engagement.py``), so a hot story's commands never load its audience's history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar
from uuid import UUID

from domain.aggregate import SELF, Aggregate, DomainEvent
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound, field_error
from domain.ids import is_user_id
from domain.limits import LiveStories
from domain.platform import Platform
from domain.stickers import check_stickers
from domain.visibility import Privacy, Relationship, audience_allows


class StoryType(StrEnum):
    IMAGE = "image"
    VIDEO = "video"
    TEXT = "text"


class ReplyPolicy(StrEnum):
    """Who may reply to a story (``allow_replies``): anyone who can see it, only the owner's
    audience (``Platform.audience``), or no one."""

    EVERYONE = "everyone"
    AUDIENCE = "audience"
    OFF = "off"


STORY_TYPES: tuple[StoryType, ...] = tuple(StoryType)
MEDIA_STORY_TYPES = frozenset({StoryType.IMAGE, StoryType.VIDEO})  # they need media_id or media_url
REPLY_POLICIES: tuple[ReplyPolicy, ...] = tuple(ReplyPolicy)
DEFAULT_REPLY_POLICY = ReplyPolicy.EVERYONE
EXPIRY_HOURS = (6, 12, 24, 48)
DEFAULT_EXPIRY_HOURS = 24
DURATION_RANGE = (1.0, 15.0)
DEFAULT_DURATION = 5.0
TEXT_CONTENT_LIMIT = 2200
MAX_LISTED_USERS = 1000  # allowed_viewer_ids / hidden_from_ids
GRADIENT_COLOURS = (2, 5)
COLOUR_PATTERN = r"^#(?:[0-9A-Fa-f]{6}|[0-9A-Fa-f]{8})$"
_COLOUR = re.compile(COLOUR_PATTERN)
EDITABLE_FIELDS = ("text_content", "background_color", "background_gradient")
STICKER_GEOMETRY = ("x", "y", "width", "height", "rotation")
RESHARED_CONTENT = (
    "story_type",
    "media_id",
    "media_url",
    "thumbnail_url",
    "text_content",
    "background_color",
    "background_gradient",
    "duration",
)
RESHARE_OPTIONS = (
    "privacy",
    "allowed_viewer_ids",
    "hidden_from_ids",
    "allow_replies",
    "expires_in_hours",
    "allow_sharing",
)


@dataclass(frozen=True, kw_only=True)
class StoryCreated(DomainEvent):
    # A reshare's content is what the original's author wrote: sealed with their key (the first
    # of the ``|`` alternatives that names someone).
    PERSONAL: ClassVar[dict[str, str]] = {
        "user_id": SELF,
        "media_id": "reshared_from.user_id|user_id",
        "media_url": "reshared_from.user_id|user_id",
        "thumbnail_url": "reshared_from.user_id|user_id",
        "text_content": "reshared_from.user_id|user_id",
        "stickers": "user_id",  # a reshare has none of the original's
        "allowed_viewer_ids": SELF,
        "hidden_from_ids": SELF,
        "reshared_from": "reshared_from.user_id",
    }
    story_id: str
    user_id: str
    story_type: str
    media_id: str | None
    media_url: str | None
    thumbnail_url: str | None
    text_content: str | None
    background_color: str | None
    background_gradient: list[str] | None
    duration: float
    stickers: list[dict[str, Any]]
    privacy: str
    allowed_viewer_ids: list[str]
    hidden_from_ids: list[str]
    allow_replies: str
    expires_at: str  # ISO 8601, UTC
    allow_sharing: bool = True  # since schema version 2: may viewers reshare it?
    reshared_from: dict[str, str] | None = None  # since version 3: {"story_id", "user_id"} of a reshare's original

    class_version: ClassVar[int] = 3

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 had no sharing setting; every story could be shared."""
        state.setdefault("allow_sharing", True)

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        """Reshares came with version 3: an older story is an original."""
        state.setdefault("reshared_from", None)


# A reshare's fields that hold what the original's author wrote (theirs, by ``PERSONAL``): they go
# when that author is erased.
ORIGINAL_AUTHORS_FIELDS = tuple(
    name for name, owner in StoryCreated.PERSONAL.items() if owner.startswith("reshared_from.")
)


@dataclass(frozen=True, kw_only=True)
class StoryEdited(DomainEvent):
    """The owner edited the story. It carries the editable content *as it stands after the edit*
    (whole, so the latest edit alone gives the current content) and which parts this edit changed
    (``text_content``, ``background_color``, ``background_gradient``, ``stickers.<i>``)."""

    PERSONAL: ClassVar[dict[str, str]] = {"user_id": SELF, "text_content": "user_id", "stickers": "user_id"}
    story_id: str
    user_id: str
    text_content: str | None
    background_color: str | None
    background_gradient: list[str] | None
    stickers: list[dict[str, Any]]
    changed: list[str]


@dataclass(frozen=True, kw_only=True)
class StoryDeleted(DomainEvent):
    PERSONAL: ClassVar[dict[str, str]] = {"user_id": SELF}
    story_id: str
    user_id: str


@dataclass(frozen=True, kw_only=True)
class StoryExpired(DomainEvent):
    PERSONAL: ClassVar[dict[str, str]] = {"user_id": SELF}
    story_id: str
    user_id: str
    expired_at: str  # the story's due time, which a late sweep does not move


def check_story_fields(fields: dict[str, Any], platform: Platform) -> None:
    """Cross-field rules for a new story; raises InvalidInput listing every problem."""
    problems: list[dict[str, str]] = []

    def problem(field: str, message: str) -> None:
        problems.append({"field": field, "message": message})

    story_type = fields.get("story_type")
    if story_type not in STORY_TYPES:
        problem("story_type", f"must be one of {', '.join(STORY_TYPES)}")
    elif story_type in MEDIA_STORY_TYPES and not (fields.get("media_id") or fields.get("media_url")):
        problem("media_url", f"an {story_type} story needs media_id or media_url")
    elif story_type == StoryType.TEXT and not (fields.get("text_content") or "").strip():
        problem("text_content", "a text story needs text_content")
    if len(fields.get("text_content") or "") > TEXT_CONTENT_LIMIT:
        problem("text_content", f"at most {TEXT_CONTENT_LIMIT} characters")
    if not DURATION_RANGE[0] <= fields.get("duration", DEFAULT_DURATION) <= DURATION_RANGE[1]:
        problem("duration", "must be between 1 and 15 seconds")
    if fields.get("expires_in_hours", DEFAULT_EXPIRY_HOURS) not in EXPIRY_HOURS:
        problem("expires_in_hours", "must be one of 6, 12, 24, 48")
    colour = fields.get("background_color")
    if colour is not None and not _COLOUR.fullmatch(colour):
        problem("background_color", "must be a #RRGGBB or #RRGGBBAA colour")
    gradient = fields.get("background_gradient")
    if gradient is not None and (
        not GRADIENT_COLOURS[0] <= len(gradient) <= GRADIENT_COLOURS[1]
        or not all(isinstance(c, str) and _COLOUR.fullmatch(c) for c in gradient)
    ):
        problem("background_gradient", "must list 2 to 5 #RRGGBB colours")
    privacy = fields.get("privacy", platform.audience)
    if privacy not in platform.privacy_values:
        problem("privacy", f"must be one of {', '.join(platform.privacy_values)} on {platform.value}")
    allowed = fields.get("allowed_viewer_ids") or []
    if privacy == Privacy.CUSTOM and not allowed:
        problem("allowed_viewer_ids", "a custom story needs at least one allowed viewer")
    if privacy != Privacy.CUSTOM and allowed:
        problem("allowed_viewer_ids", "only a custom story lists allowed viewers")
    for name in ("allowed_viewer_ids", "hidden_from_ids"):
        ids = fields.get(name) or []
        if len(ids) > MAX_LISTED_USERS:
            problem(name, f"at most {MAX_LISTED_USERS} user ids")
        if not all(is_user_id(u) for u in ids):
            problem(name, "every entry must be a user id")
    if fields.get("allow_replies", DEFAULT_REPLY_POLICY) not in REPLY_POLICIES:
        problem("allow_replies", f"must be one of {', '.join(REPLY_POLICIES)}")
    if problems:
        raise InvalidInput("the story breaks the rules", details=problems)
    check_stickers(fields.get("stickers") or [])


def is_live(*, deleted: bool, expired: bool, expires_at: datetime, now: datetime) -> bool:
    """The one "is live" rule: until deleted, expired (``StoryExpired``) or past its time. The
    query side applies it to read-model documents too (``read_api.queries.is_live``)."""
    return not deleted and not expired and now < expires_at


class Story(Aggregate):
    owner_id: str
    fields: dict[str, Any]  # StoryCreated's fields, as the latest StoryEdited left them
    allowed_viewer_ids: frozenset[str]
    hidden_from_ids: frozenset[str]
    created_at: datetime
    expires_at: datetime
    deleted = False
    expired = False

    # -- commands -----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        story_id: UUID,
        owner_id: str,
        fields: dict[str, Any],
        platform: Platform,
        now: datetime,
        live: LiveStories | None = None,
        limit: int | None = None,
        reshared_from: dict[str, str] | None = None,
    ) -> Story:
        """``fields`` holds the create body's values (see the contract's story schema).

        With ``live`` (the author's live-stories ledger) and ``limit``, the story takes a live
        slot, or Conflict ``limit_reached`` when the author already has ``limit`` live stories.
        """
        check_story_fields(fields, platform)
        if owner_id in (fields.get("hidden_from_ids") or []):
            raise field_error("hidden_from_ids", "a story cannot be hidden from its owner")
        hours = fields.get("expires_in_hours", DEFAULT_EXPIRY_HOURS)
        if live is not None and limit is not None:
            live.admit(str(story_id), now + timedelta(hours=hours), limit, now)
        story = cls(story_id)
        story._record(
            StoryCreated,
            now,
            story_id=str(story_id),
            user_id=owner_id,
            story_type=str(StoryType(fields["story_type"])),  # events hold plain strings
            media_id=fields.get("media_id"),
            media_url=fields.get("media_url"),
            thumbnail_url=fields.get("thumbnail_url"),
            text_content=fields.get("text_content"),
            background_color=fields.get("background_color"),
            background_gradient=fields.get("background_gradient"),
            duration=float(fields.get("duration", DEFAULT_DURATION)),
            stickers=list(fields.get("stickers") or []),
            privacy=str(Privacy(fields.get("privacy", platform.audience))),
            allowed_viewer_ids=sorted(set(fields.get("allowed_viewer_ids") or [])),
            hidden_from_ids=sorted(set(fields.get("hidden_from_ids") or [])),
            allow_replies=str(ReplyPolicy(fields.get("allow_replies", DEFAULT_REPLY_POLICY))),
            expires_at=(now + timedelta(hours=hours)).isoformat(),
            allow_sharing=bool(fields.get("allow_sharing", True)),
            reshared_from=reshared_from,
        )
        return story

    @classmethod
    def reshare(
        cls,
        story_id: UUID,
        original: Story,
        sharer_id: str,
        relationship: Relationship,
        options: dict[str, Any],
        platform: Platform,
        now: datetime,
        live: LiveStories | None = None,
        limit: int | None = None,
    ) -> Story:
        """A new story of ``sharer_id`` showing ``original``'s content (not its stickers: their
        answers belong to the original). ``options``: the sharer's own audience and expiry
        (``RESHARE_OPTIONS``), plus the original's hidden list. It names the original in
        ``reshared_from`` for good: deleting or expiring the original leaves it standing."""
        original.check_can_share(sharer_id, relationship, now)
        content = {name: original.fields.get(name) for name in RESHARED_CONTENT}
        fields = {
            **{k: v for k, v in content.items() if v is not None},
            **{k: v for k, v in options.items() if k in RESHARE_OPTIONS},
        }
        # Whom the original is hidden from does not see it through a reshare either.
        fields["hidden_from_ids"] = sorted(set(fields.get("hidden_from_ids") or []) | original.hidden_from_ids)
        return cls.create(
            story_id,
            sharer_id,
            fields,
            platform,
            now,
            live,
            limit,
            reshared_from={"story_id": str(original.id), "user_id": original.owner_id},
        )

    def delete(self, actor_id: str, now: datetime, live: LiveStories | None = None) -> None:
        """With ``live`` (the owner's ledger), a live story frees its slot."""
        if self.deleted:
            raise NotFound("story not found")
        if actor_id != self.owner_id:
            raise Forbidden("only the owner can delete a story", code="not_owner")
        self._record(StoryDeleted, now, story_id=str(self.id), user_id=self.owner_id)
        if live is not None:
            live.release(str(self.id), now)

    def edit(
        self, actor_id: str, changes: dict[str, Any], answered: frozenset[int], platform: Platform, now: datetime
    ) -> bool:
        """Apply an owner's edit (``changes``: any of ``EDITABLE_FIELDS``, and ``stickers``: a list of
        ``{"sticker_index", x/y/width/height/rotation, <payload named after its type>}``); False when
        it changes nothing. ``answered``: the stickers someone has interacted with, whose payload
        is frozen (Conflict ``sticker_answered``). Others are refused as by ``check_owner``."""
        if self.deleted:
            raise NotFound("story not found")
        if actor_id != self.owner_id:
            raise Forbidden("only the owner can edit a story", code="not_owner")
        if self.reshared_from:  # its content is what the original's author wrote
            raise Forbidden("a reshare shows another's story: it cannot be edited", code="reshare_not_editable")
        if not self.is_live(now):
            raise Conflict("the story has expired", code="story_expired")
        content = {name: self.fields.get(name) for name in EDITABLE_FIELDS}
        stickers = [dict(s) for s in self.stickers]
        changed: list[str] = []
        for name in EDITABLE_FIELDS:
            if name in changes and changes[name] != content[name]:
                content[name] = changes[name]
                changed.append(name)
        for edit in changes.get("stickers") or []:
            i = edit["sticker_index"]
            if not 0 <= i < len(stickers):
                raise field_error("stickers.sticker_index", f"no sticker at index {i}", code="sticker_not_found")
            sticker, kind = stickers[i], stickers[i]["sticker_type"]
            others = [k for k in edit if k not in STICKER_GEOMETRY and k not in ("sticker_index", kind)]
            if others:
                raise field_error(
                    f"stickers.{i}",
                    f"sticker {i} is a {kind} sticker: only its geometry and its '{kind}' payload can change",
                )
            before = dict(sticker)
            sticker.update((k, v) for k, v in edit.items() if k != "sticker_index")
            if sticker.get(kind) != before.get(kind) and i in answered:
                raise Conflict(
                    f"sticker {i} has answers; its {kind} can no longer change",
                    code="sticker_answered",
                    details={"sticker_index": i},
                )
            if sticker != before:
                stickers[i] = sticker
                changed.append(f"stickers.{i}")
        if not changed:
            return False
        # The edited story must follow every rule a new one does (a text story keeps its text...).
        check_story_fields({**self.fields, **content, "stickers": stickers}, platform)
        self._record(
            StoryEdited,
            now,
            story_id=str(self.id),
            user_id=self.owner_id,
            **content,
            stickers=stickers,
            changed=changed,
        )
        return True

    def check_owner(self, actor_id: str, may_see: bool, what: str) -> None:
        """Owner-only commands: Forbidden ``not_owner`` to those who can see the story, NotFound to
        anyone else (its existence stays hidden)."""
        if actor_id != self.owner_id:
            if self.deleted or not may_see:
                raise NotFound("story not found")
            raise Forbidden(f"only the owner can {what} a story", code="not_owner")

    def check_can_share(self, actor_id: str, relationship: Relationship, now: datetime) -> None:
        """A reshare needs a public, live story whose owner allows sharing, that the actor can see."""
        self.check_can_engage(actor_id, relationship, now)
        if self.privacy != Privacy.PUBLIC:
            raise Forbidden("only a public story can be reshared", code="not_shareable")
        if not self.allow_sharing:
            raise Forbidden("the owner does not allow sharing this story", code="sharing_disabled")

    def expire(self, now: datetime) -> None:
        """Mark the story expired; exactly once, never before its time, never when deleted."""
        if self.deleted:
            raise Conflict("a deleted story does not expire", code="story_deleted")
        if self.expired:
            raise Conflict("the story has already expired", code="already_expired")
        if now < self.expires_at:
            raise Conflict("the story is not due yet", code="not_due")
        self._record(
            StoryExpired, now, story_id=str(self.id), user_id=self.owner_id, expired_at=self.expires_at.isoformat()
        )

    # -- rules --------------------------------------------------------------------------

    @property
    def erased(self) -> bool:
        """Its author's account was erased (their id reads None): it exists for no one."""
        return self.owner_id is None

    def is_live(self, now: datetime) -> bool:
        return is_live(deleted=self.deleted, expired=self.expired, expires_at=self.expires_at, now=now)

    def audience_allows(self, viewer_id: str, relationship: Relationship) -> bool:
        return audience_allows(
            owner_id=self.owner_id,
            privacy=self.fields["privacy"],  # as stored: an unknown value hides the story
            allowed_viewer_ids=self.allowed_viewer_ids,
            hidden_from_ids=self.hidden_from_ids,
            viewer_id=viewer_id,
            relationship=relationship,
        )

    def check_can_engage(self, actor_id: str, relationship: Relationship, now: datetime) -> None:
        """May ``actor_id`` view, reply to or interact with the story now?

        Others who may not see it get NotFound (its existence stays hidden); the owner gets
        Conflict ``story_expired`` once it is past its time.
        """
        if self.deleted:
            raise NotFound("story not found")
        if actor_id == self.owner_id:
            if not self.is_live(now):
                raise Conflict("the story has expired", code="story_expired")
            return
        if not self.is_live(now) or not self.audience_allows(actor_id, relationship):
            raise NotFound("story not found")

    def check_not_owner(self, actor_id: str, what: str) -> None:
        if actor_id == self.owner_id:
            raise Forbidden(f"the owner cannot {what} on their own story", code="own_story")

    # -- typed views of ``fields`` ----------------------------------------------------------

    @property
    def story_type(self) -> StoryType:
        return StoryType(self.fields["story_type"])

    @property
    def privacy(self) -> Privacy:
        return Privacy(self.fields["privacy"])

    @property
    def allow_replies(self) -> ReplyPolicy:
        return ReplyPolicy(self.fields["allow_replies"])

    @property
    def edited_at(self) -> str | None:
        """When it was last edited (ISO 8601, as the event's time); None if never."""
        edited: str | None = self.fields.get("edited_at")
        return edited

    @property
    def allow_sharing(self) -> bool:
        return bool(self.fields.get("allow_sharing", True))

    @property
    def reshared_from(self) -> dict[str, str] | None:
        """``{"story_id", "user_id"}`` of a reshare's original; None for an original."""
        reshared: dict[str, str] | None = self.fields.get("reshared_from")
        return reshared

    @property
    def stickers(self) -> list[dict[str, Any]]:
        stickers: list[dict[str, Any]] = self.fields["stickers"] or []
        return stickers  # [] also for a reshare whose original's author was erased (None)

    # -- evolution ----------------------------------------------------------------------

    def _apply_StoryCreated(self, event: StoryCreated) -> None:
        self.owner_id = event.user_id
        self.fields = event.data()
        self.allowed_viewer_ids = frozenset(event.allowed_viewer_ids)
        self.hidden_from_ids = frozenset(event.hidden_from_ids)
        self.created_at = event.occurred_at
        self.expires_at = datetime.fromisoformat(event.expires_at)

    def _apply_StoryEdited(self, event: StoryEdited) -> None:
        self.fields = {**self.fields, **event.data(), "edited_at": event.occurred_at.isoformat()}
        del self.fields["changed"]

    def _apply_StoryDeleted(self, event: StoryDeleted) -> None:
        self.deleted = True

    def _apply_StoryExpired(self, event: StoryExpired) -> None:
        self.expired = True
