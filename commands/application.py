"""The application service: each command (``commands/use_cases.py``) loads the few aggregates it
needs, calls one domain method, hands the changes to the group committer, which appends them
atomically, and returns what happened as a result value; ``HANDLERS`` says which handler runs
which command. Statuses and bodies are the entrypoint's business.

The acting user always comes from the verified token (``actor``), never from a body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

from commands import models
from commands import use_cases as uc
from commands.erasure import erase_account
from commands.event_store import EventStore
from commands.group_commit import AfterCommit, Batch, GroupCommitter
from commands.idempotency import IdempotencyRecord
from domain.engagement import (
    CountdownReminder,
    NavigationAction,
    QuizAttempt,
    StoryNavigation,
    StoryReplies,
    StoryShare,
    StoryView,
    respond_to_sticker,
)
from domain.errors import NotFound
from domain.highlights import Highlight, HighlightReel
from domain.ids import canonical_id
from domain.limits import CLOSE_FRIENDS, FOLLOWS, MUTED, Limits, LiveStories, Tally
from domain.platform import Platform
from domain.social import CloseFriendship, Follow, Mute
from domain.stickers import AnsweredStickers
from domain.stories import Story
from domain.visibility import Privacy, Relationship

Edge = TypeVar("Edge", Follow, Mute)


@dataclass(frozen=True)
class Answer:
    """A result as its client got it, recorded for the retries of an idempotent request (the
    entrypoint makes it: ``Idempotency.answer``)."""

    status: int
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class Idempotency:
    """A request sent with an ``Idempotency-Key``: its first answer is recorded in the log with
    the command's events, and given again, with the same position, to every retry."""

    actor: str
    key: str
    fingerprint: str
    answer: Callable[[uc.Result], Answer]


Step = Callable[[Batch, datetime], uc.Result]  # a command's work in one group-commit batch


def utc_now() -> datetime:
    # Milliseconds: what MongoDB keeps, so every read model shows the same instant.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def parse_id(value: str, what: str) -> UUID:
    """Path ids, in any spelling of a UUID (``canonical_id``); anything else names nothing
    (404, not 422)."""
    canonical = canonical_id(value)
    if canonical is None:
        raise NotFound(f"{what} not found")
    return UUID(canonical)


class StoriesApplication:
    def __init__(
        self,
        store: EventStore,
        committer: GroupCommitter,
        platform: Platform,
        clock: Callable[[], datetime] = utc_now,
        limits: Limits = Limits(),
        pseudonym_key: bytes = b"",
    ) -> None:
        self.store = store
        self.committer = committer
        self.platform = platform
        self.clock = clock
        self.limits = limits
        self.pseudonym_key = pseudonym_key

    # -- running commands -----------------------------------------------------------------

    def step(self, command: uc.Command) -> Step:
        """What ``command`` does in a batch, from the handler table (``HANDLERS``)."""
        return HANDLERS[type(command)](self, command)

    async def execute(
        self, command: uc.Command, idempotency: Idempotency | None = None
    ) -> tuple[uc.Result | Answer, int]:
        """Run ``command`` through the group committer: (its result, or the recorded answer of
        an idempotent retry; its log position)."""
        step = self.step(command)
        if idempotency is None:
            outcome = await self.committer.run(lambda batch: step(batch, self.clock()))
            return outcome.result, outcome.position
        outcome = await self.committer.run(lambda batch: self._run_once(batch, step, idempotency))
        result, replayed_from = outcome.result
        if replayed_from is not None:
            return result, replayed_from
        # The record is stored right after the command's own events: one before it is the
        # command's position, on the first answer and on every replay alike.
        return result, outcome.position - 1

    def _run_once(self, batch: Batch, step: Step, idem: Idempotency) -> tuple[uc.Result, None] | AfterCommit:
        """(result, None) on the first run; on a replay, an ``AfterCommit`` that the writer
        thread finishes into (the recorded answer, the position it was given)."""
        record_id = IdempotencyRecord.stream_for(idem.actor, idem.key)
        record = batch.load(IdempotencyRecord, record_id)
        if record is not None:
            record.check_same_request(idem.fingerprint)
            answer = Answer(record.answer.status, record.answer.body)

            # The record may belong to this very batch: read its position once it is stored.
            def replayed() -> tuple[Answer, int]:
                position = self.store.position_of(record_id, 1)
                if position is None:  # cannot be: the record was loaded from the log, or stored with this batch
                    raise LookupError(f"idempotency record {record_id} is not in the log")
                return answer, position - 1

            return AfterCommit(replayed)
        now = self.clock()
        result = step(batch, now)
        first = idem.answer(result)
        batch.add(IdempotencyRecord.record(idem.actor, idem.key, idem.fingerprint, first.status, first.body, now))
        return result, None

    async def erase_account(self, actor: str) -> int:
        """Erase the caller's account (commands/erasure.py): not a group-committed command, as
        its first step destroys a key outside the log. The position of its ``AccountErased``."""
        return await asyncio.get_running_loop().run_in_executor(
            None, erase_account, self.store, self.pseudonym_key, actor, self.clock()
        )

    # -- loading ------------------------------------------------------------------------

    @staticmethod
    def _story(batch: Batch, story_id: str) -> Story:
        story = batch.load(Story, parse_id(story_id, "story"))
        if story is None or story.erased:
            raise NotFound("story not found")
        return story

    def _relationship(self, batch: Batch, story: Story, viewer_id: str, *, audience: bool = False) -> Relationship:
        """Load only the graph edges this story's rules can ask about."""
        owner = story.owner_id
        if viewer_id == owner or viewer_id in story.hidden_from_ids:
            return Relationship()
        privacy = story.privacy
        wants_follow = audience or privacy in (Privacy.FOLLOWERS, Privacy.FRIENDS)
        wants_reverse = (audience and self.platform is Platform.ENTATIVA) or privacy == Privacy.FRIENDS

        def active(cls, stream) -> bool:
            edge = batch.load(cls, stream)
            return edge is not None and edge.active

        follows = wants_follow and active(Follow, Follow.stream_for(viewer_id, owner))
        return Relationship(
            follows_owner=follows,
            followed_by_owner=follows and wants_reverse and active(Follow, Follow.stream_for(owner, viewer_id)),
            close_friend=privacy == Privacy.CLOSE_FRIENDS
            and active(CloseFriendship, CloseFriendship.stream_for(owner, viewer_id)),
        )

    # Counts against the limits: private records of which only the newest is read (domain/limits.py).
    # They are handed to the batch before the domain aggregates, so a command's position is
    # that of its last domain event.

    @staticmethod
    def _live_stories(batch: Batch, owner_id: str) -> LiveStories:
        return LiveStories.open(batch.load_last(LiveStories, LiveStories.stream_for(owner_id)), owner_id)

    @staticmethod
    def _tally(batch: Batch, kind: str, user_id: str) -> Tally:
        return Tally.open(batch.load_last(Tally, Tally.stream_for(kind, user_id)), kind, user_id)

    # -- stories ------------------------------------------------------------------------

    def _create_story(self, c: uc.CreateStory) -> Step:
        actor, fields = c.actor, c.body.fields()

        def run(batch: Batch, now: datetime) -> uc.Result:
            live = self._live_stories(batch, actor)
            story = Story.create(uuid4(), actor, fields, self.platform, now, live, self.limits.live_stories)
            batch.add(live, story)
            return uc.StoryPosted(story.id, story.fields["expires_at"])

        return run

    def _view_story(self, c: uc.ViewStory) -> Step:
        actor, story_id = c.actor, c.story_id

        def run(batch: Batch, now: datetime) -> uc.Result:
            story = self._story(batch, story_id)
            current = batch.load(StoryView, StoryView.stream_for(story.id, actor))
            view = StoryView.view(current, story, actor, self._relationship(batch, story, actor), now)
            batch.add(view)
            return uc.Counted(story.id, view is not None)

        return run

    def _reply_to_story(self, c: uc.ReplyToStory) -> Step:
        actor, story_id, body = c.actor, c.story_id, c.body

        def run(batch: Batch, now: datetime) -> uc.Result:
            story = self._story(batch, story_id)
            current = batch.load(StoryReplies, StoryReplies.stream_for(story.id, actor))
            relationship = self._relationship(batch, story, actor, audience=True)
            replies = StoryReplies.reply(current, story, actor, body.text, relationship, self.platform, now)
            batch.add(replies)
            return uc.Replied(story.id, replies.count)

        return run

    def _interact(self, c: uc.Interact) -> Step:
        actor, story_id, body = c.actor, c.story_id, c.body
        values = body.model_dump(exclude_none=True)

        def run(batch: Batch, now: datetime) -> uc.Result:
            story = self._story(batch, story_id)
            kind, current, response = respond_to_sticker(
                story, body.sticker_index, actor, values, self._relationship(batch, story, actor), now, batch.load
            )
            if response is not None:  # the sticker has an answer now: its payload is frozen
                answered = self._answered_stickers(batch, story.id)
                answered.note_answer(body.sticker_index, now)
                batch.add(answered)
            batch.add(response)
            answer = uc.StickerAnswered(story.id, body.sticker_index, kind.STICKER_TYPE)
            state = response or current
            if isinstance(state, QuizAttempt):  # a quiz is answered or refused: never None here
                return replace(
                    answer, correct=state.result.correct, correct_answer_index=state.result.correct_answer_index
                )
            if kind is CountdownReminder:  # None: never followed
                return replace(answer, following=isinstance(state, CountdownReminder) and state.following)
            return answer

        return run

    @staticmethod
    def _answered_stickers(batch: Batch, story_id: UUID) -> AnsweredStickers:
        return AnsweredStickers.open(batch.load_last(AnsweredStickers, AnsweredStickers.stream_for(story_id)), story_id)

    def _navigate(self, c: uc.Navigate) -> Step:
        actor, story_id, action = c.actor, c.story_id, NavigationAction(c.body.action)

        def run(batch: Batch, now: datetime) -> uc.Result:
            story = self._story(batch, story_id)
            navigation = StoryNavigation.navigate(
                uuid4(), story, actor, action, self._relationship(batch, story, actor), now
            )
            batch.add(navigation)
            return uc.Counted(story.id, navigation is not None)

        return run

    def _share_story(self, c: uc.ShareStory) -> Step:
        actor, story_id, options = c.actor, c.story_id, (c.body or models.ShareStory()).options()

        def run(batch: Batch, now: datetime) -> uc.Result:
            original = self._story(batch, story_id)
            live = self._live_stories(batch, actor)
            reshare = Story.reshare(
                uuid4(),
                original,
                actor,
                self._relationship(batch, original, actor),
                options,
                self.platform,
                now,
                live,
                self.limits.live_stories,
            )
            batch.add(live, reshare, StoryShare.record(original, reshare, now))
            assert reshare.reshared_from is not None  # a reshare names its original
            return uc.StoryReshared(reshare.id, reshare.fields["expires_at"], reshare.reshared_from)

        return run

    def _edit_story(self, c: uc.EditStory) -> Step:
        actor, story_id, changes = c.actor, c.story_id, c.body.changes()

        def run(batch: Batch, now: datetime) -> uc.Result:
            story = self._story(batch, story_id)
            if actor != story.owner_id:
                story.check_owner(actor, self._may_see(batch, story, actor, now), "edit")
            answered = self._answered_stickers(batch, story.id)
            if story.edit(actor, changes, answered.answered, self.platform, now) and "stickers" in changes:
                answered.note_edit(now)  # collides with a first answer racing this edit
                batch.add(answered)
            batch.add(story)
            return uc.StoryChanged(story.id, story.edited_at is not None, story.edited_at)

        return run

    def _may_see(self, batch: Batch, story: Story, actor: str, now: datetime) -> bool:
        return story.is_live(now) and story.audience_allows(actor, self._relationship(batch, story, actor))

    def _delete_story(self, c: uc.DeleteStory) -> Step:
        actor, story_id = c.actor, c.story_id

        def run(batch: Batch, now: datetime) -> uc.Result:
            story = self._story(batch, story_id)
            if actor != story.owner_id:
                story.check_owner(actor, not story.deleted and self._may_see(batch, story, actor, now), "delete")
            live = self._live_stories(batch, story.owner_id) if actor == story.owner_id and not story.deleted else None
            story.delete(actor, now, live)
            batch.add(live, story)
            return uc.Done()

        return run

    def _expire_story(self, c: uc.ExpireStory) -> Step:
        story_id = c.story_id

        def run(batch: Batch, now: datetime) -> uc.Result:
            story = batch.load(Story, story_id)
            if story is None:
                raise NotFound("story not found")
            story.expire(now)  # an erased author's too: the schedule empties as it would
            batch.add(story)
            return uc.StoryExpiredNow(story_id)

        return run

    # -- highlights ---------------------------------------------------------------------

    @staticmethod
    def _story_or_none(batch: Batch, story_id: str) -> Story | None:
        canonical = canonical_id(story_id)
        story = batch.load(Story, UUID(canonical)) if canonical is not None else None
        return None if story is None or story.erased else story

    def _stories(self, batch: Batch, story_ids: list[str]) -> dict[str, Story | None]:
        return {story_id: self._story_or_none(batch, story_id) for story_id in story_ids}

    def _highlight(self, batch: Batch, highlight_id: str, actor: str) -> Highlight:
        """The highlight, for its owner or for someone who may know it exists (they get 403 from
        the domain); to anyone else it does not exist (404, like a random id): archived, or
        none of its stories visible to them (the domain's rule, on the edges ``_relationship``
        loads)."""
        highlight = batch.load(Highlight, parse_id(highlight_id, "highlight"))
        if (
            highlight is None
            or highlight.erased
            or not highlight.visible_to(
                actor,
                lambda story_id: self._story_or_none(batch, story_id),
                lambda story: self._relationship(batch, story, actor),
            )
        ):
            raise NotFound("highlight not found")
        return highlight

    def _create_highlight(self, c: uc.CreateHighlight) -> Step:
        actor, body = c.actor, c.body
        fields = body.model_dump(mode="json", exclude_none=True)

        def run(batch: Batch, now: datetime) -> uc.Result:
            highlight = Highlight.create(
                uuid4(), actor, fields, self._stories(batch, body.story_ids), now, self.limits.highlight_stories
            )
            reel = HighlightReel.open(batch.load(HighlightReel, HighlightReel.stream_for(actor)), actor)
            reel.file(highlight.id, now, self.limits.highlights)
            batch.add(highlight, reel)
            return uc.HighlightSaved(highlight.id)

        return run

    def _update_highlight(self, c: uc.UpdateHighlight) -> Step:
        actor, highlight_id, changes = c.actor, c.highlight_id, c.body.changes()

        def run(batch: Batch, now: datetime) -> uc.Result:
            highlight = self._highlight(batch, highlight_id, actor)
            highlight.update(actor, changes, now)
            batch.add(highlight)
            return uc.HighlightSaved(highlight.id)

        return run

    def _add_highlight_stories(self, c: uc.AddHighlightStories) -> Step:
        actor, highlight_id, body = c.actor, c.highlight_id, c.body

        def run(batch: Batch, now: datetime) -> uc.Result:
            highlight = self._highlight(batch, highlight_id, actor)
            highlight.check_owner(actor)
            # The highlight's own stories too (at most the limit): deleted ones do not count.
            stories = self._stories(batch, list(dict.fromkeys([*highlight.story_ids, *body.story_ids])))
            highlight.add_stories(actor, body.story_ids, stories, now, self.limits.highlight_stories)
            batch.add(highlight)
            return uc.HighlightStories(highlight.id, list(highlight.story_ids))

        return run

    def _remove_highlight_stories(self, c: uc.RemoveHighlightStories) -> Step:
        actor, highlight_id, body = c.actor, c.highlight_id, c.body

        def run(batch: Batch, now: datetime) -> uc.Result:
            highlight = self._highlight(batch, highlight_id, actor)
            highlight.remove_stories(actor, body.story_ids, now)
            batch.add(highlight)
            return uc.HighlightStories(highlight.id, list(highlight.story_ids))

        return run

    def _delete_highlight(self, c: uc.DeleteHighlight) -> Step:
        actor, highlight_id = c.actor, c.highlight_id

        def run(batch: Batch, now: datetime) -> uc.Result:
            highlight = self._highlight(batch, highlight_id, actor)
            highlight.delete(actor, now)
            reel = HighlightReel.open(batch.load(HighlightReel, HighlightReel.stream_for(actor)), actor)
            reel.unfile(highlight.id, now)
            batch.add(highlight, reel)
            return uc.Done()

        return run

    def _reorder_highlights(self, c: uc.ReorderHighlights) -> Step:
        actor, body = c.actor, c.body

        def run(batch: Batch, now: datetime) -> uc.Result:
            reel = HighlightReel.open(batch.load(HighlightReel, HighlightReel.stream_for(actor)), actor)
            reel.reorder(body.highlight_ids, now)
            batch.add(reel)
            return uc.HighlightsOrdered(list(reel.highlight_ids))

        return run

    # -- social graph -------------------------------------------------------------------

    def _add_close_friend(self, c: uc.AddCloseFriend) -> Step:
        actor, friend_id = c.actor, c.user_id

        def run(batch: Batch, now: datetime) -> uc.Result:
            current = batch.load(CloseFriendship, CloseFriendship.stream_for(actor, friend_id))
            tally = self._tally(batch, CLOSE_FRIENDS, actor)
            entry = CloseFriendship.add(current, actor, friend_id, now, tally, self.limits.close_friends)
            batch.add(tally, entry)
            return uc.CloseFriendAdded(friend_id)

        return run

    def _remove_close_friend(self, c: uc.RemoveCloseFriend) -> Step:
        actor, friend_id = c.actor, c.user_id

        def run(batch: Batch, now: datetime) -> uc.Result:
            entry = batch.load(CloseFriendship, CloseFriendship.stream_for(actor, friend_id))
            if entry is None:
                raise NotFound("not on your close-friends list", code="not_close_friend")
            tally = self._tally(batch, CLOSE_FRIENDS, actor)
            entry.remove(now, tally)
            batch.add(tally, entry)
            return uc.Done()

        return run

    def _follow(self, c: uc.Follow) -> Step:
        return self._start_edge(Follow, FOLLOWS, self.limits.follows, c.actor, c.user_id, uc.Following(c.user_id))

    def _unfollow(self, c: uc.Unfollow) -> Step:
        return self._stop_edge(Follow, FOLLOWS, c.actor, c.user_id)

    def _mute(self, c: uc.Mute) -> Step:
        return self._start_edge(Mute, MUTED, self.limits.muted, c.actor, c.user_id, uc.Muted(c.user_id))

    def _unmute(self, c: uc.Unmute) -> Step:
        return self._stop_edge(Mute, MUTED, c.actor, c.user_id)

    def _start_edge(self, edge: type[Edge], kind: str, limit: int, actor: str, other: str, result: uc.Result) -> Step:
        def run(batch: Batch, now: datetime) -> uc.Result:
            current = batch.load(edge, edge.stream_for(actor, other))
            tally = self._tally(batch, kind, actor)
            batch.add(tally, edge.start(current, actor, other, now, tally, limit))
            return result

        return run

    def _stop_edge(self, edge: type[Edge], kind: str, actor: str, other: str) -> Step:
        def run(batch: Batch, now: datetime) -> uc.Result:
            current = batch.load(edge, edge.stream_for(actor, other)) or edge(edge.stream_for(actor, other))
            tally = self._tally(batch, kind, actor)
            current.stop(now, tally)
            batch.add(tally, current)
            return uc.Done()

        return run


HANDLERS: dict[type[uc.Command], Callable[[StoriesApplication, Any], Step]] = {
    uc.CreateStory: StoriesApplication._create_story,
    uc.ViewStory: StoriesApplication._view_story,
    uc.ReplyToStory: StoriesApplication._reply_to_story,
    uc.Interact: StoriesApplication._interact,
    uc.Navigate: StoriesApplication._navigate,
    uc.ShareStory: StoriesApplication._share_story,
    uc.EditStory: StoriesApplication._edit_story,
    uc.DeleteStory: StoriesApplication._delete_story,
    uc.ExpireStory: StoriesApplication._expire_story,
    uc.CreateHighlight: StoriesApplication._create_highlight,
    uc.UpdateHighlight: StoriesApplication._update_highlight,
    uc.AddHighlightStories: StoriesApplication._add_highlight_stories,
    uc.RemoveHighlightStories: StoriesApplication._remove_highlight_stories,
    uc.DeleteHighlight: StoriesApplication._delete_highlight,
    uc.ReorderHighlights: StoriesApplication._reorder_highlights,
    uc.AddCloseFriend: StoriesApplication._add_close_friend,
    uc.RemoveCloseFriend: StoriesApplication._remove_close_friend,
    uc.Follow: StoriesApplication._follow,
    uc.Unfollow: StoriesApplication._unfollow,
    uc.Mute: StoriesApplication._mute,
    uc.Unmute: StoriesApplication._unmute,
}
