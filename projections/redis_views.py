"""Redis read models: the social graph and the live window (live stories per author, their cards,
counters and sticker tallies, who saw what, each user's own answers). Layout and lifetimes:
``projections.redis_schema``.

Nothing here outlives the story it belongs to: ``StoryExpired`` and ``StoryDeleted`` remove the
story's keys, and every per-story key also carries a time to live (what is left of the story's
life, plus grace) as a safety net. Times come from the events, never from a clock, so a replay
writes exactly what the live projection wrote.

Handlers record redis-py style calls on ``BatchWrites``; ``RedisViewStore`` applies them as one
stamped script per hash tag, so that the same code is exactly-once on one Redis and on a Redis
Cluster, with no cross-slot transaction.

Erasure (``../shared/CONTRACT.md``, "Erasure"): an event read after a person's key was destroyed
names them None; every handler then writes nothing of them (a view still counts, an answer still
tallies) and a story of theirs is a ghost (``redis_schema``). ``on_account_erased`` purges what
the live projection kept of them, from what ``plan_erasure`` read before the batch and from two
indexes kept for it (``ERASURE_INDEXES``: ``P:named:{u}``, ``P:mutedby:{u}``), so that the purged
read models equal a replay of the erased log. Every event goes through ``apply_event``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import orjson
import redis

from commands.event_store import LoggedEvent
from domain import engagement as en
from domain import highlights as hl
from domain import social as so
from domain import stories as st
from domain.accounts import AccountErased
from domain.stickers import MAX_STICKERS
from domain.visibility import Privacy
from projections.redis_schema import (
    ERASED_KEPT,
    LONGEST_LIFE,
    READ_MODEL_KEYS,
    RESPONSES_KEPT,
    SEEN_DUE,
    VIEW_NAME,
    Keys,
    LiveEntry,
    answer_field,
    hash_tag,
)
from projections.redis_schema import (
    CounterField as F,
)
from projections.runner import StalePosition
from stories.backends import is_cluster, run_pipeline

__all__ = ["ERASURE_INDEXES", "HANDLERS", "READ_MODEL_KEYS", "Keys", "RedisViewStore", "apply_event", "story_card"]

DEFAULT_GRACE = timedelta(hours=1)
ANSWERED_KINDS = {"poll", "quiz", "slider", "countdown"}  # stickers whose answer each user gets back
LONGEST_LIFE_MS = int(LONGEST_LIFE.total_seconds() * 1000)
ERASED_KEPT_MS = int(ERASED_KEPT.total_seconds() * 1000)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


Call = tuple  # (method, args) or (method, args, kwargs), as a redis-py pipeline would take it


@dataclass
class ErasurePlan:
    """What an ``AccountErased`` purge needs read before its writes (``RedisViewStore._read_ahead``):
    the person's graph sets, their live stories (entry and counter fields) and the live stories
    whose keys name them (entry, card, question responses)."""

    following: list[str] = field(default_factory=list)
    followers: list[str] = field(default_factory=list)
    close_friends: list[str] = field(default_factory=list)
    close_friend_of: list[str] = field(default_factory=list)
    muted_by: list[str] = field(default_factory=list)
    muted: list[str] = field(default_factory=list)
    own: dict[str, tuple[LiveEntry, list[str]]] = field(default_factory=dict)  # story -> (entry, counter fields)
    # story -> (entry, card, question responses)
    named: dict[str, tuple[LiveEntry, bytes | None, list[bytes]]] = field(default_factory=dict)


@dataclass
class BatchWrites:
    """What handlers write to: it records redis-py style calls (``w.hincrby(key, field, 1)``),
    each with the log position of the event being applied (``at``), and knows what the batch
    knows of each live story it touches (read before the writes, or created earlier in it).
    ``RedisViewStore`` turns the calls into one stamped script per hash tag.

    ``live[story_id]`` is the story's live-set entry, or None when the story is not live in
    Redis (expired, deleted, or never seen by this view): events about it then touch nothing,
    so a late view can never recreate the state of a story that is gone.
    """

    grace_ms: int = int(DEFAULT_GRACE.total_seconds() * 1000)
    live: dict[str, LiveEntry | None] = field(default_factory=dict)
    members: dict[str, list[bytes]] = field(default_factory=dict)  # story -> its live-set members, found by id
    at: int = 0  # the log position of the event being applied
    calls: list[Call] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # calls[i] was made for the event at positions[i]
    _expiry: dict[str, tuple[int, bool]] = field(default_factory=dict)
    erasures: dict[str, ErasurePlan] = field(default_factory=dict)  # erased user -> what their purge read
    forgotten: set[str] = field(default_factory=set)  # erased users' tags: no stamp is written for them

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs) if kwargs else (name, args))
        self.positions.append(self.at)

    def set(self, key: str, value: Any, *flags: str) -> None:
        self._call("set", key, value, *flags)

    def hset(self, key: str, name: str, value: Any) -> None:
        self._call("hset", key, name, value)

    def hdel(self, key: str, *names: str) -> None:
        self._call("hdel", key, *names)

    def hincrby(self, key: str, name: str, by: int) -> None:
        self._call("hincrby", key, name, by)

    def hincrbyfloat(self, key: str, name: str, by: float) -> None:
        self._call("hincrbyfloat", key, name, by)

    def sadd(self, key: str, *members: Any) -> None:
        self._call("sadd", key, *members)

    def srem(self, key: str, *members: Any) -> None:
        self._call("srem", key, *members)

    def zrem(self, key: str, *members: Any) -> None:
        self._call("zrem", key, *members)

    def zremrangebyscore(self, key: str, low: Any, high: Any) -> None:
        self._call("zremrangebyscore", key, low, high)

    def lpush(self, key: str, *values: Any) -> None:
        self._call("lpush", key, *values)

    def ltrim(self, key: str, start: int, end: int) -> None:
        self._call("ltrim", key, start, end)

    def linsert(self, key: str, where: str, pivot: Any, value: Any) -> None:
        self._call("linsert", key, where, pivot, value)

    def lrem(self, key: str, count: int, value: Any) -> None:
        self._call("lrem", key, count, value)

    def unlink(self, *keys: str) -> None:
        self._call("unlink", *keys)

    def zadd(self, key: str, mapping: dict, **flags: bool) -> None:
        self._call("zadd", key, mapping, **flags)

    def pexpire(self, key: str, ms: int, **flags: bool) -> None:
        self._call("pexpire", key, ms, **flags)

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
        """The batch's safety nets, as its last calls (made for its last event)."""
        self.at = max(self.positions, default=self.at)
        for key, (ms, shared) in self._expiry.items():
            if shared:  # NX then GT: the longest wins, and a key without one gets it
                self.pexpire(key, ms, nx=True)
                self.pexpire(key, ms, gt=True)
            else:
                self.pexpire(key, ms)


def story_card(e: st.StoryCreated) -> dict:
    card = e.data()
    card["created_at"] = e.occurred_at.isoformat()
    return card


def live_entry(e: st.StoryCreated) -> LiveEntry:
    kinds = {s["sticker_type"] for s in e.stickers or ()}
    lists = (
        ("w" if e.privacy == Privacy.CUSTOM else "")
        + ("h" if e.hidden_from_ids else "")
        + ("i" if kinds & ANSWERED_KINDS else "")
        + ("q" if "question" in kinds else "")
    )
    return LiveEntry(
        e.story_id, e.user_id, e.privacy, _ms(e.occurred_at), _ms(datetime.fromisoformat(e.expires_at)), lists
    )


def ghost_entry(e: st.StoryCreated) -> LiveEntry:
    """The entry of a story whose owner is erased (``LiveEntry.ghost``): its id and expiry only."""
    return LiveEntry(e.story_id, "", "", 0, _ms(datetime.fromisoformat(e.expires_at)), "")


def _named(ids: Sequence[str | None] | None) -> list[str]:
    """The ids of a list of people that still name someone (an erased person's entries are None)."""
    return [i for i in ids or () if i is not None]


def on_story_created(w: BatchWrites, k: Keys, e: st.StoryCreated) -> None:
    p, sid = w, e.story_id
    if e.user_id is None:  # its owner is erased: a ghost, nothing else (redis_schema)
        ghost = ghost_entry(e)
        p.hset(k.counters(sid), F.MEMBER, ghost.encode())
        w.keep_until(k.counters(sid), ghost, e.occurred_at)
        w.live[sid] = ghost
        return
    entry = live_entry(e)
    p.set(k.card(sid), orjson.dumps(story_card(e)))
    p.hset(k.counters(sid), F.MEMBER, entry.encode())
    w.keep_until(k.card(sid), entry, e.occurred_at)
    w.keep_until(k.counters(sid), entry, e.occurred_at)
    allowed, hidden = _named(e.allowed_viewer_ids), _named(e.hidden_from_ids)
    if e.privacy == Privacy.CUSTOM and allowed:
        p.sadd(k.allowed(sid), *allowed)
        w.keep_until(k.allowed(sid), entry, e.occurred_at)
    if hidden:
        p.sadd(k.hidden(sid), *hidden)
        w.keep_until(k.hidden(sid), entry, e.occurred_at)
    p.sadd(k.live(e.user_id), entry.encode())
    w.keep_until(k.live(e.user_id), entry, e.occurred_at, shared=True)
    w.live[sid] = entry


def on_story_viewed(w: BatchWrites, k: Keys, e: en.StoryViewed) -> None:
    entry = w.story(e.story_id)
    if entry is None:
        return
    p = w
    if not entry.ghost:  # a ghost counts nothing: only the viewer's own keys are as they were
        p.hincrby(k.counters(e.story_id), F.VIEWS, 1)
        if e.view_number == 1:
            p.hincrby(k.counters(e.story_id), F.UNIQUE_VIEWERS, 1)
    if e.viewer_id is None:  # an erased viewer still counted; nothing of theirs is kept
        return
    seen = k.seen(e.viewer_id)
    p.zadd(seen, {e.story_id: _ms(e.occurred_at)}, nx=True)  # the first view's time
    # Whatever was seen longer ago than any story lives has expired: trim it as we go.
    p.zremrangebyscore(seen, "-inf", f"({_ms(e.occurred_at) - LONGEST_LIFE_MS}")
    # When the set's last story expires, kept in the set itself, so that reclaiming it is a
    # check on the viewer's own slot (``RECLAIM_SEEN``).
    p.zadd(seen, {SEEN_DUE: entry.expires_ms}, gt=True)
    w.keep_until(seen, entry, e.occurred_at, shared=True)
    p.zadd(k.seen_due, {e.viewer_id: entry.expires_ms}, gt=True)


def _live(w: BatchWrites, story_id: str) -> bool:
    """Whether the story is live in Redis and not a ghost: events about it may write its keys."""
    entry = w.story(story_id)
    return entry is not None and not entry.ghost


def on_story_replied(w: BatchWrites, k: Keys, e: en.StoryReplied) -> None:
    if _live(w, e.story_id):
        w.hincrby(k.counters(e.story_id), F.REPLIES, 1)


def _tally(w: BatchWrites, k: Keys, e: en.StickerEvent, *fields: str, by: int = 1) -> bool:
    if not _live(w, e.story_id):
        return False
    for name in fields:
        w.hincrby(k.counters(e.story_id), name, by)
    return True


def _remember(w: BatchWrites, k: Keys, e: en.StickerEvent, value: Any) -> None:
    if e.user_id is None:  # an erased person's answer: counted, not kept
        return
    w.hset(k.answers(e.story_id), answer_field(e.sticker_index, e.user_id), value)
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
        w.hincrbyfloat(k.counters(e.story_id), F.slider_sum(e.sticker_index), e.value)
        _remember(w, k, e, e.value)


def on_countdown_followed(w: BatchWrites, k: Keys, e: en.CountdownFollowed) -> None:
    if _tally(w, k, e, F.total(e.sticker_index), F.followers(e.sticker_index)):
        _remember(w, k, e, 1)


def on_countdown_unfollowed(w: BatchWrites, k: Keys, e: en.CountdownUnfollowed) -> None:
    if _tally(w, k, e, F.followers(e.sticker_index), by=-1) and e.user_id is not None:
        w.hdel(k.answers(e.story_id), answer_field(e.sticker_index, e.user_id))


def on_question_answered(w: BatchWrites, k: Keys, e: en.QuestionAnswered) -> None:
    if _tally(w, k, e, F.total(e.sticker_index)):
        key = k.responses(e.story_id)
        w.lpush(
            key,
            orjson.dumps(
                {
                    "user_id": e.user_id,
                    "sticker_index": e.sticker_index,
                    "text": e.text,
                    "answered_at": e.occurred_at.isoformat(),
                }
            ),
        )
        w.ltrim(key, 0, RESPONSES_KEPT - 1)
        w.keep_until(key, w.live[e.story_id], e.occurred_at)  # type: ignore[arg-type]


def on_link_tapped(w: BatchWrites, k: Keys, e: en.LinkTapped) -> None:
    _tally(w, k, e, F.total(e.sticker_index))


def on_story_gone(w: BatchWrites, k: Keys, e: st.StoryDeleted | st.StoryExpired) -> None:
    entry = w.story(e.story_id)
    stale = set(w.members.get(e.story_id, ())) - ({entry.encode().encode()} if entry else set())
    if e.user_id is not None and ((entry is not None and not entry.ghost) or stale):
        w.srem(k.live(e.user_id), *([entry.encode()] if entry and not entry.ghost else []), *stale)
    w.unlink(*k.story_keys(e.story_id))  # UNLINK: a hot story's large hashes are freed off the main thread
    w.live[e.story_id] = None


def on_story_edited(w: BatchWrites, k: Keys, e: st.StoryEdited) -> None:
    """The edited content goes beside the counters (``CounterField.EDIT``): the card stays as created
    and every read of a live story, which reads the counters anyway, lays the edit over it."""
    if _live(w, e.story_id):
        w.hset(k.counters(e.story_id), F.EDIT, orjson.dumps(edited_content(e)))


def edited_content(e: st.StoryEdited) -> dict[str, Any]:
    content = e.data()
    del content["changed"], content["story_id"], content["user_id"]
    return {**content, "edited": True, "edited_at": e.occurred_at.isoformat()}


def on_user_muted(w: BatchWrites, k: Keys, e: so.UserMuted) -> None:
    if e.user_id is None or e.muted_id is None:  # an erased side: nothing of it is kept
        return
    w.sadd(k.muted(e.user_id), e.muted_id)


def on_user_unmuted(w: BatchWrites, k: Keys, e: so.UserUnmuted) -> None:
    if e.user_id is None or e.muted_id is None:
        return
    w.srem(k.muted(e.user_id), e.muted_id)


def on_user_followed(w: BatchWrites, k: Keys, e: so.UserFollowed) -> None:
    if e.follower_id is None or e.followee_id is None:
        return
    w.sadd(k.following(e.follower_id), e.followee_id)
    w.sadd(k.followers(e.followee_id), e.follower_id)


def on_user_unfollowed(w: BatchWrites, k: Keys, e: so.UserUnfollowed) -> None:
    if e.follower_id is None or e.followee_id is None:
        return
    w.srem(k.following(e.follower_id), e.followee_id)
    w.srem(k.followers(e.followee_id), e.follower_id)


def on_close_friend_added(w: BatchWrites, k: Keys, e: so.CloseFriendAdded) -> None:
    if e.user_id is None or e.friend_id is None:
        return
    w.sadd(k.close_friends(e.user_id), e.friend_id)
    w.sadd(k.close_friend_of(e.friend_id), e.user_id)


def on_close_friend_removed(w: BatchWrites, k: Keys, e: so.CloseFriendRemoved) -> None:
    if e.user_id is None or e.friend_id is None:
        return
    w.srem(k.close_friends(e.user_id), e.friend_id)
    w.srem(k.close_friend_of(e.friend_id), e.user_id)


def on_account_erased(w: BatchWrites, k: Keys, e: AccountErased) -> None:
    """Record the pseudonym (the query API refuses the account's tokens: ``read_api.queries.is_erased``)
    and, when the projector knows whom it names and has read what they left (``w.erasures``), remove
    every trace of them: their keys, their place in other people's sets, their live stories (which
    become ghosts, as a replay makes them), their answers and their places on live stories' lists.
    Every write is idempotent; each tag's go through its stamped script like any other."""
    ms = _ms(e.occurred_at)
    w.zadd(k.erased, {e.pseudonym: ms})
    w.zremrangebyscore(k.erased, "-inf", f"({ms - ERASED_KEPT_MS}")
    u = e.user_id
    if not u:
        return
    plan = w.erasures.get(u)
    if plan is None:
        return
    # each set of theirs, and where the others in it hold them in turn
    for others, their_set in (
        (plan.following, k.followers),
        (plan.followers, k.following),
        (plan.close_friends, k.close_friend_of),
        (plan.close_friend_of, k.close_friends),
        (plan.muted_by, k.muted),
        (plan.muted, k.muted_by),
    ):
        for other in others:
            w.srem(their_set(other), u)
    for sid, (entry, fields) in plan.own.items():  # their live stories: ghosts, as a replay has them
        w.unlink(*(key for key in k.story_keys(sid) if key != k.counters(sid)))
        if fields:
            dropped = [f for f in fields if f != F.MEMBER and not f.startswith("@")]
            if dropped:
                w.hdel(k.counters(sid), *dropped)
            ghost = entry.as_ghost()
            w.hset(k.counters(sid), F.MEMBER, ghost.encode())
            w.live[sid] = ghost
        else:
            w.unlink(k.counters(sid))
            w.live[sid] = None
    for sid, (entry, card, responses) in plan.named.items():
        if sid in plan.own:
            continue
        w.live[sid] = entry
        if entry.ghost:
            continue  # a ghost's keys name nobody
        w.hdel(k.answers(sid), *(answer_field(i, u) for i in range(MAX_STICKERS)))
        w.srem(k.allowed(sid), u)
        w.srem(k.hidden(sid), u)
        for raw in responses:
            response = orjson.loads(raw)
            if response.get("user_id") == u:  # as a replay pushes it: answered, by nobody named
                w.linsert(k.responses(sid), "BEFORE", raw, orjson.dumps({**response, "user_id": None, "text": None}))
                w.lrem(k.responses(sid), 1, raw)
        if card is not None:
            patched = unnamed_card(card, u)
            if patched is not None:
                w.set(k.card(sid), patched, "KEEPTTL")
    # Their stamps (``P:at:{u}``) go too, and this batch writes none under their tag: a key named
    # by their id would outlive them. Gap: a runner that read a batch naming them before the
    # erasure and stalled past this purge finds no stamp, so its late writes to their keys land
    # (fenced at its next step; erasing again removes them), as on MongoDB (``on_account_erased``).
    w.unlink(*k.user_keys(u), k.stamps(u))
    w.forgotten.add(u)
    w.zrem(k.seen_due, u)


def plan_erasure(read: Callable[[list[tuple]], list], k: Keys, u: str) -> ErasurePlan:
    """What the purge of ``u`` reads first, in two round trips of single-key commands (any slot;
    ``read`` runs a list of them and returns their replies): their graph sets, their live stories'
    entries and counter fields, and each live story whose keys name them (``P:named:{u}``) with its
    entry, card and question responses."""
    following, followers, cf, cfof, muted_by, muted, live, named = read(
        [
            ("SMEMBERS", k.following(u)),
            ("SMEMBERS", k.followers(u)),
            ("SMEMBERS", k.close_friends(u)),
            ("SMEMBERS", k.close_friend_of(u)),
            ("SMEMBERS", k.muted_by(u)),
            ("SMEMBERS", k.muted(u)),
            ("SMEMBERS", k.live(u)),
            ("ZRANGE", k.named(u), 0, -1),
        ]
    )
    text = lambda values: sorted(v.decode() if isinstance(v, bytes) else v for v in values or ())  # noqa: E731
    own = {entry.story_id: entry for entry in sorted(map(LiveEntry.decode, live or ()), key=lambda x: x.story_id)}
    named_ids = [sid for sid in text(named) if sid not in own]
    replies = (
        read(
            [
                *(("HKEYS", k.counters(sid)) for sid in own),
                *(
                    cmd
                    for sid in named_ids
                    for cmd in (
                        ("HGET", k.counters(sid), F.MEMBER),
                        ("GET", k.card(sid)),
                        ("LRANGE", k.responses(sid), 0, -1),
                    )
                ),
            ]
        )
        if own or named_ids
        else []
    )
    plan = ErasurePlan(text(following), text(followers), text(cf), text(cfof), text(muted_by), text(muted))
    for (sid, entry), fields in zip(own.items(), replies):
        plan.own[sid] = (entry, text(fields))
    rest = replies[len(own) :]
    for i, sid in enumerate(named_ids):
        member, card, responses = rest[3 * i : 3 * i + 3]
        if member:
            plan.named[sid] = (LiveEntry.decode(member), card, list(responses or ()))
    return plan


def unnamed_card(card: bytes, user_id: str) -> bytes | None:
    """A live story's card as a replay writes it once ``user_id`` is erased (None if it does not name
    them): their entries in its lists read None, and a reshare of their story loses its origin and
    the content it copied from it."""
    doc = orjson.loads(card)
    changed = False
    for name in ("allowed_viewer_ids", "hidden_from_ids"):
        ids = doc.get(name)
        if ids and user_id in ids:
            doc[name] = [None if i == user_id else i for i in ids]
            changed = True
    origin = doc.get("reshared_from")
    if isinstance(origin, dict) and origin.get("user_id") == user_id:
        doc.update(dict.fromkeys(st.ORIGINAL_AUTHORS_FIELDS))  # what the original's author wrote, too
        changed = True
    return orjson.dumps(doc) if changed else None


# -- erasure indexes: what a purge reads to find a person's traces in other keys ----------------


def _index_named(w: BatchWrites, k: Keys, user_id: str, entry: LiveEntry, at: datetime) -> None:
    key = k.named(user_id)
    w.zadd(key, {entry.story_id: entry.expires_ms})
    w.zremrangebyscore(key, "-inf", f"({_ms(at) - LONGEST_LIFE_MS}")  # stories long gone
    w.keep_until(key, entry, at, shared=True)


def index_story_created(w: BatchWrites, k: Keys, e: st.StoryCreated) -> None:
    entry = w.story(e.story_id)
    if entry is None:
        return
    listed = _named(e.allowed_viewer_ids) + _named(e.hidden_from_ids)  # its card names them, whatever the privacy
    origin = (e.reshared_from or {}).get("user_id")
    for user_id in dict.fromkeys([*listed, *([origin] if origin else [])]):
        _index_named(w, k, user_id, entry, e.occurred_at)


def index_answer(w: BatchWrites, k: Keys, e: en.StickerEvent) -> None:
    entry = w.story(e.story_id)
    if entry is not None and e.user_id is not None:
        _index_named(w, k, e.user_id, entry, e.occurred_at)


def index_muted(w: BatchWrites, k: Keys, e: so.UserMuted) -> None:
    if e.user_id is not None and e.muted_id is not None:
        w.sadd(k.muted_by(e.muted_id), e.user_id)


def index_unmuted(w: BatchWrites, k: Keys, e: so.UserUnmuted) -> None:
    if e.user_id is not None and e.muted_id is not None:
        w.srem(k.muted_by(e.muted_id), e.user_id)


# Applied after each event's handler (``apply_event``): kept apart from HANDLERS so each handler
# stays the read model's own writes.
ERASURE_INDEXES: dict[type, Callable] = {
    st.StoryCreated: index_story_created,
    en.PollVoted: index_answer,
    en.QuizAnswered: index_answer,
    en.SliderAnswered: index_answer,
    en.CountdownFollowed: index_answer,
    en.QuestionAnswered: index_answer,
    so.UserMuted: index_muted,
    so.UserUnmuted: index_unmuted,
}


def apply_event(w: BatchWrites, k: Keys, event: Any, handlers: dict[type, Callable] | None = None) -> None:
    """One event's writes: its handler's, then its erasure index's (the Redis read model's way to
    apply an event; ``projections.bulk_load`` should call it too)."""
    handler = (HANDLERS if handlers is None else handlers).get(type(event))
    if handler is not None:
        handler(w, k, event)
    if handlers is None or handlers is HANDLERS:
        indexer = ERASURE_INDEXES.get(type(event))
        if indexer is not None:
            indexer(w, k, event)


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
    st.StoryEdited: on_story_edited,
    st.StoryDeleted: on_story_gone,
    st.StoryExpired: on_story_gone,
    so.UserMuted: on_user_muted,
    so.UserUnmuted: on_user_unmuted,
    so.UserFollowed: on_user_followed,
    so.UserUnfollowed: on_user_unfollowed,
    so.CloseFriendAdded: on_close_friend_added,
    so.CloseFriendRemoved: on_close_friend_removed,
    AccountErased: on_account_erased,
    **dict.fromkeys(
        (
            hl.HighlightCreated,
            hl.HighlightUpdated,
            hl.HighlightStoriesAdded,
            hl.HighlightStoriesRemoved,
            hl.HighlightDeleted,
            hl.HighlightFiled,
            hl.HighlightUnfiled,
            hl.HighlightsReordered,
            en.StoryNavigated,
            en.StoryShared,
        ),
        _nothing,
    ),
}


def change_notice(events: list[LoggedEvent], position: int) -> dict[str, Any]:
    """What a batch changed, for live updates: the stories it touched, the authors whose tray
    entries changed for everyone who sees them, and ``[user, author]`` pairs where an entry changed
    for one user only (their view, their follow, their place on a close-friends list)."""
    stories: dict[str, None] = {}
    authors: dict[str, None] = {}
    pairs: dict[tuple[str, str], None] = {}
    resync = False
    for logged in events:
        e = logged.event
        if isinstance(e, (en.StoryNavigated, en.StoryShared)):
            continue  # they change the owner's insights, which are not streamed
        if isinstance(e, AccountErased):
            resync = True  # whose trays and stories changed is not published: everyone re-reads
            continue
        if isinstance(e, (st.StoryCreated, st.StoryEdited, st.StoryDeleted, st.StoryExpired)):
            stories[e.story_id] = None
            authors[e.user_id] = None
        elif isinstance(e, en.StoryViewed):
            stories[e.story_id] = None
            authors[e.owner_id] = None  # counts are served in the tray
            pairs[(e.viewer_id, e.owner_id)] = None  # and the viewer's unseen ring
        elif (owner := getattr(e, "owner_id", None)) is not None:  # an engagement event: it names its story
            stories[cast(Any, e).story_id] = None
            authors[owner] = None
        elif isinstance(e, (so.UserFollowed, so.UserUnfollowed)):
            pairs[(e.follower_id, e.followee_id)] = None
            pairs[(e.followee_id, e.follower_id)] = None  # entativa: friends are mutual follows
        elif isinstance(e, (so.CloseFriendAdded, so.CloseFriendRemoved)):
            pairs[(e.friend_id, e.user_id)] = None
        elif isinstance(e, (so.UserMuted, so.UserUnmuted)):
            pairs[(e.user_id, e.muted_id)] = None
    stories.pop(None, None)  # type: ignore[call-overload]
    authors.pop(None, None)  # type: ignore[call-overload]
    notice = {
        "position": position,
        "stories": list(stories),
        "authors": list(authors),
        "pairs": [list(pair) for pair in pairs if None not in pair],
    }
    if resync:
        notice["resync"] = True
    return notice


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


# -- applying a batch: one stamped script per hash tag ---------------------------------------

# Applies one hash tag's share of a batch. KEYS[1] holds the tag's stamps (a hash: view -> the
# last log position applied to the tag); ARGV: the view, whether to create KEYS[1] when it does
# not exist after the operations (not for a story's counters: a story the batch removed stays
# removed), the stamp key's time to live (ms, 0: none), the batch's last position, then the
# operations, each "position, command, key index, argument count, arguments...". Operations of
# events at or below the stamp are skipped: they landed before (a crashed run, or another runner).
APPLY = """
local view, make, ttl, top = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3]), tonumber(ARGV[4])
local at = tonumber(redis.call('HGET', KEYS[1], view) or '0')
if top <= at then return 0 end
local i = 5
while i <= #ARGV do
  local n = tonumber(ARGV[i + 3])
  if tonumber(ARGV[i]) > at then
    redis.call(ARGV[i + 1], KEYS[tonumber(ARGV[i + 2])], unpack(ARGV, i + 4, i + 3 + n))
  end
  i = i + 4 + n
end
if make or redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], view, top)
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
end
return 1
"""

# A viewer's seen set goes once every story in it has expired by ARGV[1] (the batch's last event
# time), judged by the set's own due member, so that a view another partition has just added keeps it.
RECLAIM_SEEN = """
local due = redis.call('ZSCORE', KEYS[1], ARGV[2])
if due and tonumber(due) > tonumber(ARGV[1]) then return 0 end
redis.call('UNLINK', KEYS[1])
return 1
"""

# Viewers leave the global due index only if still due (a later view may have moved them on).
UNDUE = """
local n = 0
for i = 2, #ARGV do
  local due = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if due and tonumber(due) <= tonumber(ARGV[1]) then n = n + redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return n
"""

# Moves a view's position from ARGV[1] to ARGV[2]; 0 when it is not at ARGV[1] (StalePosition).
ADVANCE = """
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

RECLAIM_PAGE = 1000  # due viewers reclaimed per batch (the rest, next batch)
STAMP_LIFE_MS = LONGEST_LIFE_MS  # plus grace: a user's stamps outlive any batch that could be re-run


def _flag_args(kwargs: dict[str, bool]) -> list[str]:
    return [name.upper() for name, on in kwargs.items() if on]


def _encode(value: Any) -> Any:
    return repr(value) if isinstance(value, float) else value


def redis_command(call: Call) -> list[tuple[str, str, list]]:
    """One recorded call as Redis commands: (command, key, arguments) each; a multi-key UNLINK
    becomes one per key, since each goes to its own key's tag."""
    name, args, kwargs = (*call, {})[:3] if len(call) == 2 else call
    key, rest = args[0], list(args[1:])
    if name == "unlink":
        return [("UNLINK", k, []) for k in args]
    if name == "zadd":
        mapping = rest[0]
        pairs = [part for member, score in mapping.items() for part in (_encode(score), member)]
        return [("ZADD", key, [*_flag_args(kwargs), *pairs])]
    if name == "pexpire":
        return [("PEXPIRE", key, [rest[0], *_flag_args(kwargs)])]
    return [(name.upper(), key, [_encode(v) for v in rest])]


@dataclass
class _TagWrites:
    """One hash tag's share of a batch: its keys and operations, as the APPLY script takes them."""

    stamp_key: str
    make_stamp: bool
    keys: dict[str, int] = field(default_factory=dict)
    ops: list[Any] = field(default_factory=list)
    story: bool = False  # a story's tag (APPLY_STORY: its stamps in its counters, and a tombstone)

    def add(self, position: int, command: str, key: str, args: list) -> None:
        index = self.keys.setdefault(key, len(self.keys) + 2)  # KEYS[1] is the stamp key
        self.ops.extend((position, command, index, len(args), *args))


class RedisViewStore:
    """Applies a batch with no cross-slot transaction, so that one code path serves one Redis
    and a Redis Cluster (``docs/OPERATIONS.md``, "Redis Cluster"):

    1. one read round trip: the live entries of the stories the batch touches, and the viewers
       whose seen sets may be due;
    2. the writes, grouped by hash tag, one APPLY script per tag: atomic within its slot and
       stamped with the log position it reached, so a re-run (after a crash anywhere, or by a
       second runner) skips what already landed; tags of stories the batch removes go last;
    3. optionally, WAIT for replicas of every node written (``wait_replicas``);
    4. the position, by compare-and-set (``ADVANCE``): StalePosition when another runner moved it.

    Keys without a hash tag (``seen_due``) take only idempotent writes (ZADD GT) and go unstamped.

    A story's stamps live in its counters while it is live, and go with them; when a batch ends
    the story, its script leaves the stamp behind in the tag's stamps key (a tombstone, kept as
    long as a user's stamps), and every story's script reads both (``APPLY_STORY``). So a runner
    that read a batch while the story was live, stalled, and woke up after another runner had
    applied the batch and the story's end, finds the stamp and writes nothing: it cannot bring
    the story's keys back. (Its position's compare-and-set then fails: StalePosition.)
    """

    APPLY_STORY = APPLY.replace(
        "local at = tonumber(redis.call('HGET', KEYS[1], view) or '0')",
        "local at = math.max(tonumber(redis.call('HGET', KEYS[1], view) or '0'),\n"
        "                    tonumber(redis.call('HGET', KEYS[2], view) or '0'))",
    )

    def __init__(
        self,
        client: Any,
        prefix: str,
        name: str = VIEW_NAME,
        handlers: dict[type, Callable] | None = None,
        grace: timedelta = DEFAULT_GRACE,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 2000,
    ) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.name = name
        self.handlers = HANDLERS if handlers is None else handlers
        self.live_window = self.handlers is HANDLERS  # the expirer's schedule view needs none of it
        self.grace_ms = int(grace.total_seconds() * 1000)
        self.wait_replicas, self.wait_timeout_ms = wait_replicas, wait_timeout_ms
        self.stamp_field = "@" + name
        self._scripts: dict[str, str] = {}

    def position(self) -> int:
        return int(self.client.get(self.keys.position(self.name)) or 0)

    def pending_until(self) -> None:
        return None  # stamps: a re-run of any batch applies only what is missing

    def _sha(self, source: str) -> str:
        sha = self._scripts.get(source)
        if sha is None:
            sha = self._scripts[source] = self.client.script_load(source)
        return sha

    def _read_ahead(
        self, events: list[LoggedEvent], start: int
    ) -> tuple[dict[str, LiveEntry | None], dict[str, list[bytes]], list[bytes], dict[str, ErasurePlan]]:
        """In one round trip: that the position is still ``start`` (else StalePosition); the live
        entries of the stories the batch touches; for the stories it ends, their members as the
        author's live set holds them (found by story id, should the counters hash that names the
        member have expired first); the viewers whose seen sets may be due."""
        story_ids = stories_to_look_up(events) if self.live_window else []
        gone = [
            e.event
            for e in events
            if self.live_window
            and isinstance(e.event, (st.StoryDeleted, st.StoryExpired))
            and e.event.user_id is not None
        ]
        reclaim = self.live_window and bool(events)
        at, *replies = run_pipeline(
            self.client,
            [
                ("GET", self.keys.position(self.name)),
                *(("HGET", self.keys.counters(story_id), F.MEMBER) for story_id in story_ids),
                *(("SSCAN", self.keys.live(e.user_id), 0, "MATCH", f"{e.story_id}|*", "COUNT", 1000) for e in gone),
                *(
                    [("ZRANGEBYSCORE", self.keys.seen_due, "-inf", self._last_ms(events), "LIMIT", 0, RECLAIM_PAGE)]
                    if reclaim
                    else []
                ),
            ],
        )
        if int(at or 0) != start:
            raise StalePosition(self.name)
        live = {sid: LiveEntry.decode(m) if m else None for sid, m in zip(story_ids, replies)}
        members = {event.story_id: found for event, (_, found) in zip(gone, replies[len(story_ids) :])}
        erased = [
            e.event.user_id
            for e in events
            if self.live_window and isinstance(e.event, AccountErased) and e.event.user_id
        ]
        plans = {
            user_id: plan_erasure(lambda commands: run_pipeline(self.client, commands), self.keys, user_id)
            for user_id in dict.fromkeys(erased)
        }
        return live, members, (replies[-1] if reclaim else []), plans

    @staticmethod
    def _last_ms(events: list[LoggedEvent]) -> int:
        return max(_ms(logged.event.occurred_at) for logged in events)

    def _group(self, writes: BatchWrites) -> tuple[dict[str, _TagWrites], list[tuple[str, str, list]]]:
        """The batch's calls by hash tag (stamped), and those on untagged keys (idempotent)."""
        groups: dict[str, _TagWrites] = {}
        plain: list[tuple[str, str, list]] = []
        for call, position in zip(writes.calls, writes.positions):
            for command, key, args in redis_command(call):
                tag = hash_tag(key)
                if tag is None:
                    last = plain[-1] if plain else None
                    if command == "ZADD" and last and last[:2] == (command, key) and last[2][0] == args[0]:
                        last[2].extend(args[1:])  # one ZADD GT for the batch: GT applies pair by pair
                    else:
                        plain.append((command, key, list(args)))
                    continue
                group = groups.get(tag)
                if group is None:
                    story = tag in writes.live  # a story's stamps live in its counters, and go with it
                    group = groups[tag] = _TagWrites(
                        self.keys.counters(tag) if story else self.keys.stamps(tag),
                        not story and tag not in writes.forgotten,
                        story=story,
                    )
                    if story:  # KEYS[2]: where the stamp stays once the story has ended (APPLY_STORY)
                        group.keys[self.keys.stamps(tag)] = 2
                group.add(position, command, key, args)
        return groups, plain

    def apply(self, events: list[LoggedEvent], start: int, position: int) -> None:
        live, members, due, plans = self._read_ahead(events, start)
        writes = BatchWrites(self.grace_ms, dict(live), members, erasures=plans)
        for logged in events:
            writes.at = logged.position
            apply_event(writes, self.keys, logged.event, self.handlers)
        writes.set_expiries()
        groups, plain = self._group(writes)
        # Stories the batch removes go last: until they are gone, a re-run still finds them live
        # and so makes the same writes to their viewers' and authors' keys.
        ending = {e.event.story_id for e in events if isinstance(e.event, (st.StoryDeleted, st.StoryExpired))}
        first = {tag: g for tag, g in groups.items() if tag not in ending}
        last = {tag: g for tag, g in groups.items() if tag in ending}
        top = max((logged.position for logged in events), default=position)
        for tag, group in last.items():
            if group.story:  # the ended story's tombstone: its stamp, where APPLY_STORY reads it
                tomb = self.keys.stamps(tag)
                group.add(top, "HSET", tomb, [self.stamp_field, top])
                group.add(top, "PEXPIRE", tomb, [STAMP_LIFE_MS + self.grace_ms])
        written: list[str] = []
        for phase, extra in ((first, plain), (last, [])):
            if phase or extra or (phase is last and due):
                written += self._run(
                    phase, extra, top, due if phase is last else [], self._last_ms(events) if events else 0
                )
        if self.wait_replicas and written:
            self._wait(written)
        if self.live_window and events:
            self._announce(events, position)
        try:
            advanced = self.client.evalsha(self._sha(ADVANCE), 1, self.keys.position(self.name), start, position)
        except redis.exceptions.NoScriptError:  # see _run
            self._scripts.clear()
            advanced = self.client.evalsha(self._sha(ADVANCE), 1, self.keys.position(self.name), start, position)
        if not advanced:
            raise StalePosition(self.name)

    def _announce(self, events: list[LoggedEvent], position: int) -> None:
        """Tell the query APIs what the batch changed (``change_notice``), on a sharded pub/sub
        channel (one code path on one Redis 7+ and on a cluster). Before the position moves: a
        crash after it re-runs the batch and announces again, so no change goes unannounced; a
        notice twice only makes clients fetch the same state twice."""
        self.client.execute_command("SPUBLISH", self.keys.changes, orjson.dumps(change_notice(events, position)))

    def _run(
        self,
        groups: dict[str, _TagWrites],
        plain: list[tuple[str, str, list]],
        top: int,
        due: list[bytes],
        last_ms: int,
    ) -> list[str]:
        """One pipeline: each tag's APPLY, the untagged commands, the seen-set reclaims; the keys
        written (one per tag, for WAIT)."""
        user_ttl = STAMP_LIFE_MS + self.grace_ms
        for attempt in (1, 2):
            try:
                apply_sha, story_sha = self._sha(APPLY), self._sha(self.APPLY_STORY)
                reclaim_sha, undue_sha = (self._sha(RECLAIM_SEEN), self._sha(UNDUE)) if due else ("", "")
                run_pipeline(
                    self.client,
                    [
                        *(
                            (
                                "EVALSHA",
                                story_sha if g.story else apply_sha,
                                1 + len(g.keys),
                                g.stamp_key,
                                *g.keys,
                                self.stamp_field,
                                int(g.make_stamp),
                                user_ttl if g.make_stamp else 0,
                                top,
                                *g.ops,
                            )
                            for g in groups.values()
                        ),
                        *((command, key, *args) for command, key, args in plain),
                        *(("EVALSHA", reclaim_sha, 1, self.keys.seen(v.decode()), last_ms, SEEN_DUE) for v in due),
                        *([("EVALSHA", undue_sha, 1, self.keys.seen_due, last_ms, *due)] if due else []),
                    ],
                )
                break
            except redis.exceptions.NoScriptError:
                # A node that lost its script cache (restarted, or a replica promoted): load the
                # scripts again; the stamps make the second attempt skip what the first applied.
                self._scripts.clear()
                if attempt == 2:
                    raise
        return [g.stamp_key for g in groups.values()] + [key for _, key, _ in plain]

    def _wait(self, written: list[str]) -> None:
        """Block until ``wait_replicas`` replicas of every node written acknowledge the writes,
        so a failover cannot lose what the position is about to count as done. WAIT counts the
        writes of its own connection: a short-lived marker written on that same connection, in
        the slot of a key the batch wrote, covers everything the node applied before it."""
        if is_cluster(self.client):
            by_node = {self.client.get_node_from_key(key).name: key for key in written}
            targets = [
                (self.client.get_redis_connection(self.client.get_node_from_key(key)), key) for key in by_node.values()
            ]
        else:
            targets = [(self.client, written[0])]
        for target, key in targets:
            with target.pipeline(transaction=False) as p:
                p.set(self.keys.wait_marker(hash_tag(key) or key), 1, px=10_000)
                p.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
                _, acked = p.execute()
            if int(acked) < self.wait_replicas:
                raise redis.exceptions.ConnectionError(
                    f"{acked} of {self.wait_replicas} replicas acknowledged the batch in {self.wait_timeout_ms} ms"
                )
