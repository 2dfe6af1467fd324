"""Stickers: the interactive (and decorative) objects placed on a story."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Self
from uuid import UUID

from domain.aggregate import Aggregate, DomainEvent
from domain.errors import InvalidInput
from domain.ids import stream_id


class StickerType(StrEnum):
    """A sticker's ``sticker_type``, which also names its payload object."""

    POLL = "poll"
    QUIZ = "quiz"
    QUESTION = "question"
    COUNTDOWN = "countdown"
    SLIDER = "slider"
    MENTION = "mention"
    LOCATION = "location"
    MUSIC = "music"
    LINK = "link"


STICKER_TYPES: tuple[StickerType, ...] = tuple(StickerType)
# At most one of each of these per story: they collect answers.
INTERACTIVE_TYPES = frozenset(
    {StickerType.POLL, StickerType.QUIZ, StickerType.QUESTION, StickerType.COUNTDOWN, StickerType.SLIDER}
)
# Options to choose from.
CHOICE_TYPES = frozenset({StickerType.POLL, StickerType.QUIZ})
MAX_STICKERS = 10
MIN_OPTIONS, MAX_OPTIONS = 2, 4
TEXT_LIMIT = 200  # any short sticker text: questions, titles, labels
SLIDER_DEFAULT_RANGE = (0.0, 1.0)


def parse_timestamp(value: str) -> datetime:
    """An ISO 8601 instant; a value without a zone is taken as UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def check_stickers(stickers: list[dict[str, Any]]) -> None:
    """Raise InvalidInput (with one detail per problem) unless the list follows the rules."""
    problems: list[dict[str, str]] = []

    def problem(path: str, message: str) -> None:
        problems.append({"field": f"stickers.{path}", "message": message})

    if len(stickers) > MAX_STICKERS:
        problem("", f"at most {MAX_STICKERS} stickers")
    seen: set[StickerType] = set()
    for i, sticker in enumerate(stickers):
        given = sticker.get("sticker_type")
        if given not in STICKER_TYPES:
            problem(f"{i}.sticker_type", "unknown sticker type")
            continue
        kind = StickerType(given)
        if kind in INTERACTIVE_TYPES:
            if kind in seen:
                problem(f"{i}.sticker_type", f"at most one {kind} sticker per story")
            seen.add(kind)
        for name in ("x", "y", "width", "height"):
            if not 0 <= sticker.get(name, 0) <= 1:
                problem(f"{i}.{name}", "must be between 0 and 1")
        if not -180 <= sticker.get("rotation", 0) <= 180:
            problem(f"{i}.rotation", "must be between -180 and 180")
        payloads = [t for t in STICKER_TYPES if sticker.get(t) is not None]
        if payloads != [kind]:
            problem(f"{i}", f"needs exactly one payload object, named '{kind}'")
            continue
        for field, message in _payload_problems(kind, sticker[kind]):
            problem(f"{i}.{kind}.{field}" if field else f"{i}.{kind}", message)
    if problems:
        raise InvalidInput("stickers break the rules", details=problems)


def _payload_problems(kind: StickerType, p: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if kind in CHOICE_TYPES:
        options = p.get("options") or []
        if not MIN_OPTIONS <= len(options) <= MAX_OPTIONS:
            out.append(("options", f"needs {MIN_OPTIONS} to {MAX_OPTIONS} options"))
        if kind == StickerType.QUIZ and not 0 <= p.get("correct_answer_index", -1) < len(options):
            out.append(("correct_answer_index", "must point at one of the options"))
    elif kind == StickerType.SLIDER:
        low, high = p.get("min_value", SLIDER_DEFAULT_RANGE[0]), p.get("max_value", SLIDER_DEFAULT_RANGE[1])
        if not low < high:
            out.append(("max_value", "must be greater than min_value"))
    elif kind == StickerType.COUNTDOWN:
        try:
            parse_timestamp(p.get("end_time", ""))
        except (ValueError, AttributeError):
            out.append(("end_time", "must be an ISO 8601 date and time"))
    elif kind == StickerType.LOCATION:
        if not -90 <= p.get("lat", 0) <= 90:
            out.append(("lat", "must be between -90 and 90"))
        if not -180 <= p.get("lng", 0) <= 180:
            out.append(("lng", "must be between -180 and 180"))
    return out


# -- payloads ------------------------------------------------------------------------------
# Typed, read-only views of a sticker's payload object. Events and read models keep the payload
# as the plain dict the client sent (``{"sticker_type": "poll", "poll": {...}}``); these are
# read from it (``PollPayload.from_dict(...)`` and the rest) where the domain needs its values.
# Fields the stored dict lacks take the API's defaults, so reading never fails on a payload
# ``check_stickers`` accepted.


@dataclass(frozen=True, kw_only=True)
class StickerPayload:
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The payload from its stored form; keys it does not know are left out."""
        return cls(**cls._known(data))

    @classmethod
    def _known(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        names = {f.name for f in fields(cls)}
        return {k: v for k, v in data.items() if k in names}


@dataclass(frozen=True)
class StickerOption:
    text: str


@dataclass(frozen=True, kw_only=True)
class PollPayload(StickerPayload):
    question: str = ""
    options: tuple[StickerOption, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        values = cls._known(data)
        values["options"] = tuple(
            StickerOption(text=o.get("text", "") if isinstance(o, Mapping) else str(o))
            for o in data.get("options") or ()
        )
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class QuizPayload(PollPayload):
    correct_answer_index: int


@dataclass(frozen=True, kw_only=True)
class QuestionPayload(StickerPayload):
    text: str = ""


@dataclass(frozen=True, kw_only=True)
class CountdownPayload(StickerPayload):
    title: str = ""
    end_time: str  # ISO 8601; UTC when it names no zone

    @property
    def ends_at(self) -> datetime:
        return parse_timestamp(self.end_time)


@dataclass(frozen=True, kw_only=True)
class SliderPayload(StickerPayload):
    question: str = ""
    emoji: str = "😍"
    min_value: float = SLIDER_DEFAULT_RANGE[0]
    max_value: float = SLIDER_DEFAULT_RANGE[1]


@dataclass(frozen=True, kw_only=True)
class MentionPayload(StickerPayload):
    user_id: str = ""


@dataclass(frozen=True, kw_only=True)
class LocationPayload(StickerPayload):
    name: str = ""
    lat: float = 0.0
    lng: float = 0.0


@dataclass(frozen=True, kw_only=True)
class MusicPayload(StickerPayload):
    title: str = ""
    artist: str = ""
    track_id: str = ""


@dataclass(frozen=True, kw_only=True)
class LinkPayload(StickerPayload):
    url: str = ""
    label: str | None = None


PAYLOAD_TYPES: dict[StickerType, type[StickerPayload]] = {
    StickerType.POLL: PollPayload,
    StickerType.QUIZ: QuizPayload,
    StickerType.QUESTION: QuestionPayload,
    StickerType.COUNTDOWN: CountdownPayload,
    StickerType.SLIDER: SliderPayload,
    StickerType.MENTION: MentionPayload,
    StickerType.LOCATION: LocationPayload,
    StickerType.MUSIC: MusicPayload,
    StickerType.LINK: LinkPayload,
}


def interactive_sticker(stickers: list[dict[str, Any]], index: int, kind: str | None = None) -> dict[str, Any]:
    """The sticker at ``index``; InvalidInput when absent or (given ``kind``) of another type."""
    if not 0 <= index < len(stickers):
        raise InvalidInput(
            "no sticker at that index",
            code="sticker_not_found",
            details=[{"field": "sticker_index", "message": "no sticker at that index"}],
        )
    sticker = stickers[index]
    if kind is not None and sticker["sticker_type"] != kind:
        raise InvalidInput(f"sticker {index} is a {sticker['sticker_type']} sticker, not a {kind}")
    return sticker


@dataclass(frozen=True, kw_only=True)
class AnsweredStickersRecorded(DomainEvent):
    """Private: the stickers of a story someone has interacted with, after a change."""

    story_id: str
    answered: list[int]
    revision: int  # bumped by an edit of the stickers, so it collides with a concurrent first answer


class AnsweredStickers(Aggregate):
    """Which of a story's stickers have answers, whose payload an edit may then no longer change.

    A private record (not in ``domain.catalogue``), read by its latest record only; a first answer
    to a sticker writes one, and so does an edit of the stickers: the two collide on the record's
    version, so an answer never lands on a payload that an edit changed under it."""

    answered: frozenset[int] = frozenset()
    revision = 0

    @staticmethod
    def stream_for(story_id: UUID) -> UUID:
        return stream_id("answered-stickers", story_id)

    @classmethod
    def open(cls, current: AnsweredStickers | None, story_id: UUID) -> AnsweredStickers:
        ledger = current or cls(cls.stream_for(story_id))
        ledger.story_id = str(story_id)
        return ledger

    def note_answer(self, sticker_index: int, now: datetime) -> None:
        if sticker_index not in self.answered:
            self._write(self.answered | {sticker_index}, self.revision, now)

    def note_edit(self, now: datetime) -> None:
        self._write(self.answered, self.revision + 1, now)

    def _write(self, answered: frozenset[int], revision: int, now: datetime) -> None:
        self._record(
            AnsweredStickersRecorded, now, story_id=self.story_id, answered=sorted(answered), revision=revision
        )

    def _apply_AnsweredStickersRecorded(self, event: AnsweredStickersRecorded) -> None:
        self.story_id, self.answered, self.revision = event.story_id, frozenset(event.answered), event.revision
