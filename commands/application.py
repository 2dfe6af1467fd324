"""The application service: each command loads the few aggregates it needs, calls one domain
method and hands the changes to the group committer, which appends them atomically.

The acting user always comes from the verified token (``actor``), never from a body.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable
from uuid import UUID, uuid4

import asyncio

from commands import models
from commands.erasure import erase_account
from commands.event_store import EventStore
from commands.group_commit import AfterCommit, Batch, GroupCommitter
from commands.idempotency import IdempotencyRecord
from domain.engagement import (
    NavigationAction, StoryNavigation, StoryReplies, StoryShare, StoryView, response_type_for,
)
from domain.errors import NotFound
from domain.highlights import Highlight, HighlightReel
from domain.ids import canonical_id
from domain.limits import CLOSE_FRIENDS, FOLLOWS, MUTED, Limits, LiveStories, Tally
from domain.platform import Platform
from domain.social import CloseFriendship, Follow, Mute
from domain.stickers import AnsweredStickers
from domain.stories import Story
from domain.visibility import Relationship


@dataclass(frozen=True)
class Answer:
    """What a command answers, before the HTTP layer adds the log position."""

    status: int
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class Idempotency:
    key: str
    fingerprint: str


def utc_now() -> datetime:
    # Milliseconds: what MongoDB keeps, so every read model shows the same instant.
    now = datetime.now(timezone.utc)
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

    async def execute(
        self, actor: str, command: Callable[[Batch, datetime], Answer], idempotency: Idempotency | None = None
    ) -> tuple[Answer, int]:
        """Run ``command`` through the group committer; (answer, log position)."""
        if idempotency is None:
            outcome = await self.committer.run(lambda batch: command(batch, self.clock()))
            return outcome.result, outcome.position
        outcome = await self.committer.run(lambda batch: self._run_once(batch, actor, command, idempotency))
        answer, replayed_from = outcome.result
        if replayed_from is not None:
            return answer, replayed_from
        # The record is stored right after the command's own events: one before it is the
        # command's position, on the first answer and on every replay alike.
        return answer, outcome.position - 1

    def _run_once(
        self, batch: Batch, actor: str, command: Callable[[Batch, datetime], Answer], idem: Idempotency
    ) -> tuple[Answer, int | None]:
        record_id = IdempotencyRecord.stream_for(actor, idem.key)
        record = batch.load(IdempotencyRecord, record_id)
        if record is not None:
            record.check_same_request(idem.fingerprint)
            answer = Answer(record.answer.status, record.answer.body)
            # The record may belong to this very batch: read its position once it is stored.
            return AfterCommit(lambda: (answer, self.store.position_of(record_id, 1) - 1))
        now = self.clock()
        answer = command(batch, now)
        batch.add(IdempotencyRecord.record(actor, idem.key, idem.fingerprint, answer.status, answer.body, now))
        return answer, None

    async def erase_account(self, actor: str) -> int:
        """Erase the caller's account (commands/erasure.py): not a group-committed command, as
        its first step destroys a key outside the log. The position of its ``AccountErased``."""
        return await asyncio.get_running_loop().run_in_executor(
            None, erase_account, self.store, self.pseudonym_key, actor, self.clock())

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
        privacy = story.fields["privacy"]
        wants_follow = audience or privacy in ("followers", "friends")
        wants_reverse = (audience and self.platform is Platform.ENTATIVA) or privacy == "friends"

        def active(cls, stream) -> bool:
            edge = batch.load(cls, stream)
            return edge is not None and edge.active

        follows = wants_follow and active(Follow, Follow.stream_for(viewer_id, owner))
        return Relationship(
            follows_owner=follows,
            followed_by_owner=follows and wants_reverse and active(Follow, Follow.stream_for(owner, viewer_id)),
            close_friend=privacy == "close_friends" and active(CloseFriendship, CloseFriendship.stream_for(owner, viewer_id)),
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

    def create_story(self, actor: str, body: models.CreateStory) -> Callable[[Batch, datetime], Answer]:
        fields = body.fields()

        def run(batch: Batch, now: datetime) -> Answer:
            live = self._live_stories(batch, actor)
            story = Story.create(uuid4(), actor, fields, self.platform, now, live, self.limits.live_stories)
            batch.add(live, story)
            return Answer(201, {"story_id": str(story.id), "expires_at": story.fields["expires_at"]})

        return run

    def view_story(self, actor: str, story_id: str) -> Callable[[Batch, datetime], Answer]:
        def run(batch: Batch, now: datetime) -> Answer:
            story = self._story(batch, story_id)
            current = batch.load(StoryView, StoryView.stream_for(story.id, actor))
            view = StoryView.view(current, story, actor, self._relationship(batch, story, actor), now)
            batch.add(view)
            return Answer(202, {"story_id": str(story.id), "counted": view is not None})

        return run

    def reply_to_story(self, actor: str, story_id: str, body: models.ReplyToStory) -> Callable[[Batch, datetime], Answer]:
        def run(batch: Batch, now: datetime) -> Answer:
            story = self._story(batch, story_id)
            current = batch.load(StoryReplies, StoryReplies.stream_for(story.id, actor))
            relationship = self._relationship(batch, story, actor, audience=True)
            replies = StoryReplies.reply(current, story, actor, body.text, relationship, self.platform, now)
            batch.add(replies)
            return Answer(201, {"story_id": str(story.id), "reply_number": replies.count})

        return run

    def interact(self, actor: str, story_id: str, body: models.Interact) -> Callable[[Batch, datetime], Answer]:
        values = body.model_dump(exclude_none=True)

        def run(batch: Batch, now: datetime) -> Answer:
            story = self._story(batch, story_id)
            relationship = self._relationship(batch, story, actor)
            story.check_can_engage(actor, relationship, now)  # hide the sticker list from outsiders
            kind = response_type_for(story, body.sticker_index)
            current = batch.load(kind, kind.stream_for(story.id, actor, body.sticker_index))
            response = kind.respond(current, story, body.sticker_index, actor, values, relationship, now)
            if response is not None:  # the sticker has an answer now: its payload is frozen
                answered = self._answered_stickers(batch, story.id)
                answered.note_answer(body.sticker_index, now)
                batch.add(answered)
            batch.add(response)
            result = {"story_id": str(story.id), "sticker_index": body.sticker_index, "sticker_type": kind.STICKER_TYPE}
            state = response or current
            if kind.STICKER_TYPE == "quiz":
                result.update(correct=state.result.correct, correct_answer_index=state.result.correct_answer_index)
            elif kind.STICKER_TYPE == "countdown":
                result["following"] = bool(state and state.following)
            return Answer(200, result)

        return run

    @staticmethod
    def _answered_stickers(batch: Batch, story_id: UUID) -> AnsweredStickers:
        return AnsweredStickers.open(batch.load_last(AnsweredStickers, AnsweredStickers.stream_for(story_id)), story_id)

    def navigate(self, actor: str, story_id: str, body: models.Navigate) -> Callable[[Batch, datetime], Answer]:
        action = NavigationAction(body.action)

        def run(batch: Batch, now: datetime) -> Answer:
            story = self._story(batch, story_id)
            navigation = StoryNavigation.navigate(uuid4(), story, actor, action,
                                                  self._relationship(batch, story, actor), now)
            batch.add(navigation)
            return Answer(202, {"story_id": str(story.id), "counted": navigation is not None})

        return run

    def share_story(self, actor: str, story_id: str, body: models.ShareStory | None) -> Callable[[Batch, datetime], Answer]:
        options = (body or models.ShareStory()).options()

        def run(batch: Batch, now: datetime) -> Answer:
            original = self._story(batch, story_id)
            live = self._live_stories(batch, actor)
            reshare = Story.reshare(uuid4(), original, actor, self._relationship(batch, original, actor), options,
                                    self.platform, now, live, self.limits.live_stories)
            batch.add(live, reshare, StoryShare.record(original, reshare, now))
            return Answer(201, {"story_id": str(reshare.id), "expires_at": reshare.fields["expires_at"],
                                "reshared_from": reshare.fields["reshared_from"]})

        return run

    def edit_story(self, actor: str, story_id: str, body: models.EditStory) -> Callable[[Batch, datetime], Answer]:
        changes = body.changes()

        def run(batch: Batch, now: datetime) -> Answer:
            story = self._story(batch, story_id)
            if actor != story.owner_id:
                story.check_owner(actor, self._may_see(batch, story, actor, now), "edit")
            answered = self._answered_stickers(batch, story.id)
            if story.edit(actor, changes, answered.answered, self.platform, now) and "stickers" in changes:
                answered.note_edit(now)  # collides with a first answer racing this edit
                batch.add(answered)
            batch.add(story)
            return Answer(200, {"story_id": str(story.id), "edited": "edited_at" in story.fields,
                                "edited_at": story.fields.get("edited_at")})

        return run

    def _may_see(self, batch: Batch, story: Story, actor: str, now: datetime) -> bool:
        return story.is_live(now) and story.audience_allows(actor, self._relationship(batch, story, actor))

    def delete_story(self, actor: str, story_id: str) -> Callable[[Batch, datetime], Answer]:
        def run(batch: Batch, now: datetime) -> Answer:
            story = self._story(batch, story_id)
            if actor != story.owner_id:
                story.check_owner(actor, not story.deleted and self._may_see(batch, story, actor, now), "delete")
            live = self._live_stories(batch, story.owner_id) if actor == story.owner_id and not story.deleted else None
            story.delete(actor, now, live)
            batch.add(live, story)
            return Answer(204)

        return run

    def expire_story(self, story_id: UUID) -> Callable[[Batch, datetime], Answer]:
        def run(batch: Batch, now: datetime) -> Answer:
            story = batch.load(Story, story_id)
            if story is None:
                raise NotFound("story not found")
            story.expire(now)  # an erased author's too: the schedule empties as it would
            batch.add(story)
            return Answer(200, {"story_id": str(story_id)})

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
        if highlight is None or highlight.erased or not highlight.visible_to(
            actor, lambda story_id: self._story_or_none(batch, story_id),
            lambda story: self._relationship(batch, story, actor),
        ):
            raise NotFound("highlight not found")
        return highlight

    def create_highlight(self, actor: str, body: models.CreateHighlight) -> Callable[[Batch, datetime], Answer]:
        fields = body.model_dump(mode="json", exclude_none=True)

        def run(batch: Batch, now: datetime) -> Answer:
            highlight = Highlight.create(uuid4(), actor, fields, self._stories(batch, body.story_ids), now,
                                         self.limits.highlight_stories)
            reel = HighlightReel.open(batch.load(HighlightReel, HighlightReel.stream_for(actor)), actor)
            reel.file(highlight.id, now, self.limits.highlights)
            batch.add(highlight, reel)
            return Answer(201, {"highlight_id": str(highlight.id)})

        return run

    def update_highlight(self, actor: str, highlight_id: str, body: models.UpdateHighlight) -> Callable[[Batch, datetime], Answer]:
        changes = body.changes()

        def run(batch: Batch, now: datetime) -> Answer:
            highlight = self._highlight(batch, highlight_id, actor)
            highlight.update(actor, changes, now)
            batch.add(highlight)
            return Answer(200, {"highlight_id": str(highlight.id)})

        return run

    def add_highlight_stories(self, actor: str, highlight_id: str, body: models.HighlightStories) -> Callable[[Batch, datetime], Answer]:
        def run(batch: Batch, now: datetime) -> Answer:
            highlight = self._highlight(batch, highlight_id, actor)
            highlight.check_owner(actor)
            # The highlight's own stories too (at most the limit): deleted ones do not count.
            stories = self._stories(batch, list(dict.fromkeys([*highlight.story_ids, *body.story_ids])))
            highlight.add_stories(actor, body.story_ids, stories, now, self.limits.highlight_stories)
            batch.add(highlight)
            return Answer(200, {"highlight_id": str(highlight.id), "story_ids": list(highlight.story_ids)})

        return run

    def remove_highlight_stories(self, actor: str, highlight_id: str, body: models.HighlightStories) -> Callable[[Batch, datetime], Answer]:
        def run(batch: Batch, now: datetime) -> Answer:
            highlight = self._highlight(batch, highlight_id, actor)
            highlight.remove_stories(actor, body.story_ids, now)
            batch.add(highlight)
            return Answer(200, {"highlight_id": str(highlight.id), "story_ids": list(highlight.story_ids)})

        return run

    def delete_highlight(self, actor: str, highlight_id: str) -> Callable[[Batch, datetime], Answer]:
        def run(batch: Batch, now: datetime) -> Answer:
            highlight = self._highlight(batch, highlight_id, actor)
            highlight.delete(actor, now)
            reel = HighlightReel.open(batch.load(HighlightReel, HighlightReel.stream_for(actor)), actor)
            reel.unfile(highlight.id, now)
            batch.add(highlight, reel)
            return Answer(204)

        return run

    def reorder_highlights(self, actor: str, body: models.ReorderHighlights) -> Callable[[Batch, datetime], Answer]:
        def run(batch: Batch, now: datetime) -> Answer:
            reel = HighlightReel.open(batch.load(HighlightReel, HighlightReel.stream_for(actor)), actor)
            reel.reorder(body.highlight_ids, now)
            batch.add(reel)
            return Answer(200, {"highlight_ids": list(reel.highlight_ids)})

        return run

    # -- social graph -------------------------------------------------------------------

    def add_close_friend(self, actor: str, friend_id: str) -> Callable[[Batch, datetime], Answer]:
        def run(batch: Batch, now: datetime) -> Answer:
            current = batch.load(CloseFriendship, CloseFriendship.stream_for(actor, friend_id))
            tally = self._tally(batch, CLOSE_FRIENDS, actor)
            entry = CloseFriendship.add(current, actor, friend_id, now, tally, self.limits.close_friends)
            batch.add(tally, entry)
            return Answer(201, {"user_id": friend_id, "close_friend": True})

        return run

    def remove_close_friend(self, actor: str, friend_id: str) -> Callable[[Batch, datetime], Answer]:
        def run(batch: Batch, now: datetime) -> Answer:
            entry = batch.load(CloseFriendship, CloseFriendship.stream_for(actor, friend_id))
            if entry is None:
                raise NotFound("not on your close-friends list", code="not_close_friend")
            tally = self._tally(batch, CLOSE_FRIENDS, actor)
            entry.remove(now, tally)
            batch.add(tally, entry)
            return Answer(204)

        return run

    def follow(self, actor: str, followee_id: str) -> Callable[[Batch, datetime], Answer]:
        return self._start_edge(Follow, FOLLOWS, self.limits.follows, actor, followee_id,
                                {"user_id": followee_id, "following": True})

    def unfollow(self, actor: str, followee_id: str) -> Callable[[Batch, datetime], Answer]:
        return self._stop_edge(Follow, FOLLOWS, actor, followee_id)

    def mute(self, actor: str, muted_id: str) -> Callable[[Batch, datetime], Answer]:
        return self._start_edge(Mute, MUTED, self.limits.muted, actor, muted_id, {"user_id": muted_id, "muted": True})

    def unmute(self, actor: str, muted_id: str) -> Callable[[Batch, datetime], Answer]:
        return self._stop_edge(Mute, MUTED, actor, muted_id)

    def _start_edge(self, edge: type[Follow | Mute], kind: str, limit: int, actor: str, other: str,
                    body: dict[str, Any]) -> Callable[[Batch, datetime], Answer]:
        def run(batch: Batch, now: datetime) -> Answer:
            current = batch.load(edge, edge.stream_for(actor, other))
            tally = self._tally(batch, kind, actor)
            batch.add(tally, edge.start(current, actor, other, now, tally, limit))
            return Answer(200, body)

        return run

    def _stop_edge(self, edge: type[Follow | Mute], kind: str, actor: str, other: str) -> Callable[[Batch, datetime], Answer]:
        def run(batch: Batch, now: datetime) -> Answer:
            current = batch.load(edge, edge.stream_for(actor, other)) or edge(edge.stream_for(actor, other))
            tally = self._tally(batch, kind, actor)
            current.stop(now, tally)
            batch.add(tally, current)
            return Answer(204)

        return run
