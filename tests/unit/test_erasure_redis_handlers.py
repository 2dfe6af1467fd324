"""Erasure in the Redis read models, handler by handler and as a whole on an in-memory Redis:
events that name an erased person (None) write nothing of them, and the live projection purged by
``AccountErased`` equals a replay of the erased log (``tests.erasure.as_erased``)."""

from __future__ import annotations

import fnmatch
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from commands.event_store import LoggedEvent
from domain import engagement as en
from domain import social as so
from domain import stories as sto
from domain.accounts import AccountErased
from projections import redis_views
from projections.redis_schema import Keys, LiveEntry
from projections.redis_views import (
    BatchWrites,
    apply_event,
    change_notice,
    plan_erasure,
    redis_command,
    stories_to_look_up,
)
from tests.erasure import as_erased

K = Keys("p:")
T = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
X = "xavier"
USERS = ["alice", "bob", "carol", X]


def ev(cls, at: datetime = T, **fields):
    return cls(originator_id=uuid4(), originator_version=1, occurred_at=at, **fields)


def erasure(at: datetime = T, user_id: str | None = X) -> AccountErased:
    e = ev(AccountErased, at=at, pseudonym="c0ffee")  # HMAC of the id: names no one in clear
    if user_id is not None:
        e.__dict__["_user_id"] = user_id
    return e


# -- an in-memory Redis: the commands the projector sends, as the server would apply them -----------


def _b(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def _bound(text: Any) -> tuple[float, bool]:
    text = text.decode() if isinstance(text, bytes) else str(text)
    if text in ("-inf", "+inf", "inf"):
        return float(text), False
    if text.startswith("("):
        return float(text[1:]), True
    return float(text), False


class MiniRedis:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def _get(self, key: str, kind: type) -> Any:
        value = self.data.get(key)
        if value is None:
            value = self.data[key] = kind()
        assert isinstance(value, kind), (key, value)
        return value

    def _tidy(self, key: str) -> None:
        if key in self.data and isinstance(self.data[key], (dict, set, list)) and not self.data[key]:
            del self.data[key]

    def execute(self, command: str, key: str, *args: Any) -> Any:
        c = command.upper()
        out: Any = None
        if c == "SET":
            self.data[key] = _b(args[0])
        elif c == "GET":
            out = self.data.get(key)
        elif c == "HSET":
            self._get(key, dict)[_b(args[0])] = _b(args[1])
        elif c == "HGET":
            out = self.data.get(key, {}).get(_b(args[0]))
        elif c == "HKEYS":
            out = list(self.data.get(key, {}))
        elif c == "HDEL":
            h = self._get(key, dict)
            for f in args:
                h.pop(_b(f), None)
        elif c == "HINCRBY":
            h = self._get(key, dict)
            h[_b(args[0])] = _b(int(h.get(_b(args[0]), b"0")) + int(args[1]))
        elif c == "HINCRBYFLOAT":
            h = self._get(key, dict)
            h[_b(args[0])] = _b(repr(float(h.get(_b(args[0]), b"0")) + float(args[1])))
        elif c == "SADD":
            self._get(key, set).update(map(_b, args))
        elif c == "SREM":
            self._get(key, set).difference_update(map(_b, args))
        elif c == "SMEMBERS":
            out = set(self.data.get(key, set()))
        elif c == "ZADD":
            z = self._get(key, dict)
            flags = {a for a in args if a in ("NX", "GT", "XX", "LT")}
            rest = [a for a in args if a not in flags]
            for score, member in zip(rest[::2], rest[1::2]):
                member, score = _b(member), float(score)
                if member in z and ("NX" in flags or ("GT" in flags and score <= z[member])):
                    continue
                z[member] = score
        elif c == "ZREM":
            z = self._get(key, dict)
            for m in args:
                z.pop(_b(m), None)
        elif c == "ZREMRANGEBYSCORE":
            z = self._get(key, dict)
            (low, low_open), (high, high_open) = _bound(args[0]), _bound(args[1])
            for m, s in list(z.items()):
                if (s > low if low_open else s >= low) and (s < high if high_open else s <= high):
                    del z[m]
        elif c == "ZRANGE":
            out = [m for m, _ in sorted(self.data.get(key, {}).items(), key=lambda kv: (kv[1], kv[0]))]
        elif c == "LPUSH":
            lst = self._get(key, list)
            for v in args:
                lst.insert(0, _b(v))
        elif c == "LTRIM":
            lst = self._get(key, list)
            start, end = int(args[0]), int(args[1])
            self.data[key] = lst[start : (end + 1 if end >= 0 else len(lst) + end + 1)]
        elif c == "LRANGE":
            lst = self.data.get(key, [])
            end = int(args[1])
            out = lst[int(args[0]) : (end + 1 if end >= 0 else len(lst) + end + 1)]
        elif c == "LINSERT":
            lst = self.data.get(key)
            if lst and _b(args[1]) in lst:
                i = lst.index(_b(args[1]))
                lst.insert(i if args[0] == "BEFORE" else i + 1, _b(args[2]))
        elif c == "LREM":
            lst = self._get(key, list)
            if _b(args[1]) in lst:
                lst.remove(_b(args[1]))
        elif c == "UNLINK":
            self.data.pop(key, None)
        elif c == "PEXPIRE":
            pass  # times to live are not compared
        else:
            raise AssertionError(f"unexpected command {command}")
        self._tidy(key)
        return out

    def read(self, commands: list[tuple]) -> list[Any]:
        return [self.execute(*command) for command in commands]

    def state(self) -> dict[str, Any]:
        return {k: v for k, v in sorted(self.data.items()) if not k.startswith("p:at:")}


def project(r: MiniRedis, events: list[Any], position: int = 0) -> int:
    """One batch, as ``RedisViewStore.apply`` makes it (reads first, then the writes in order)."""
    logged = [LoggedEvent(position + i + 1, e) for i, e in enumerate(events)]
    story_ids = stories_to_look_up(logged)
    live = {
        sid: LiveEntry.decode(m) if m else None
        for sid, m in zip(story_ids, r.read([("HGET", K.counters(s), "m") for s in story_ids]))
    }
    members = {}
    for e in events:
        if isinstance(e, (sto.StoryDeleted, sto.StoryExpired)) and e.user_id is not None:
            members[e.story_id] = [
                m for m in r.data.get(K.live(e.user_id), set()) if fnmatch.fnmatchcase(m.decode(), f"{e.story_id}|*")
            ]
    plans = {
        e.user_id: plan_erasure(r.read, K, e.user_id) for e in events if isinstance(e, AccountErased) and e.user_id
    }
    w = BatchWrites(0, live, members, erasures=plans)
    for item in logged:
        w.at = item.position
        apply_event(w, K, item.event)
    w.set_expiries()
    for call in w.calls:
        for command, key, args in redis_command(call):
            r.execute(command, key, *args)
    return position + len(events)


def calls(event, live: dict | None = None, plans: dict | None = None) -> list[tuple]:
    w = BatchWrites(0, dict(live or {}), {}, erasures=plans or {})
    apply_event(w, K, event)
    return w.calls


# -- events -----------------------------------------------------------------------------------


def story(
    sid: str,
    owner: str | None,
    at: datetime = T,
    *,
    privacy: str = "followers",
    allowed=(),
    hidden=(),
    stickers: list | None = None,
    reshared_from: dict | None = None,
) -> sto.StoryCreated:
    return ev(
        sto.StoryCreated,
        at=at,
        story_id=sid,
        user_id=owner,
        story_type="text",
        media_id=None,
        media_url=None,
        thumbnail_url=None,
        text_content="words",
        background_color="#112233",
        background_gradient=None,
        duration=5.0,
        stickers=[{"sticker_type": "poll"}, {"sticker_type": "question"}] if stickers is None else stickers,
        privacy=privacy,
        allowed_viewer_ids=list(allowed),
        hidden_from_ids=list(hidden),
        allow_replies="everyone",
        expires_at=(at + timedelta(hours=24)).isoformat(),
        reshared_from=reshared_from,
    )


LIVE = {
    "s1": LiveEntry(
        "s1", "alice", "followers", int(T.timestamp() * 1000), int((T + timedelta(hours=24)).timestamp() * 1000), "iq"
    )
}


def test_a_story_of_an_erased_owner_is_a_ghost_and_nothing_else():
    e = as_erased(story("s1", X, privacy="custom", allowed=["bob"], hidden=["carol"]), X)
    assert e.user_id is None and e.stickers is None
    got = calls(e)
    expires = int((T + timedelta(hours=24)).timestamp() * 1000)
    ghost = f"s1|||0|{expires}|"
    assert got[0] == ("hset", (K.counters("s1"), "m", ghost))
    written = {c[1][0] for c in got}
    assert K.card("s1") not in written and not any(key.startswith("p:live:") for key in written)
    assert not any(key.startswith(("p:aud:", "p:hid:")) for key in written)
    # the listed people's own index still says a live story names them (as live wrote it)
    assert {K.named("bob"), K.named("carol"), K.counters("s1")} == written
    assert LiveEntry.decode(ghost).ghost


@pytest.mark.parametrize(
    "event",
    [
        lambda: ev(en.StoryViewed, story_id="s1", owner_id=None, viewer_id="bob", view_number=1),
        lambda: ev(en.PollVoted, story_id="s1", owner_id=None, user_id="bob", sticker_index=0, option_index=1),
        lambda: ev(
            en.QuestionAnswered, story_id="s1", owner_id=None, user_id="bob", sticker_index=1, answer_number=1, text="?"
        ),
        lambda: ev(en.StoryReplied, story_id="s1", owner_id=None, user_id="bob", reply_number=1, text="hi"),
    ],
    ids=["view", "poll", "question", "reply"],
)
def test_engagement_with_a_ghost_touches_only_the_actors_own_keys(event):
    ghost = {"s1": LIVE["s1"].as_ghost()}
    written = {c[1][0] for c in calls(event(), ghost)}
    assert not any("{s1}" in key for key in written)
    assert not any("None" in key for key in written)


def test_a_view_by_an_erased_viewer_counts_and_keeps_nothing_of_them():
    e = ev(en.StoryViewed, story_id="s1", owner_id="alice", viewer_id=None, view_number=1)
    assert calls(e, LIVE) == [("hincrby", (K.counters("s1"), "v", 1)), ("hincrby", (K.counters("s1"), "u", 1))]


def test_an_erased_persons_answers_are_counted_not_kept():
    vote = ev(en.PollVoted, story_id="s1", owner_id="alice", user_id=None, sticker_index=0, option_index=1)
    assert calls(vote, LIVE) == [("hincrby", (K.counters("s1"), "0:t", 1)), ("hincrby", (K.counters("s1"), "0:o1", 1))]
    unfollow = ev(en.CountdownUnfollowed, story_id="s1", owner_id="alice", user_id=None, sticker_index=2)
    assert calls(unfollow, LIVE) == [("hincrby", (K.counters("s1"), "2:f", -1))]
    answer = ev(
        en.QuestionAnswered, story_id="s1", owner_id="alice", user_id=None, sticker_index=1, answer_number=1, text=None
    )
    pushed = [c for c in calls(answer, LIVE) if c[0] == "lpush"]
    assert [orjson.loads(c[1][1]) for c in pushed] == [
        {"user_id": None, "sticker_index": 1, "text": None, "answered_at": T.isoformat()}
    ]


@pytest.mark.parametrize(
    "event",
    [
        lambda: ev(so.UserFollowed, follower_id=None, followee_id="alice"),
        lambda: ev(so.UserUnfollowed, follower_id="alice", followee_id=None),
        lambda: ev(so.CloseFriendAdded, user_id=None, friend_id="bob"),
        lambda: ev(so.CloseFriendRemoved, user_id="alice", friend_id=None),
        lambda: ev(so.UserMuted, user_id="alice", muted_id=None),
        lambda: ev(so.UserUnmuted, user_id=None, muted_id="bob"),
        lambda: ev(sto.StoryDeleted, story_id="s9", user_id=None),
        lambda: ev(
            sto.StoryEdited,
            story_id="s9",
            user_id=None,
            text_content=None,
            background_color=None,
            background_gradient=None,
            stickers=None,
            changed=["text_content"],
        ),
    ],
    ids=["follow", "unfollow", "cf-add", "cf-remove", "mute", "unmute", "deleted", "edited"],
)
def test_graph_and_story_events_with_an_erased_side_write_nothing(event):
    assert [c for c in calls(event()) if c[0] != "unlink"] == []


def test_a_change_notice_names_no_erased_person():
    events = [
        ev(en.StoryViewed, story_id="s1", owner_id="alice", viewer_id=None, view_number=1),
        ev(so.UserFollowed, follower_id=None, followee_id="alice"),
        ev(sto.StoryDeleted, story_id="s2", user_id=None),
    ]
    notice = change_notice([LoggedEvent(i + 1, e) for i, e in enumerate(events)], 3)
    assert None not in notice["authors"] and all(None not in pair for pair in notice["pairs"])
    assert "resync" not in notice
    assert change_notice([LoggedEvent(4, erasure())], 4)["resync"] is True


def test_the_purge_of_a_replayed_erasure_only_records_the_pseudonym():
    got = calls(erasure(user_id=None))
    assert [c[1][0] for c in got] == [K.erased, K.erased]
    assert got[0] == ("zadd", (K.erased, {"c0ffee": int(T.timestamp() * 1000)}))


def test_the_purge_removes_every_trace_and_keeps_the_counts():
    r = MiniRedis()
    at = lambda minutes: T + timedelta(minutes=minutes)  # noqa: E731
    events = [
        story("s1", "alice", at(0), privacy="custom", allowed=["bob", X], hidden=[X]),
        story("s2", X, at(1)),
        story("s3", "bob", at(2), reshared_from={"story_id": "s2", "user_id": X}),
        ev(so.UserFollowed, at=at(3), follower_id=X, followee_id="alice"),
        ev(so.UserFollowed, at=at(3), follower_id="bob", followee_id=X),
        ev(so.CloseFriendAdded, at=at(4), user_id=X, friend_id="carol"),
        ev(so.CloseFriendAdded, at=at(4), user_id="alice", friend_id=X),
        ev(so.UserMuted, at=at(5), user_id="carol", muted_id=X),
        ev(so.UserMuted, at=at(5), user_id=X, muted_id="bob"),
        ev(en.StoryViewed, at=at(6), story_id="s1", owner_id="alice", viewer_id=X, view_number=1),
        ev(en.StoryViewed, at=at(6), story_id="s2", owner_id=X, viewer_id="bob", view_number=1),
        ev(en.PollVoted, at=at(7), story_id="s1", owner_id="alice", user_id=X, sticker_index=0, option_index=1),
        ev(
            en.QuestionAnswered,
            at=at(8),
            story_id="s1",
            owner_id="alice",
            user_id=X,
            sticker_index=1,
            answer_number=1,
            text="mine",
        ),
        ev(
            en.QuestionAnswered,
            at=at(9),
            story_id="s1",
            owner_id="alice",
            user_id="bob",
            sticker_index=1,
            answer_number=1,
            text="bob's",
        ),
        ev(en.PollVoted, at=at(10), story_id="s2", owner_id=X, user_id="carol", sticker_index=0, option_index=0),
    ]
    position = project(r, events)
    project(r, [erasure(at(11))], position)
    state = r.state()
    assert X not in repr(state), state
    assert state[K.counters("s1")][b"v"] == b"1" and state[K.counters("s1")][b"0:t"] == b"1"
    assert set(state[K.counters("s2")]) == {b"m"} and K.card("s2") not in state  # a ghost
    assert [orjson.loads(v)["user_id"] for v in state[K.responses("s1")]] == ["bob", None]
    assert orjson.loads(state[K.card("s3")])["reshared_from"] is None
    assert state[K.erased] == {b"c0ffee": float(int(at(11).timestamp() * 1000))}


# -- the property: live then purged equals the replay of the erased log --------------------------

STORIES = ["s0", "s1", "s2", "s3"]

ops = hs.lists(
    hs.tuples(
        hs.sampled_from(
            [
                "story",
                "view",
                "vote",
                "answer",
                "countdown",
                "follow",
                "unfollow",
                "cf",
                "uncf",
                "mute",
                "unmute",
                "delete",
                "expire",
                "edit",
            ]
        ),
        hs.sampled_from(USERS),
        hs.sampled_from(USERS),
        hs.sampled_from(STORIES),
        hs.integers(0, 3),
    ),
    max_size=40,
)


def build(plan: list[tuple]) -> list[Any]:
    """A plausible log from random steps: stories only while live, one vote per person and sticker."""
    events: list[Any] = []
    owner: dict[str, str] = {}
    ever: set[str] = set()
    views: dict[tuple[str, str], int] = {}
    votes: set[tuple[str, str]] = set()
    answers: dict[tuple[str, str], int] = {}
    countdown: dict[tuple[str, str], bool] = {}
    for i, (op, a, b, sid, n) in enumerate(plan):
        at = T + timedelta(minutes=i)
        if op == "story" and sid not in ever:
            ever.add(sid)
            owner[sid] = a
            privacy = "custom" if n == 1 else "followers"
            origin = next(iter(owner), None)
            events.append(
                story(
                    sid,
                    a,
                    at,
                    privacy=privacy,
                    allowed=[b, X] if n == 1 else [],
                    hidden=[b] if n == 2 else [],
                    stickers=[{"sticker_type": "poll"}, {"sticker_type": "question"}, {"sticker_type": "countdown"}],
                    reshared_from={"story_id": origin, "user_id": owner[origin]}
                    if n == 3 and origin and origin != sid
                    else None,
                )
            )
        elif sid not in owner:
            continue
        elif op == "view":
            views[(sid, b)] = views.get((sid, b), 0) + 1
            events.append(
                ev(en.StoryViewed, at=at, story_id=sid, owner_id=owner[sid], viewer_id=b, view_number=views[(sid, b)])
            )
        elif op == "vote" and (sid, b) not in votes:
            votes.add((sid, b))
            events.append(
                ev(
                    en.PollVoted,
                    at=at,
                    story_id=sid,
                    owner_id=owner[sid],
                    user_id=b,
                    sticker_index=0,
                    option_index=n % 2,
                )
            )
        elif op == "answer":
            answers[(sid, b)] = answers.get((sid, b), 0) + 1
            events.append(
                ev(
                    en.QuestionAnswered,
                    at=at,
                    story_id=sid,
                    owner_id=owner[sid],
                    user_id=b,
                    sticker_index=1,
                    answer_number=answers[(sid, b)],
                    text=f"{b} says {n}",
                )
            )
        elif op == "countdown":
            on = countdown.get((sid, b), False)
            cls = en.CountdownUnfollowed if on else en.CountdownFollowed
            countdown[(sid, b)] = not on
            events.append(ev(cls, at=at, story_id=sid, owner_id=owner[sid], user_id=b, sticker_index=2))
        elif op == "edit":
            events.append(
                ev(
                    sto.StoryEdited,
                    at=at,
                    story_id=sid,
                    user_id=owner[sid],
                    text_content=f"v{n}",
                    background_color=None,
                    background_gradient=None,
                    stickers=[],
                    changed=["text_content"],
                )
            )
        elif op in ("delete", "expire"):
            gone = owner.pop(sid)
            if op == "delete":
                events.append(ev(sto.StoryDeleted, at=at, story_id=sid, user_id=gone))
            else:
                events.append(ev(sto.StoryExpired, at=at, story_id=sid, user_id=gone, expired_at=at.isoformat()))
    for i, (op, a, b, _sid, _n) in enumerate(plan):  # the graph: any order, on its own streams
        at = T + timedelta(minutes=i, seconds=30)
        if a == b:
            continue
        graph = {
            "follow": (so.UserFollowed, {"follower_id": a, "followee_id": b}),
            "unfollow": (so.UserUnfollowed, {"follower_id": a, "followee_id": b}),
            "cf": (so.CloseFriendAdded, {"user_id": a, "friend_id": b}),
            "uncf": (so.CloseFriendRemoved, {"user_id": a, "friend_id": b}),
            "mute": (so.UserMuted, {"user_id": a, "muted_id": b}),
            "unmute": (so.UserUnmuted, {"user_id": a, "muted_id": b}),
        }.get(op)
        if graph is not None:
            events.append(ev(graph[0], at=at, **graph[1]))
    return sorted(events, key=lambda e: e.occurred_at)


def batches(events: list[Any], size: int) -> list[list[Any]]:
    return [events[i : i + size] for i in range(0, len(events), size)] or [[]]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops, hs.integers(1, 7), hs.integers(1, 7))
def test_live_then_purged_equals_the_replay_of_the_erased_log(plan, live_batch, replay_batch):
    events = build(plan)
    end = T + timedelta(hours=1)
    live, position = MiniRedis(), 0
    for batch in batches(events, live_batch):
        position = project(live, batch, position)
    project(live, [erasure(end)], position)  # alone, as the runner applies it

    replay, position = MiniRedis(), 0
    for batch in batches([as_erased(e, X) for e in events], replay_batch):
        position = project(replay, batch, position)
    project(replay, [erasure(end, user_id=None)], position)

    assert live.state() == replay.state()
    flat = repr(live.state()).encode()
    assert X.encode() not in flat, "the erased person is still named"


def test_the_purge_is_idempotent():
    events = build(
        [
            ("story", X, "bob", "s0", 1),
            ("story", "alice", X, "s1", 1),
            ("view", "a", X, "s1", 0),
            ("answer", "a", X, "s1", 0),
            ("vote", "a", "bob", "s0", 0),
            ("follow", X, "alice", "s0", 0),
            ("mute", "carol", X, "s0", 0),
        ]
    )
    r = MiniRedis()
    position = project(r, events)
    project(r, [erasure(T + timedelta(hours=1))], position)
    once = r.state()
    project(r, [erasure(T + timedelta(hours=1))], position)
    assert r.state() == once


def test_handlers_table_knows_the_erasure():
    assert redis_views.HANDLERS[AccountErased] is redis_views.on_account_erased
