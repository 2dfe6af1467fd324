"""Request bodies of the command API, as pydantic models.

They check shapes and single-field bounds, and document the API (OpenAPI is generated from them).
Rules across fields and against stored state live in ``domain/``; the numbers come from there.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from domain import engagement, highlights, stories
from domain import stickers as st
from domain.ids import USER_ID_PATTERN, canonical_id
from domain.visibility import Privacy

W = TypeVar("W", bound=StrEnum)
# One of the domain's words (its enums), given as its JSON string: the bodies are checked in strict
# mode, which would otherwise take only the enum object itself.
Word = Annotated[W, Field(strict=False)]
UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
Colour = Annotated[str, StringConstraints(pattern=stories.COLOUR_PATTERN)]
Unit = Annotated[float, Field(ge=0, le=1)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=st.TEXT_LIMIT)]
Url = Annotated[AnyHttpUrl, Field(max_length=2048)]
# A request's cap, not the limit: stories per highlight and highlights per user are settings the
# domain enforces (409 limit_reached); this only bounds one body.
MAX_IDS_PER_REQUEST = 1000


def _canonical(value: str) -> str:
    """Any spelling of a UUID becomes its canonical form (lower case, hyphenated); anything
    else is kept as given, and the domain rejects it as naming no story or highlight."""
    return canonical_id(value) or value


# A story or highlight id in a body, canonicalised at the edge: two spellings of one UUID are one id.
Id = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_canonical)]
IdList = Annotated[list[Id], Field(max_length=MAX_IDS_PER_REQUEST)]


class Strict(BaseModel):
    # strict: JSON true is not the number 1, "5" is not 5.
    model_config = ConfigDict(extra="forbid", strict=True)


class Option(Strict):
    text: ShortText


class Poll(Strict):
    question: ShortText
    options: list[Option] = Field(min_length=st.MIN_OPTIONS, max_length=st.MAX_OPTIONS)


class Quiz(Poll):
    correct_answer_index: int = Field(ge=0, lt=st.MAX_OPTIONS)


class Question(Strict):
    text: ShortText


class Countdown(Strict):
    title: ShortText
    end_time: str = Field(description="ISO 8601 date and time; UTC when no zone is given", max_length=64)


class Slider(Strict):
    question: ShortText
    emoji: str = Field(default="😍", min_length=1, max_length=16)
    min_value: float = Field(default=0.0, allow_inf_nan=False)
    max_value: float = Field(default=1.0, allow_inf_nan=False)


class Mention(Strict):
    user_id: UserId


class Location(Strict):
    name: ShortText
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)


class Music(Strict):
    title: ShortText
    artist: ShortText
    track_id: ShortText


class Link(Strict):
    url: Url
    label: str | None = Field(default=None, max_length=st.TEXT_LIMIT)


class StickerPayloads(Strict):
    """A sticker's payload: exactly one of these, named after its type (the domain checks which)."""

    poll: Poll | None = None
    quiz: Quiz | None = None
    question: Question | None = None
    countdown: Countdown | None = None
    slider: Slider | None = None
    mention: Mention | None = None
    location: Location | None = None
    music: Music | None = None
    link: Link | None = None


class Sticker(StickerPayloads):
    sticker_type: Word[st.StickerType]
    x: Unit = 0.5
    y: Unit = 0.5
    width: Unit = 0.3
    height: Unit = 0.1
    rotation: float = Field(default=0.0, ge=-180, le=180)


class CreateStory(Strict):
    story_type: Word[stories.StoryType]
    media_id: str | None = Field(default=None, min_length=1, max_length=128)
    media_url: Url | None = None
    thumbnail_url: Url | None = None
    text_content: str | None = Field(default=None, max_length=stories.TEXT_CONTENT_LIMIT)
    background_color: Colour | None = None
    background_gradient: list[Colour] | None = Field(default=None, min_length=2, max_length=5)
    duration: float = Field(default=stories.DEFAULT_DURATION, ge=1, le=15)
    stickers: list[Sticker] = Field(default_factory=list, max_length=st.MAX_STICKERS)
    privacy: Word[Privacy] | None = Field(
        default=None, description="followers (vignette) or friends (entativa) when left out"
    )
    allowed_viewer_ids: list[UserId] = Field(default_factory=list, max_length=stories.MAX_LISTED_USERS)
    hidden_from_ids: list[UserId] = Field(default_factory=list, max_length=stories.MAX_LISTED_USERS)
    allow_replies: Word[stories.ReplyPolicy] = stories.ReplyPolicy.EVERYONE
    expires_in_hours: Literal[6, 12, 24, 48] = 24
    allow_sharing: bool = Field(default=True, description="may viewers reshare the story (public stories)")

    def fields(self) -> dict:
        """The values the domain's Story.create takes (URLs as strings; unset values left out)."""
        return self.model_dump(mode="json", exclude_none=True)


class ReplyToStory(Strict):
    text: str = Field(min_length=1, max_length=engagement.REPLY_TEXT_LIMIT)


class Interact(Strict):
    """One body for every sticker type; which fields matter depends on the sticker."""

    sticker_index: int = Field(ge=0, lt=st.MAX_STICKERS)
    option_index: int | None = Field(default=None, ge=0, lt=st.MAX_OPTIONS, description="poll, quiz")
    text: str | None = Field(
        default=None, min_length=1, max_length=engagement.ANSWER_TEXT_LIMIT, description="question"
    )
    action: Word[engagement.CountdownAction] | Word[engagement.LinkAction] | None = Field(
        default=None, description="countdown, link"
    )
    value: float | None = Field(default=None, allow_inf_nan=False, description="slider")


class Navigate(Strict):
    action: Word[engagement.NavigationAction] = Field(description="how the viewer left the story")


class StickerEdit(StickerPayloads):
    """One sticker's new geometry, and (while nobody has answered it) its payload, named after its type."""

    sticker_index: int = Field(ge=0, lt=st.MAX_STICKERS)
    x: Unit | None = None
    y: Unit | None = None
    width: Unit | None = None
    height: Unit | None = None
    rotation: float | None = Field(default=None, ge=-180, le=180)

    def change(self) -> dict:
        return self.model_dump(mode="json", exclude_none=True)


class EditStory(Strict):
    text_content: str | None = Field(default=None, max_length=stories.TEXT_CONTENT_LIMIT)
    background_color: Colour | None = Field(default=None, description="null removes it")
    background_gradient: list[Colour] | None = Field(
        default=None, min_length=2, max_length=5, description="null removes it"
    )
    stickers: list[StickerEdit] | None = Field(default=None, max_length=st.MAX_STICKERS)

    @model_validator(mode="after")
    def _check(self) -> EditStory:
        if not self.model_fields_set:
            raise ValueError("give at least one of text_content, background_color, background_gradient, stickers")
        if "stickers" in self.model_fields_set and self.stickers is None:
            raise ValueError("stickers cannot be null")
        indexes = [edit.sticker_index for edit in self.stickers or []]
        if len(indexes) != len(set(indexes)):
            raise ValueError("each sticker_index at most once")
        return self

    def changes(self) -> dict:
        """Only the fields the client sent (``null`` removes a text or background)."""
        changes = self.model_dump(mode="json", include=self.model_fields_set - {"stickers"})
        if self.stickers is not None:
            changes["stickers"] = [edit.change() for edit in self.stickers]
        return changes


class ShareStory(Strict):
    """A reshare's own settings; the content comes from the original."""

    privacy: Word[Privacy] | None = Field(
        default=None, description="followers (vignette) or friends (entativa) when left out"
    )
    allowed_viewer_ids: list[UserId] = Field(default_factory=list, max_length=stories.MAX_LISTED_USERS)
    hidden_from_ids: list[UserId] = Field(default_factory=list, max_length=stories.MAX_LISTED_USERS)
    allow_replies: Word[stories.ReplyPolicy] = stories.ReplyPolicy.EVERYONE
    expires_in_hours: Literal[6, 12, 24, 48] = 24
    allow_sharing: bool = True

    def options(self) -> dict:
        return self.model_dump(mode="json", exclude_none=True)


class Cover(Strict):
    """A highlight's cover; every field is optional."""

    story_id: Id | None = Field(default=None, description="one of the highlight's stories")
    media_url: Url | None = Field(default=None, description="an image (http or https URL)")
    emoji: str | None = Field(default=None, min_length=1, max_length=highlights.COVER_EMOJI_LIMIT)
    color: Annotated[str, StringConstraints(pattern=highlights.COVER_COLOUR_PATTERN)] | None = Field(
        default=None, description="#RRGGBB"
    )

    def stored(self) -> dict:
        return self.model_dump(mode="json", exclude_none=True)


class CreateHighlight(Strict):
    title: str = Field(min_length=1, max_length=highlights.TITLE_LIMIT)
    description: str | None = Field(default=None, max_length=highlights.DESCRIPTION_LIMIT)
    cover: Cover | None = Field(default=None, description="{story_id?, media_url?, emoji?, color?}")
    story_ids: IdList = Field(min_length=1)
    is_pinned: bool = False
    is_archived: bool = False


class UpdateHighlight(Strict):
    title: str | None = Field(default=None, min_length=1, max_length=highlights.TITLE_LIMIT)
    description: str | None = Field(default=None, max_length=highlights.DESCRIPTION_LIMIT)
    cover: Cover | None = Field(default=None, description="{story_id?, media_url?, emoji?, color?}; null removes it")
    is_pinned: bool | None = None
    is_archived: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> UpdateHighlight:
        if not self.model_fields_set:
            raise ValueError("give at least one of title, description, cover, is_pinned, is_archived")
        for name in ("title", "is_pinned", "is_archived"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

    def changes(self) -> dict:
        """Only the fields the client sent; ``cover: null`` removes the cover."""
        changes = self.model_dump(mode="json", include=self.model_fields_set)
        if self.cover is not None:
            changes["cover"] = self.cover.stored()
        return changes


class HighlightStories(Strict):
    story_ids: IdList = Field(min_length=1)


class ReorderHighlights(Strict):
    highlight_ids: IdList
