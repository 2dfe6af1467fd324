"""What viewers do with a story: views, replies and sticker interactions.

Each (story, user, interaction) is its own small stream with a derived id (``stream_for``), so
a command loads only that user's history with that story: its cost does not grow with the
story's audience, and "once per user" rules are checked against a stream of one or two events.
Every method takes the Story (for its rules) and the caller's relationship to the owner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Self
from uuid import UUID

from domain.aggregate import SELF, Aggregate, DomainEvent
from domain.errors import Conflict, Forbidden, InvalidInput, field_error
from domain.ids import stream_id
from domain.platform import Platform
from domain.stickers import (
    CountdownPayload,
    PollPayload,
    QuizPayload,
    SliderPayload,
    StickerOption,
    StickerType,
    interactive_sticker,
)
from domain.stories import ReplyPolicy, Story
from domain.visibility import Relationship

REPLY_TEXT_LIMIT = 1000
ANSWER_TEXT_LIMIT = 500


@dataclass(frozen=True, kw_only=True)
class StoryViewed(DomainEvent):
    PERSONAL: ClassVar[dict[str, str]] = {"owner_id": SELF, "viewer_id": SELF}
    story_id: str
    owner_id: str
    viewer_id: str
    view_number: int  # 1 for this viewer's first view: unique viewers count those
    life_hour: int | None = None  # since version 2: the hour of the story's life it fell in (0 = the first)

    class_version: ClassVar[int] = 2

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Version 1 did not say when in the story's life the view came: not in views_timeline."""
        state.setdefault("life_hour", None)


class NavigationAction(StrEnum):
    """How a viewer left a story (Instagram's story ``navigation`` metric)."""

    TAP_FORWARD = "tap_forward"
    TAP_BACK = "tap_back"
    EXIT = "exit"
    SWIPE_FORWARD = "swipe_forward"


class CountdownAction(StrEnum):
    """What a viewer asks of a countdown sticker: to be reminded when it ends, or no longer."""

    FOLLOW = "follow"
    UNFOLLOW = "unfollow"


class LinkAction(StrEnum):
    """What a viewer does with a link sticker."""

    TAP = "tap"


COUNTDOWN_ACTIONS: tuple[CountdownAction, ...] = tuple(CountdownAction)


# A viewer who left this way did not finish the story (completion_rate leaves them out).
ABANDONING_ACTIONS = frozenset({NavigationAction.EXIT, NavigationAction.SWIPE_FORWARD})


@dataclass(frozen=True, kw_only=True)
class StoryNavigated(DomainEvent):
    """How a viewer left the story. Each is its own stream: recording one reads nothing of the
    viewer's earlier ones; the read models keep the last per viewer and story."""

    PERSONAL: ClassVar[dict[str, str]] = {"owner_id": SELF, "viewer_id": SELF}
    story_id: str
    owner_id: str
    viewer_id: str
    action: str  # a NavigationAction


@dataclass(frozen=True, kw_only=True)
class StoryShared(DomainEvent):
    """``user_id`` reshared ``story_id`` (of ``owner_id``) as their own story ``reshare_id``."""

    PERSONAL: ClassVar[dict[str, str]] = {"owner_id": SELF, "user_id": SELF}
    story_id: str
    owner_id: str
    user_id: str
    reshare_id: str


@dataclass(frozen=True, kw_only=True)
class StoryReplied(DomainEvent):
    PERSONAL: ClassVar[dict[str, str]] = {"owner_id": SELF, "user_id": SELF, "text": "user_id"}
    story_id: str
    owner_id: str
    user_id: str
    reply_number: int
    text: str


@dataclass(frozen=True, kw_only=True)
class StickerEvent(DomainEvent):
    PERSONAL: ClassVar[dict[str, str]] = {"owner_id": SELF, "user_id": SELF}
    story_id: str
    owner_id: str
    user_id: str
    sticker_index: int


@dataclass(frozen=True, kw_only=True)
class PollVoted(StickerEvent):
    option_index: int


@dataclass(frozen=True, kw_only=True)
class QuizAnswered(StickerEvent):
    option_index: int
    correct: bool
    correct_answer_index: int


@dataclass(frozen=True, kw_only=True)
class QuestionAnswered(StickerEvent):
    PERSONAL: ClassVar[dict[str, str]] = {"owner_id": SELF, "user_id": SELF, "text": "user_id"}
    answer_number: int
    text: str


@dataclass(frozen=True, kw_only=True)
class CountdownFollowed(StickerEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class CountdownUnfollowed(StickerEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class SliderAnswered(StickerEvent):
    value: float


@dataclass(frozen=True, kw_only=True)
class LinkTapped(StickerEvent):
    tap_number: int


class Engagement(Aggregate):
    """Base for the per-(story, user) streams: ``open`` returns the stream to append to."""

    KIND = ""
    count = 0  # events in the stream so far

    @classmethod
    def stream_for(cls, story_id: UUID, user_id: str, sticker_index: int | None = None) -> UUID:
        if sticker_index is None:
            return stream_id(cls.KIND, story_id, user_id)
        return stream_id(cls.KIND, story_id, sticker_index, user_id)

    @classmethod
    def open(cls, current: Self | None, story: Story, user_id: str, sticker_index: int | None = None) -> Self:
        return current if current is not None else cls(cls.stream_for(story.id, user_id, sticker_index))

    def _event_fields(self, story: Story, user_id: str, sticker_index: int) -> dict[str, Any]:
        return {
            "story_id": str(story.id),
            "owner_id": story.owner_id,
            "user_id": user_id,
            "sticker_index": sticker_index,
        }


class StoryView(Engagement):
    KIND = "view"

    @classmethod
    def view(
        cls, current: StoryView | None, story: Story, viewer_id: str, relationship: Relationship, now: datetime
    ) -> StoryView | None:
        """Record a view; repeat views count too. The owner's own views are not recorded (None)."""
        story.check_can_engage(viewer_id, relationship, now)
        if viewer_id == story.owner_id:
            return None
        view = cls.open(current, story, viewer_id)
        view._record(
            StoryViewed,
            now,
            story_id=str(story.id),
            owner_id=story.owner_id,
            viewer_id=viewer_id,
            view_number=view.count + 1,
            # another process's clock may be a little behind the one that created the story
            life_hour=max(int((now - story.created_at).total_seconds() // 3600), 0),
        )
        return view

    def _apply_StoryViewed(self, event: StoryViewed) -> None:
        self.count += 1


class StoryNavigation(Aggregate):
    """One navigation, in a fresh stream (``stream`` is new for each): no lookup of earlier ones."""

    @classmethod
    def navigate(
        cls,
        stream: UUID,
        story: Story,
        viewer_id: str,
        action: NavigationAction,
        relationship: Relationship,
        now: datetime,
    ) -> StoryNavigation | None:
        """Like a view: only for those who may see the story; the owner's own are not recorded (None)."""
        story.check_can_engage(viewer_id, relationship, now)
        if viewer_id == story.owner_id:
            return None
        navigation = cls(stream)
        navigation._record(
            StoryNavigated,
            now,
            story_id=str(story.id),
            owner_id=story.owner_id,
            viewer_id=viewer_id,
            action=str(action),
        )
        return navigation

    def _apply_StoryNavigated(self, event: StoryNavigated) -> None:
        pass


class StoryShare(Aggregate):
    """The fact of one reshare, in a stream derived from the new story: the original's insights
    count it, in the original's partition (the event names the original as its ``story_id``)."""

    @staticmethod
    def stream_for(reshare_id: UUID) -> UUID:
        return stream_id("share", reshare_id)

    @classmethod
    def record(cls, original: Story, reshare: Story, now: datetime) -> StoryShare:
        share = cls(cls.stream_for(reshare.id))
        share._record(
            StoryShared,
            now,
            story_id=str(original.id),
            owner_id=original.owner_id,
            user_id=reshare.owner_id,
            reshare_id=str(reshare.id),
        )
        return share

    def _apply_StoryShared(self, event: StoryShared) -> None:
        pass


class StoryReplies(Engagement):
    KIND = "reply"

    @classmethod
    def reply(
        cls,
        current: StoryReplies | None,
        story: Story,
        user_id: str,
        text: str,
        relationship: Relationship,
        platform: Platform,
        now: datetime,
    ) -> StoryReplies:
        story.check_can_engage(user_id, relationship, now)
        story.check_not_owner(user_id, "reply")
        policy = story.allow_replies
        if policy == ReplyPolicy.OFF:
            raise Forbidden("the owner turned replies off", code="replies_disabled")
        if policy == ReplyPolicy.AUDIENCE and not relationship.in_audience(platform.audience):
            raise Forbidden(f"only the owner's {platform.audience} can reply", code="replies_restricted")
        text = text.strip()
        if not 1 <= len(text) <= REPLY_TEXT_LIMIT:
            raise field_error("text", f"must be 1 to {REPLY_TEXT_LIMIT} characters")
        replies = cls.open(current, story, user_id)
        replies._record(
            StoryReplied,
            now,
            story_id=str(story.id),
            owner_id=story.owner_id,
            user_id=user_id,
            reply_number=replies.count + 1,
            text=text,
        )
        return replies

    def _apply_StoryReplied(self, event: StoryReplied) -> None:
        self.count += 1


class StickerResponse(Engagement):
    """One user's response stream to one sticker. Subclasses name the sticker type."""

    STICKER_TYPE: ClassVar[StickerType]  # each subclass names its own

    @classmethod
    def respond(
        cls,
        current: Self | None,
        story: Story,
        sticker_index: int,
        user_id: str,
        body: dict[str, Any],
        relationship: Relationship,
        now: datetime,
    ) -> Self | None:
        """Check the shared rules, then let the subclass record; None when nothing changed."""
        story.check_can_engage(user_id, relationship, now)
        return cls._record_response(current, story, sticker_index, user_id, body, now)

    @classmethod
    def _record_response(
        cls,
        current: Self | None,
        story: Story,
        sticker_index: int,
        user_id: str,
        body: dict[str, Any],
        now: datetime,
    ) -> Self | None:
        """``respond`` once the user may engage with the story."""
        sticker = interactive_sticker(story.stickers, sticker_index, cls.STICKER_TYPE)
        story.check_not_owner(user_id, "interact with stickers")
        response = cls.open(current, story, user_id, sticker_index)
        changed = response._respond(sticker[cls.STICKER_TYPE], story, sticker_index, user_id, body, now)
        return response if changed else None

    def _respond(
        self,
        payload: dict[str, Any],
        story: Story,
        sticker_index: int,
        user_id: str,
        body: dict[str, Any],
        now: datetime,
    ) -> bool:
        """``payload``: the sticker's payload as stored; a subclass reads its typed form."""
        raise NotImplementedError

    def _option(self, options: tuple[StickerOption, ...], body: dict[str, Any]) -> int:
        option = body.get("option_index")
        if not isinstance(option, int) or isinstance(option, bool) or not 0 <= option < len(options):
            raise field_error("option_index", f"must be 0 to {len(options) - 1}")
        return option

    def _count(self, event: DomainEvent) -> None:
        self.count += 1


class PollBallot(StickerResponse):
    KIND = STICKER_TYPE = StickerType.POLL

    def _respond(
        self,
        payload: dict[str, Any],
        story: Story,
        sticker_index: int,
        user_id: str,
        body: dict[str, Any],
        now: datetime,
    ) -> bool:
        option = self._option(PollPayload.from_dict(payload).options, body)
        if self.count:
            raise Conflict("you already voted in this poll", code="already_voted")
        self._record(PollVoted, now, **self._event_fields(story, user_id, sticker_index), option_index=option)
        return True

    _apply_PollVoted = StickerResponse._count


class QuizAttempt(StickerResponse):
    KIND = STICKER_TYPE = StickerType.QUIZ
    result: QuizAnswered

    def _respond(
        self,
        payload: dict[str, Any],
        story: Story,
        sticker_index: int,
        user_id: str,
        body: dict[str, Any],
        now: datetime,
    ) -> bool:
        quiz = QuizPayload.from_dict(payload)
        option = self._option(quiz.options, body)
        if self.count:
            raise Conflict("you already answered this quiz", code="already_answered")
        correct_index = quiz.correct_answer_index
        self._record(
            QuizAnswered,
            now,
            **self._event_fields(story, user_id, sticker_index),
            option_index=option,
            correct=option == correct_index,
            correct_answer_index=correct_index,
        )
        return True

    def _apply_QuizAnswered(self, event: QuizAnswered) -> None:
        self.count += 1
        self.result = event


class QuestionAnswers(StickerResponse):
    KIND = STICKER_TYPE = StickerType.QUESTION

    def _respond(
        self,
        payload: dict[str, Any],
        story: Story,
        sticker_index: int,
        user_id: str,
        body: dict[str, Any],
        now: datetime,
    ) -> bool:
        text = body.get("text")
        if not isinstance(text, str) or not 1 <= len(text.strip()) <= ANSWER_TEXT_LIMIT:
            raise field_error("text", f"must be 1 to {ANSWER_TEXT_LIMIT} characters")
        self._record(
            QuestionAnswered,
            now,
            **self._event_fields(story, user_id, sticker_index),
            answer_number=self.count + 1,
            text=text.strip(),
        )
        return True

    _apply_QuestionAnswered = StickerResponse._count


class CountdownReminder(StickerResponse):
    KIND = STICKER_TYPE = StickerType.COUNTDOWN
    following = False

    def _respond(
        self,
        payload: dict[str, Any],
        story: Story,
        sticker_index: int,
        user_id: str,
        body: dict[str, Any],
        now: datetime,
    ) -> bool:
        action = body.get("action")
        if action not in COUNTDOWN_ACTIONS:
            raise field_error("action", "must be follow or unfollow")
        if action == CountdownAction.FOLLOW:
            if CountdownPayload.from_dict(payload).ends_at <= now:
                raise Conflict("the countdown is over", code="countdown_over")
            if self.following:
                return False  # following is a state: asking twice changes nothing
            self._record(CountdownFollowed, now, **self._event_fields(story, user_id, sticker_index))
        else:
            if not self.following:
                return False
            self._record(CountdownUnfollowed, now, **self._event_fields(story, user_id, sticker_index))
        return True

    def _apply_CountdownFollowed(self, event: CountdownFollowed) -> None:
        self.following = True

    def _apply_CountdownUnfollowed(self, event: CountdownUnfollowed) -> None:
        self.following = False


class SliderResponse(StickerResponse):
    KIND = STICKER_TYPE = StickerType.SLIDER

    def _respond(
        self,
        payload: dict[str, Any],
        story: Story,
        sticker_index: int,
        user_id: str,
        body: dict[str, Any],
        now: datetime,
    ) -> bool:
        slider = SliderPayload.from_dict(payload)
        low, high = slider.min_value, slider.max_value
        value = body.get("value")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
            raise field_error("value", f"must be between {low} and {high}")
        if self.count:
            raise Conflict("you already answered this slider", code="already_answered")
        self._record(SliderAnswered, now, **self._event_fields(story, user_id, sticker_index), value=float(value))
        return True

    _apply_SliderAnswered = StickerResponse._count


class LinkTaps(StickerResponse):
    KIND = STICKER_TYPE = StickerType.LINK

    def _respond(
        self,
        payload: dict[str, Any],
        story: Story,
        sticker_index: int,
        user_id: str,
        body: dict[str, Any],
        now: datetime,
    ) -> bool:
        if body.get("action") != LinkAction.TAP:
            raise field_error("action", "must be tap")
        self._record(LinkTapped, now, **self._event_fields(story, user_id, sticker_index), tap_number=self.count + 1)
        return True

    _apply_LinkTapped = StickerResponse._count


RESPONSE_TYPES: dict[str, type[StickerResponse]] = {
    cls.STICKER_TYPE: cls
    for cls in (PollBallot, QuizAttempt, QuestionAnswers, CountdownReminder, SliderResponse, LinkTaps)
}


def response_type_for(story: Story, sticker_index: int) -> type[StickerResponse]:
    """Which response stream a sticker collects; InvalidInput for decorative stickers."""
    sticker = interactive_sticker(story.stickers, sticker_index)
    try:
        return RESPONSE_TYPES[sticker["sticker_type"]]
    except KeyError:
        raise InvalidInput(
            f"a {sticker['sticker_type']} sticker takes no interactions", code="not_interactive"
        ) from None


ResponseLoader = Callable[[type[StickerResponse], UUID], StickerResponse | None]


def respond_to_sticker(
    story: Story,
    sticker_index: int,
    user_id: str,
    body: dict[str, Any],
    relationship: Relationship,
    now: datetime,
    load: ResponseLoader,
) -> tuple[type[StickerResponse], StickerResponse | None, StickerResponse | None]:
    """A user's answer to a sticker, with the engagement rule checked once and first, so that
    whoever may not engage learns nothing of the stickers; then which stream the sticker collects
    (``load`` reads the user's stream so far) and that stream's rules. (The stream's type, the
    stream so far, the stream with the answer recorded or None when nothing changed.)"""
    story.check_can_engage(user_id, relationship, now)
    kind = response_type_for(story, sticker_index)
    current = load(kind, kind.stream_for(story.id, user_id, sticker_index))
    return kind, current, kind._record_response(current, story, sticker_index, user_id, body, now)
