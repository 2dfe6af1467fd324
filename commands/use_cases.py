"""The application's use cases: one frozen dataclass per command (who asks what) and the results
they return (what happened, as plain values).

``StoriesApplication.step(command)`` finds a command's handler in one typed table; the command
API builds commands from requests and turns results into answers (``write_api/app.py``), and
the expirer and the tools build them directly. Nothing here knows HTTP.

A command's fields come in the order its route supplies them: the acting user, the path's ids,
then the validated body (``commands/models.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar
from uuid import UUID

from commands import models

# -- commands -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateStory:
    actor: str
    body: models.CreateStory


@dataclass(frozen=True)
class ViewStory:
    actor: str
    story_id: str


@dataclass(frozen=True)
class ReplyToStory:
    actor: str
    story_id: str
    body: models.ReplyToStory


@dataclass(frozen=True)
class Interact:
    actor: str
    story_id: str
    body: models.Interact


@dataclass(frozen=True)
class Navigate:
    actor: str
    story_id: str
    body: models.Navigate


@dataclass(frozen=True)
class ShareStory:
    actor: str
    story_id: str
    body: models.ShareStory | None = None


@dataclass(frozen=True)
class EditStory:
    actor: str
    story_id: str
    body: models.EditStory


@dataclass(frozen=True)
class DeleteStory:
    actor: str
    story_id: str


@dataclass(frozen=True)
class ExpireStory:
    """The expirer's (``projections/expiry.py``): no acting user."""

    story_id: UUID


@dataclass(frozen=True)
class CreateHighlight:
    actor: str
    body: models.CreateHighlight


@dataclass(frozen=True)
class UpdateHighlight:
    actor: str
    highlight_id: str
    body: models.UpdateHighlight


@dataclass(frozen=True)
class AddHighlightStories:
    actor: str
    highlight_id: str
    body: models.HighlightStories


@dataclass(frozen=True)
class RemoveHighlightStories:
    actor: str
    highlight_id: str
    body: models.HighlightStories


@dataclass(frozen=True)
class DeleteHighlight:
    actor: str
    highlight_id: str


@dataclass(frozen=True)
class ReorderHighlights:
    actor: str
    body: models.ReorderHighlights


@dataclass(frozen=True)
class AddCloseFriend:
    actor: str
    user_id: str


@dataclass(frozen=True)
class RemoveCloseFriend:
    actor: str
    user_id: str


@dataclass(frozen=True)
class Follow:
    actor: str
    user_id: str


@dataclass(frozen=True)
class Unfollow:
    actor: str
    user_id: str


@dataclass(frozen=True)
class Mute:
    actor: str
    user_id: str


@dataclass(frozen=True)
class Unmute:
    actor: str
    user_id: str


Command = (
    CreateStory
    | ViewStory
    | ReplyToStory
    | Interact
    | Navigate
    | ShareStory
    | EditStory
    | DeleteStory
    | ExpireStory
    | CreateHighlight
    | UpdateHighlight
    | AddHighlightStories
    | RemoveHighlightStories
    | DeleteHighlight
    | ReorderHighlights
    | AddCloseFriend
    | RemoveCloseFriend
    | Follow
    | Unfollow
    | Mute
    | Unmute
)

# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """What a command did. ``OPTIONAL`` names fields that are left out of the answer when
    ``None`` (they apply to some stickers only)."""

    OPTIONAL: ClassVar[frozenset[str]] = frozenset()


@dataclass(frozen=True)
class Done(Result):
    """Removed, stopped or deleted: nothing more to say."""


@dataclass(frozen=True)
class StoryPosted(Result):
    story_id: UUID
    expires_at: str


@dataclass(frozen=True)
class StoryReshared(Result):
    story_id: UUID
    expires_at: str
    reshared_from: dict[str, str]  # {"story_id", "user_id"} of the original


@dataclass(frozen=True)
class Counted(Result):
    """A view or a navigation: ``counted`` is false when it changed nothing (a repeat, the owner)."""

    story_id: UUID
    counted: bool


@dataclass(frozen=True)
class Replied(Result):
    story_id: UUID
    reply_number: int


@dataclass(frozen=True)
class StickerAnswered(Result):
    OPTIONAL = frozenset({"correct", "correct_answer_index", "following"})

    story_id: UUID
    sticker_index: int
    sticker_type: str
    correct: bool | None = None  # a quiz
    correct_answer_index: int | None = None  # a quiz
    following: bool | None = None  # a countdown


@dataclass(frozen=True)
class StoryChanged(Result):
    story_id: UUID
    edited: bool
    edited_at: str | None


@dataclass(frozen=True)
class StoryExpiredNow(Result):
    story_id: UUID


@dataclass(frozen=True)
class HighlightSaved(Result):
    highlight_id: UUID


@dataclass(frozen=True)
class HighlightStories(Result):
    highlight_id: UUID
    story_ids: list[str]


@dataclass(frozen=True)
class HighlightsOrdered(Result):
    highlight_ids: list[str]


@dataclass(frozen=True)
class CloseFriendAdded(Result):
    user_id: str
    close_friend: bool = True


@dataclass(frozen=True)
class Following(Result):
    user_id: str
    following: bool = True


@dataclass(frozen=True)
class Muted(Result):
    user_id: str
    muted: bool = True
