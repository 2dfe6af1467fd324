"""Redis read models: the social graph and the live window (live stories per author, their cards,
counters and sticker tallies, who saw what, each user's own answers). Layout and lifetimes:
``projections.redis_schema``.

Nothing here outlives the story it belongs to: ``StoryExpired`` and ``StoryDeleted`` remove the
story's keys in the same MULTI/EXEC, and every per-story key also carries a time to live (what is
left of the story's life, plus grace) as a safety net. Times come from the events, never from a clock, so a
replay writes exactly what the live projection wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

import orjson
import redis

from commands.event_store import LoggedEvent
from domain import engagement as en, highlights as hl, social as so, stories as st
from projections.redis_schema import (
    LONGEST_LIFE, READ_MODEL_KEYS, RESPONSES_KEPT, VIEW_NAME, CounterField as F, Keys, LiveEntry, answer_field,
)
from projections.runner import StalePosition

__all__ = ["HANDLERS", "READ_MODEL_KEYS", "Keys", "RedisViewStore", "story_card"]

DEFAULT_GRACE = timedelta(hours=1)
ANSWERED_KINDS = {"poll", "quiz", "slider", "countdown"}  # stickers whose answer each user gets back
LONGEST_LIFE_MS = int(LONGEST_LIFE.total_seconds() * 1000)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass
class BatchWrites:
    """What handlers write to: the MULTI/EXEC pipeline, plus what the batch knows of each live
    story it touches (read before the transaction, or created earlier in the batch).

    ``live[story_id]`` is the story's live-set entry, or None when the story is not live in
    Redis (expired, deleted, or never seen by this view): events about it then touch nothing,
    so a late view can never recreate the state of a story that is gone.
    """

    pipe: Any
    grace_ms: int = int(DEFAULT_GRACE.total_seconds() * 1000)
    live: dict[str, LiveEntry | None] = field(default_factory=dict)
    members: dict[str, list[bytes]] = field(default_factory=dict)  # story -> its live-set members, found by id
    _expiry: dict[str, tuple[int, bool]] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:  # handlers of other views write to the pipeline directly
        return getattr(self.pipe, name)

    def story(self, story_id: str) -> LiveEntry | None:
        return self.live.get(story_id)

    def keep_until(self, key: str, entry: LiveEntry, at: datetime, *, shared: bool = False) -> None:
        """Give ``key`` a time to live of what is left of the story's life at ``at`` (the event's
        time) plus grace; a ``shared`` key (several stories' state) keeps the longest. Relative,
        not absolute: a replay of an old log keeps the keys until its own StoryExpired events
        remove them, whatever the batch size."""
        ms = max(entry.expires_ms - _ms(at), 0) + self.grace_ms
        previous = self._expiry.get(key)
        self._expiry[key] = (max(ms, previous[0]) if previous else ms, shared)

    def set_expiries(self) -> None:
        for key, (ms, shared) in self._expiry.items():
            if shared:  # NX then GT: the longest wins, and a key without one gets it
                self.pipe.pexpire(key, ms, nx=True)
                self.pipe.pexpire(key, ms, gt=True)
            else:
                self.pipe.pexpire(key, ms)


def story_card(e: st.StoryCreated) -> dict:
    card = e.data()
    card["created_at"] = e.occurred_at.isoformat()
    return card


def live_entry(e: st.StoryCreated) -> LiveEntry:
    kinds = {s["sticker_type"] for s in e.stickers}
    lists = ("w" if e.privacy == "custom" else "") + ("h" if e.hidden_from_ids else "") \
        + ("i" if kinds & ANSWERED_KINDS else "") + ("q" if "question" in kinds else "")
    return LiveEntry(e.story_id, e.user_id, e.privacy, _ms(e.occurred_at), _ms(datetime.fromisoformat(e.expires_at)),
                     lists)


def on_story_created(w: BatchWrites, k: Keys, e: st.StoryCreated) -> None:
    entry = live_entry(e)
    p, sid = w.pipe, e.story_id
    p.set(k.card(sid), orjson.dumps(story_card(e)))
    p.hset(k.counters(sid), F.MEMBER, entry.encode())
    w.keep_until(k.card(sid), entry, e.occurred_at)
    w.keep_until(k.counters(sid), entry, e.occurred_at)
    if e.privacy == "custom" and e.allowed_viewer_ids:
        p.sadd(k.allowed(sid), *e.allowed_viewer_ids)
        w.keep_until(k.allowed(sid), entry, e.occurred_at)
    if e.hidden_from_ids:
        p.sadd(k.hidden(sid), *e.hidden_from_ids)
        w.keep_until(k.hidden(sid), entry, e.occurred_at)
    p.sadd(k.live(e.user_id), entry.encode())
    w.keep_until(k.live(e.user_id), entry, e.occurred_at, shared=True)
    w.live[sid] = entry


def on_story_viewed(w: BatchWrites, k: Keys, e: en.StoryViewed) -> None:
    entry = w.story(e.story_id)
    if entry is None:
        return
    p, seen = w.pipe, k.seen(e.viewer_id)
    p.hincrby(k.counters(e.story_id), F.VIEWS, 1)
    if e.view_number == 1:
        p.hincrby(k.counters(e.story_id), F.UNIQUE_VIEWERS, 1)
    p.zadd(seen, {e.story_id: _ms(e.occurred_at)}, nx=True)  # the first view's time
    # Whatever was seen longer ago than any story lives has expired: trim it as we go.
    p.zremrangebyscore(seen, "-inf", f"({_ms(e.occurred_at) - LONGEST_LIFE_MS}")
    w.keep_until(seen, entry, e.occurred_at, shared=True)
    p.zadd(k.seen_due, {e.viewer_id: entry.expires_ms}, gt=True)


def on_story_replied(w: BatchWrites, k: Keys, e: en.StoryReplied) -> None:
    if w.story(e.story_id) is not None:
        w.pipe.hincrby(k.counters(e.story_id), F.REPLIES, 1)


def _tally(w: BatchWrites, k: Keys, e: en.StickerEvent, *fields: str, by: int = 1) -> bool:
    if w.story(e.story_id) is None:
        return False
    for name in fields:
        w.pipe.hincrby(k.counters(e.story_id), name, by)
    return True


def _remember(w: BatchWrites, k: Keys, e: en.StickerEvent, value: Any) -> None:
    w.pipe.hset(k.answers(e.story_id), answer_field(e.sticker_index, e.user_id), value)
    w.keep_until(k.answers(e.story_id), w.live[e.story_id], e.occurred_at)  # type: ignore[arg-type]


def on_poll_voted(w: BatchWrites, k: Keys, e: en.PollVoted) -> None:
    if _tally(w, k, e, F.total(e.sticker_index), F.option(e.sticker_index, e.option_index)):
        _remember(w, k, e, e.option_index)


def on_quiz_answered(w: BatchWrites, k: Keys, e: en.QuizAnswered) -> None:
    fields = [F.total(e.sticker_index), F.option(e.sticker_index, e.option_index)]
    if e.correct:
        fields.append(F.correct(e.sticker_index))
    if _tally(w, k, e, *fields):
        _remember(w, k, e, e.option_index)


def on_slider_answered(w: BatchWrites, k: Keys, e: en.SliderAnswered) -> None:
    if _tally(w, k, e, F.total(e.sticker_index)):
        # Redis adds in long double (no overflow for any double) but prints without an exponent,
        # so the sum is kept unscaled here (counters_from_hash reads it as an exact Decimal).
        w.pipe.hincrbyfloat(k.counters(e.story_id), F.slider_sum(e.sticker_index), e.value)
        _remember(w, k, e, e.value)


def on_countdown_followed(w: BatchWrites, k: Keys, e: en.CountdownFollowed) -> None:
    if _tally(w, k, e, F.total(e.sticker_index), F.followers(e.sticker_index)):
        _remember(w, k, e, 1)


def on_countdown_unfollowed(w: BatchWrites, k: Keys, e: en.CountdownUnfollowed) -> None:
    if _tally(w, k, e, F.followers(e.sticker_index), by=-1):
        w.pipe.hdel(k.answers(e.story_id), answer_field(e.sticker_index, e.user_id))


def on_question_answered(w: BatchWrites, k: Keys, e: en.QuestionAnswered) -> None:
    if _tally(w, k, e, F.total(e.sticker_index)):
        key = k.responses(e.story_id)
        w.pipe.lpush(key, orjson.dumps({"user_id": e.user_id, "sticker_index": e.sticker_index, "text": e.text,
                                        "answered_at": e.occurred_at.isoformat()}))
        w.pipe.ltrim(key, 0, RESPONSES_KEPT - 1)
        w.keep_until(key, w.live[e.story_id], e.occurred_at)  # type: ignore[arg-type]


def on_link_tapped(w: BatchWrites, k: Keys, e: en.LinkTapped) -> None:
    _tally(w, k, e, F.total(e.sticker_index))


def on_story_gone(w: BatchWrites, k: Keys, e: st.StoryDeleted | st.StoryExpired) -> None:
    entry = w.story(e.story_id)
    stale = set(w.members.get(e.story_id, ())) - ({entry.encode().encode()} if entry else set())
    if entry is not None or stale:
        w.pipe.srem(k.live(e.user_id), *([entry.encode()] if entry else []), *stale)
    w.pipe.unlink(*k.story_keys(e.story_id))  # UNLINK: a hot story's large hashes are freed off the main thread
    w.live[e.story_id] = None


def on_user_followed(w: BatchWrites, k: Keys, e: so.UserFollowed) -> None:
    w.pipe.sadd(k.following(e.follower_id), e.followee_id)
    w.pipe.sadd(k.followers(e.followee_id), e.follower_id)


def on_user_unfollowed(w: BatchWrites, k: Keys, e: so.UserUnfollowed) -> None:
    w.pipe.srem(k.following(e.follower_id), e.followee_id)
    w.pipe.srem(k.followers(e.followee_id), e.follower_id)


def on_close_friend_added(w: BatchWrites, k: Keys, e: so.CloseFriendAdded) -> None:
    w.pipe.sadd(k.close_friends(e.user_id), e.friend_id)
    w.pipe.sadd(k.close_friend_of(e.friend_id), e.user_id)


def on_close_friend_removed(w: BatchWrites, k: Keys, e: so.CloseFriendRemoved) -> None:
    w.pipe.srem(k.close_friends(e.user_id), e.friend_id)
    w.pipe.srem(k.close_friend_of(e.friend_id), e.user_id)


def _nothing(w, k, e) -> None:
    pass


HANDLERS: dict[type, Callable] = {
    st.StoryCreated: on_story_created,
    en.StoryViewed: on_story_viewed,
    en.StoryReplied: on_story_replied,
    en.PollVoted: on_poll_voted,
    en.QuizAnswered: on_quiz_answered,
    en.SliderAnswered: on_slider_answered,
    en.CountdownFollowed: on_countdown_followed,
    en.CountdownUnfollowed: on_countdown_unfollowed,
    en.QuestionAnswered: on_question_answered,
    en.LinkTapped: on_link_tapped,
    st.StoryDeleted: on_story_gone,
    st.StoryExpired: on_story_gone,
    so.UserFollowed: on_user_followed,
    so.UserUnfollowed: on_user_unfollowed,
    so.CloseFriendAdded: on_close_friend_added,
    so.CloseFriendRemoved: on_close_friend_removed,
    **{cls: _nothing for cls in (
        hl.HighlightCreated, hl.HighlightUpdated, hl.HighlightStoriesAdded, hl.HighlightStoriesRemoved,
        hl.HighlightDeleted, hl.HighlightFiled, hl.HighlightUnfiled, hl.HighlightsReordered,
    )},
}


def stories_to_look_up(events: list[LoggedEvent]) -> list[str]:
    """Stories a batch touches that it did not create: their live entries are read first."""
    created: set[str] = set()
    wanted: dict[str, None] = {}
    for logged in events:
        event = logged.event
        if isinstance(event, st.StoryCreated):
            created.add(event.story_id)
        elif (story_id := getattr(event, "story_id", None)) is not None and story_id not in created:
            wanted[story_id] = None
    return list(wanted)


RECLAIM_SEEN = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'LIMIT', 0, 10000)
for _, viewer in ipairs(due) do
  redis.call('UNLINK', ARGV[1] .. viewer .. ARGV[2])
  redis.call('ZREM', KEYS[1], viewer)
end
return #due
"""


class RedisViewStore:
    """Applies a batch in one MULTI/EXEC together with the new position (WATCHed).

    Before the transaction it reads, in one round trip, the live entries of the stories the batch
    touches; the transaction applies the handlers, then reclaims the seen sets of viewers whose
    seen stories have all expired by the batch's last event.
    """

    def __init__(self, client: redis.Redis, prefix: str, name: str = VIEW_NAME,
                 handlers: dict[type, Callable] | None = None, grace: timedelta = DEFAULT_GRACE) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.name = name
        self.handlers = HANDLERS if handlers is None else handlers
        self.live_window = self.handlers is HANDLERS  # the expirer's schedule view needs none of it
        self.grace_ms = int(grace.total_seconds() * 1000)

    def position(self) -> int:
        return int(self.client.get(self.keys.position(self.name)) or 0)

    def pending_until(self) -> None:
        return None  # MULTI/EXEC: a batch lands whole or not at all

    def _read_ahead(self, events: list[LoggedEvent]) -> tuple[dict[str, LiveEntry | None], dict[str, list[bytes]]]:
        """The live entries of the stories the batch touches, and, for the stories it ends, their
        members as the author's live set holds them (found by story id, should the counters hash
        that names the member have expired first)."""
        story_ids = stories_to_look_up(events) if self.live_window else []
        gone = [e.event for e in events if self.live_window and isinstance(e.event, (st.StoryDeleted, st.StoryExpired))]
        if not story_ids and not gone:
            return {}, {}
        with self.client.pipeline(transaction=False) as p:
            for story_id in story_ids:
                p.hget(self.keys.counters(story_id), F.MEMBER)
            for event in gone:
                p.sscan(self.keys.live(event.user_id), 0, match=f"{event.story_id}|*", count=1000)
            replies = p.execute()
        live = {sid: LiveEntry.decode(m) if m else None for sid, m in zip(story_ids, replies)}
        members = {event.story_id: found for event, (_, found) in zip(gone, replies[len(story_ids):])}
        return live, members

    def apply(self, events: list[LoggedEvent], start: int, position: int) -> None:
        key = self.keys.position(self.name)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.watch(key)
            if int(pipe.get(key) or 0) != start:
                raise StalePosition(self.name)
            live, members = self._read_ahead(events)
            pipe.multi()
            writes = BatchWrites(pipe, self.grace_ms, live, members)
            for logged in events:
                handler = self.handlers.get(type(logged.event))
                if handler is not None:
                    handler(writes, self.keys, logged.event)
            writes.set_expiries()
            if self.live_window and events:
                # Viewers all of whose seen stories expired by this batch's last event: their seen
                # sets go. A script, so that it runs at EXEC, atomically with what other partitions add.
                before, after = self.keys.seen("\0").split("\0")
                last_ms = max(_ms(logged.event.occurred_at) for logged in events)
                pipe.eval(RECLAIM_SEEN, 1, self.keys.seen_due, before, after, last_ms)
            pipe.set(key, position)
            try:
                pipe.execute()
            except redis.WatchError:
                raise StalePosition(self.name) from None
