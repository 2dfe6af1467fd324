"""The query API's pages and its one served story shape, over HTTP, served in process.

Every list endpoint answers ``{"items", "next_cursor"}`` with ``?limit`` (default 20, 1..100) and
``?cursor`` (signed, bound to the list and the caller: anything else is a 422, never a 5xx);
following the cursors lists every item once, even while items are added between pages. A story
is served in one shape wherever it appears (the feed and ``GET /stories/{id}`` agree). Redis keeps
a story's state for its live window only; afterwards MongoDB serves it (archive, highlights,
viewers, answers).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stories.backends import connect_redis
from tests.e2e.read_side import ReadSide

pytestmark = pytest.mark.timeout(300)

S, H, V = "/api/v1/stories", "/api/v1/highlights", "/api/v1/viewers/story"
CF = "/api/v1/close-friends"
N = 22  # items per list: more than the default page of 20
STORIES_BIN = str(Path(sys.executable).parent / "stories")

QUESTION = {"sticker_type": "question", "question": {"text": "Ask me"}}
STICKERS = [
    {"sticker_type": "poll", "poll": {"question": "Best?", "options": [{"text": "a"}, {"text": "b"}, {"text": "c"}]}},
    {
        "sticker_type": "quiz",
        "quiz": {"question": "2+2?", "options": [{"text": "3"}, {"text": "4"}], "correct_answer_index": 1},
    },
    QUESTION,
    {"sticker_type": "countdown", "countdown": {"title": "Launch", "end_time": "2099-01-01T00:00:00Z"}},
    {"sticker_type": "slider", "slider": {"question": "How much?", "min_value": 0, "max_value": 10}},
    {"sticker_type": "link", "link": {"url": "https://example.org/", "label": "read"}},
]


def ids(stories: list[dict]) -> list[str]:
    return [s["story_id"] for s in stories]


def assert_422_cursor(resp, what: str) -> None:
    assert resp.status == 422, (what, resp)
    assert (resp.header("content-type") or "").startswith("application/json"), (what, resp.headers)
    error = resp.body["error"]
    assert error["code"] == "validation_error", (what, resp)


def with_params(path: str, **params: object) -> str:
    sep = "&" if "?" in path else "?"
    return path + sep + "&".join(f"{k}={v}" for k, v in params.items())


# -- a world with more than a page of everything ----------------------------------------------


@dataclass
class World:
    a: str  # the owner with N of everything
    b: str  # another user with a little of everything
    people: list[str]
    a_live: list[str] = field(default_factory=list)  # a's live stories, oldest first
    a_archive: list[str] = field(default_factory=list)  # newest first
    a_highlights: list[str] = field(default_factory=list)
    big_highlight: str = ""
    asked: str = ""  # a's story with a poll and a question sticker
    b_story: str = ""
    b_asked: str = ""
    b_highlight: str = ""
    at: int = 0


@pytest.fixture(scope="module")
def world(read_side) -> World:
    rs = read_side
    tag = uuid.uuid4().hex[:8]
    w = World(a=f"pa-{tag}", b=f"pb-{tag}", people=[f"p{i:02d}-{tag}" for i in range(N)])
    a, b = w.a, w.b
    positions = []
    for i in range(N):
        story, _ = rs.story(a, privacy="public", text_content=f"a{i}")
        w.a_live.append(story)
    w.asked, _ = rs.story(a, privacy="public", stickers=[STICKERS[0], QUESTION])
    w.a_live.append(w.asked)
    for i, person in enumerate(w.people):
        rs.view(person, w.a_live[0])
        rs.interact(person, w.asked, sticker_index=1, text=f"answer {i}")
        rs.write("POST", f"{CF}/{person}", a, expect=201)
        rs.story(person, privacy="public", text_content=f"by {person}")
        rs.follow(a, person)
    for person in w.people[:3]:
        rs.interact(person, w.asked, sticker_index=0, option_index=1)
    for i in range(N):
        resp = rs.write("POST", H, a, {"title": f"h{i}", "story_ids": [w.a_live[i]]}, expect=201)
        w.a_highlights.append(resp.body["highlight_id"])
    resp = rs.write("POST", H, a, {"title": "all", "story_ids": w.a_live[:N]}, expect=201)
    w.big_highlight = resp.body["highlight_id"]
    w.a_highlights.append(w.big_highlight)
    archive = []
    for i in range(N):
        story, position = rs.backdated_story(a, hours_ago=30 - i * 0.5, expires_in_hours=6, privacy="public")
        archive.append(story)
        positions.append(position)
    w.a_archive = archive[::-1]

    # b: two of everything, so that b can hold a cursor of each list
    w.b_story, _ = rs.story(b, privacy="public")
    rs.story(b, privacy="public")
    w.b_asked, _ = rs.story(b, privacy="public", stickers=[QUESTION])
    for person in w.people[:2]:
        rs.view(person, w.b_story)
        rs.interact(person, w.b_asked, sticker_index=0, text="hi b")
        rs.write("POST", f"{CF}/{person}", b, expect=201)
    rs.follow(b, a)
    w.b_highlight = rs.write("POST", H, b, {"title": "b", "story_ids": [w.b_story]}, expect=201).body["highlight_id"]
    rs.write("POST", H, b, {"title": "b2", "story_ids": [w.b_story]}, expect=201)
    for i in range(2):
        _, position = rs.backdated_story(b, hours_ago=20 + i, expires_in_hours=6, privacy="public")
        positions.append(position)
    w.at = max([rs.follow(b, w.people[0]), *positions])
    return w


@dataclass(frozen=True)
class Listing:
    name: str
    path: Callable[[World], str]  # what a reads
    other: Callable[[World], str]  # the same list as b reads it (b's cursor is foreign to a)
    key: str | None = None  # where the page sits in the answer


LISTINGS = [
    Listing("feed", lambda w: f"{S}/feed", lambda w: f"{S}/feed"),
    Listing("user_stories", lambda w: f"{S}/user/{w.a}", lambda w: f"{S}/user/{w.a}"),
    Listing("archive", lambda w: f"{S}/archive", lambda w: f"{S}/archive"),
    Listing("highlights", lambda w: f"{H}/user/{w.a}", lambda w: f"{H}/user/{w.a}"),
    Listing("highlight", lambda w: f"{H}/{w.big_highlight}", lambda w: f"{H}/{w.big_highlight}", key="stories"),
    Listing("viewers", lambda w: f"{V}/{w.a_live[0]}", lambda w: f"{V}/{w.b_story}"),
    Listing("answers", lambda w: f"{V}/{w.asked}/answers", lambda w: f"{V}/{w.b_asked}/answers"),
    Listing("close_friends_slash", lambda w: f"{CF}/", lambda w: f"{CF}/"),
    Listing("close_friends", lambda w: CF, lambda w: CF),
]
BY_NAME = {listing.name: listing for listing in LISTINGS}


def expected_items(rs: ReadSide, w: World, name: str, items: list[dict]) -> None:
    """The whole list, as every page size must give it."""
    if name == "feed":
        assert next(e["user_id"] for e in items) == w.a
        assert sorted(e["user_id"] for e in items) == sorted([w.a, *w.people])
    elif name == "user_stories":
        # oldest first; two stories created in one millisecond are ordered by id
        assert sorted(ids(items)) == sorted(w.a_live)
        assert ids(items) == [s["story_id"] for s in sorted(items, key=lambda s: (s["created_at"], s["story_id"]))]
    elif name == "archive":
        assert ids(items) == w.a_archive
    elif name == "highlights":
        assert [h["highlight_id"] for h in items] == w.a_highlights
        assert all("stories" not in h and h["story_count"] == len(h["story_ids"]) for h in items)
    elif name == "highlight":
        assert ids(items) == w.a_live[:N]
    elif name == "viewers":
        assert sorted(v["user_id"] for v in items) == sorted(w.people)
        keys = [(v["first_viewed_at"], v["user_id"]) for v in items]
        assert [k[0] for k in keys] == sorted((k[0] for k in keys), reverse=True)  # latest first view first
    elif name == "answers":
        assert len(items) == N
        assert Counter(x["sticker_index"] for x in items) == {1: N}
        times = [x["answered_at"] for x in items]
        assert times == sorted(times, reverse=True)  # newest first
        assert {(x["user_id"], x["text"]) for x in items} == {(p, f"answer {i}") for i, p in enumerate(w.people)}
    elif name.startswith("close_friends"):
        assert sorted(x["user_id"] for x in items) == sorted(w.people)
        added = [x["added_at"] for x in items]
        assert added == sorted(added, reverse=True)
    else:  # pragma: no cover
        raise AssertionError(name)


@pytest.mark.parametrize("name", list(BY_NAME))
def test_every_list_endpoint_pages(read_side, world, name):
    rs, w, listing = read_side, world, BY_NAME[name]
    path = listing.path(w)

    def page_of(resp) -> dict:
        body = resp.body[listing.key] if listing.key else resp.body
        assert set(body) >= {"items", "next_cursor"}, body
        return body

    # the default page is 20, with a cursor to the rest
    first = page_of(rs.read(path, w.a, w.at))
    assert len(first["items"]) == 20 and isinstance(first["next_cursor"], str) and first["next_cursor"], name
    everything = page_of(rs.read(with_params(path, limit=100), w.a, w.at))
    assert everything["next_cursor"] is None and len(everything["items"]) > 20
    expected_items(rs, w, name, everything["items"])
    assert everything["items"][:20] == first["items"]
    for limit in (1, 7, 20):
        paged = rs.items(path, w.a, w.at, limit=limit, key=listing.key)
        assert paged == everything["items"], (name, limit)
    assert rs.items(path, w.a, w.at, key=listing.key) == everything["items"]

    # limits out of range
    for limit in ("0", "101", "-1", "abc", "", "1000"):
        resp = rs.query(with_params(path, limit=limit), w.a, at=w.at)
        assert resp.status == 422 and resp.body["error"]["code"] == "validation_error", (name, limit, resp)
        assert any(d["field"] == "limit" for d in resp.body["error"]["details"]), resp

    # cursors the API did not give out for this list and this caller
    real = page_of(rs.read(with_params(path, limit=1), w.a, w.at))["next_cursor"]
    assert real
    middle = len(real) // 2
    tampered = real[:middle] + ("A" if real[middle] != "A" else "B") + real[middle + 1 :]
    other_list = BY_NAME["archive" if name != "archive" else "user_stories"]
    foreign_list = rs.read(with_params(other_list.path(w), limit=1), w.a, w.at).body["next_cursor"]
    other_page = rs.read(with_params(listing.other(w), limit=1), w.b, w.at).body
    foreign_user = (other_page[listing.key] if listing.key else other_page)["next_cursor"]
    assert foreign_list and foreign_user, (foreign_list, foreign_user)
    crafted = {
        "random": base64.urlsafe_b64encode(os.urandom(48)).decode().rstrip("="),
        "random_padded": base64.urlsafe_b64encode(os.urandom(40)).decode(),
        "tampered": tampered,
        "truncated": real[:-3],
        "extended": real + "AAAA",
        "other_list": foreign_list,
        "other_user": foreign_user,
        "not_base64": "%21%21%21",
        "empty_json": base64.urlsafe_b64encode(b"\0" * 16 + b"[]").decode(),
    }
    for what, cursor in crafted.items():
        assert cursor != real
        assert_422_cursor(rs.query(with_params(path, cursor=cursor), w.a, at=w.at), f"{name}: {what}")
        assert_422_cursor(rs.query(with_params(path, limit=5, cursor=cursor), w.a, at=w.at), f"{name}: {what}")
    # the real one still works, for its own caller only
    assert rs.query(with_params(path, limit=1, cursor=real), w.a, at=w.at).status == 200
    if listing.other(w) == path:
        assert_422_cursor(rs.query(with_params(path, limit=1, cursor=real), w.b, at=w.at), f"{name}: a's cursor, b")


# -- following cursors while things change --------------------------------------------------


def test_viewers_pages_while_new_viewers_arrive(read_side, uid):
    rs = read_side
    owner = uid("owner")
    story, _ = rs.story(owner, privacy="public")
    early = [uid(f"early{i}") for i in range(5)]
    for person in early:
        at = rs.view(person, story)
    first = rs.read(f"{V}/{story}?limit=2", owner, at).body
    listed = [v["user_id"] for v in first["items"]]
    cursor = first["next_cursor"]
    late = [uid(f"late{i}") for i in range(4)]
    n = 0
    while cursor:
        at = rs.view(late[n], story) if n < len(late) else at
        at = rs.view(early[n % len(early)], story)  # a view again moves nothing (first view order)
        n += 1
        page = rs.read(f"{V}/{story}?limit=2&cursor={cursor}", owner, at).body
        listed += [v["user_id"] for v in page["items"]]
        cursor = page["next_cursor"]
    assert len(listed) == len(set(listed)), listed  # nobody twice
    assert set(early) <= set(listed), listed  # everyone there at the start, once
    assert set(listed) <= set(early) | set(late)
    total = rs.read(f"{V}/{story}", owner, at).body["total"]
    assert total == len(early) + min(n, len(late))


def test_feed_pages_while_stories_are_posted_and_viewed(read_side, uid):
    rs = read_side
    me = uid("me")
    authors = [uid(f"author{i}") for i in range(7)]
    first_stories = {}
    for author in authors:
        first_stories[author], _ = rs.story(author, privacy="public")
        at = rs.follow(me, author)
    _own, at = rs.story(me, privacy="public")
    page = rs.read(f"{S}/feed?limit=2", me, at).body
    assert page["items"][0]["user_id"] == me and page["items"][0]["has_unseen"] is False
    listed = [e["user_id"] for e in page["items"]]
    cursor = page["next_cursor"]
    newcomer = uid("newcomer")
    rs.story(newcomer, privacy="public")
    step = 0
    while cursor:
        # between pages: a listed author and an unlisted one post again, unlisted stories are
        # viewed (seen authors move to the back), someone new is followed, I post again
        unlisted = [a for a in authors if a not in listed]
        rs.story(listed[-1], privacy="public")  # me, or an author already listed
        if unlisted:
            rs.story(unlisted[0], privacy="public")
            at = rs.view(me, first_stories[unlisted[-1]])
        if step == 0:
            at = rs.follow(me, newcomer)
        at = rs.story(me, privacy="public")[1]
        step += 1
        page = rs.read(f"{S}/feed?limit=2&cursor={cursor}", me, at).body
        listed += [e["user_id"] for e in page["items"]]
        cursor = page["next_cursor"]
        assert step < 20
    assert len(listed) == len(set(listed)), listed  # no author twice
    assert set(authors) | {me} <= set(listed), listed  # every author there at the start, once
    assert listed[0] == me
    # and from the start again: everyone, the newcomer too
    fresh = [e["user_id"] for e in rs.items(f"{S}/feed", me, at, limit=2)]
    assert sorted(fresh) == sorted([me, newcomer, *authors]) and fresh[0] == me


def test_user_stories_and_close_friends_page_while_added(read_side, uid):
    rs = read_side
    owner = uid("owner")
    stories = []
    for _ in range(5):
        story, at = rs.story(owner, privacy="public")
        stories.append(story)
    friends = [uid(f"friend{i}") for i in range(5)]
    for friend in friends:
        at = rs.write("POST", f"{CF}/{friend}", owner, expect=201).position
    got = {"s": [], "f": []}
    paths = {"s": f"{S}/user/{owner}", "f": CF}
    cursors: dict[str, str | None] = {"s": None, "f": None}
    done = {"s": False, "f": False}
    added_stories, added_friends = [], []
    for step in range(20):
        for which in ("s", "f"):
            if done[which]:
                continue
            params = {"limit": 2, **({"cursor": cursors[which]} if cursors[which] else {})}
            page = rs.read(with_params(paths[which], **params), owner, at).body
            got[which] += ids(page["items"]) if which == "s" else [x["user_id"] for x in page["items"]]
            cursors[which] = page["next_cursor"]
            done[which] = page["next_cursor"] is None
        if all(done.values()):
            break
        # between pages: a new story (oldest first: it comes at the end) and a new close friend
        # (newest first: it comes before the cursor, so this listing may not show it)
        story, _ = rs.story(owner, privacy="public")
        added_stories.append(story)
        friend = uid(f"late{step}")
        added_friends.append(friend)
        at = rs.write("POST", f"{CF}/{friend}", owner, expect=201).position
    got_stories, got_friends = got["s"], got["f"]
    assert all(done.values())
    assert got_stories == stories + added_stories  # oldest first: what was added shows up at the end
    assert len(got_stories) == len(set(got_stories)) and got_stories[:5] == stories  # oldest first
    assert set(got_stories) <= set(stories) | set(added_stories)
    assert len(got_friends) == len(set(got_friends)) and set(friends) <= set(got_friends)
    assert set(got_friends) <= set(friends) | set(added_friends)


# -- question answers --------------------------------------------------------------------------


def test_answers_page_filter_and_owner_only(read_side, uid):
    rs = read_side
    owner, follower, stranger = uid("owner"), uid("follower"), uid("stranger")
    rs.follow(follower, owner)
    story, _ = rs.story(owner, privacy="followers", stickers=[STICKERS[0], QUESTION])  # one question a story
    people = [uid(f"fan{i}") for i in range(7)]
    for i, person in enumerate(people):
        rs.follow(person, owner)
        at = rs.interact(person, story, sticker_index=1, text=f"q0 {i}").position
        time.sleep(0.002)
    at = rs.interact(people[0], story, sticker_index=0, option_index=0).position  # not an answer to list
    answers = rs.items(f"{V}/{story}/answers", owner, at, limit=3)
    assert [(x["user_id"], x["sticker_index"], x["text"]) for x in answers] == [
        (p, 1, f"q0 {i}") for i, p in reversed(list(enumerate(people)))
    ]  # newest first
    assert all(set(x) == {"user_id", "sticker_index", "text", "answered_at"} for x in answers)
    only1 = rs.items(f"{V}/{story}/answers?sticker_index=1", owner, at, limit=2)
    assert only1 == answers
    assert rs.read(f"{V}/{story}/answers?sticker_index=0", owner, at).body == {
        "items": [],
        "next_cursor": None,
        "story_id": story,
    }
    assert rs.read(f"{V}/{story}/answers?sticker_index=9", owner, at).body["items"] == []
    # a cursor of the filtered list is not one of the whole list
    cursor = rs.read(f"{V}/{story}/answers?sticker_index=1&limit=2", owner, at).body["next_cursor"]
    assert_422_cursor(rs.query(f"{V}/{story}/answers?cursor={cursor}", owner, at=at), "other filter")
    for bad in ("-1", "10", "x", "1.0"):
        resp = rs.query(f"{V}/{story}/answers?sticker_index={bad}", owner, at=at)
        assert resp.status == 422 and resp.body["error"]["code"] == "validation_error", (bad, resp)

    # the owner's served question sticker carries the latest 5; all of them are on /answers
    served = rs.read(f"{S}/{story}", owner, at).body["stickers"][1]["question"]
    assert served["response_count"] == 7
    assert [r["text"] for r in served["responses"]] == [f"q0 {i}" for i in (6, 5, 4, 3, 2)]

    # owner only: 403 for someone who can see the story, 404 for someone who cannot
    for path in (f"{V}/{story}/answers", f"{V}/{story}/answers?sticker_index=1"):
        resp = rs.query(path, follower, at=at)
        assert resp.status == 403, resp
        assert "q0" not in resp.raw.decode() and people[0] not in resp.raw.decode()
        resp = rs.query(path, stranger, at=at)
        assert resp.status == 404, resp
    assert "responses" not in rs.read(f"{S}/{story}", follower, at).body["stickers"][1]["question"]
    assert rs.query(f"{V}/7f1c1e0e-0000-4000-8000-000000000000/answers", owner, at=at).status == 404


# -- one served shape ----------------------------------------------------------------------------


def _feed_entry(rs: ReadSide, caller: str, author: str, at: int) -> dict:
    entries = [e for e in rs.items(f"{S}/feed", caller, at) if e["user_id"] == author]
    assert len(entries) == 1, entries
    return entries[0]


def _quiz(story: dict) -> dict:
    return next(s["quiz"] for s in story["stickers"] if s["sticker_type"] == "quiz")


QUIZ_COUNTS = ("total_attempts", "correct_attempts", "correct_answer_index")


def test_feed_story_equals_the_story_endpoint_and_quiz_counts_follow_the_answer(read_side, uid):
    rs = read_side
    owner, voter, lurker = uid("owner"), uid("voter"), uid("lurker")
    rs.follow(voter, owner)
    rs.follow(lurker, owner)
    plain, _ = rs.story(owner, privacy="public")
    story, _ = rs.story(owner, privacy="followers", stickers=STICKERS)
    rs.view(voter, story)
    rs.interact(voter, story, sticker_index=0, option_index=2)
    rs.interact(voter, story, sticker_index=1, option_index=1)
    rs.interact(voter, story, sticker_index=2, text="why?")
    rs.interact(voter, story, sticker_index=3, action="follow")
    at = rs.interact(voter, story, sticker_index=4, value=8).position

    def compare(caller: str) -> list[dict]:
        entry = _feed_entry(rs, caller, owner, at)
        assert ids(entry["stories"]) == [plain, story]
        for served in entry["stories"]:
            alone = rs.read(f"{S}/{served['story_id']}", caller, at).body
            assert served == alone, (caller, served, alone)  # same keys, same sticker results
        return entry["stories"]

    # the owner's own entry first, never unseen
    own_feed = rs.items(f"{S}/feed", owner, at)
    assert own_feed[0]["user_id"] == owner and own_feed[0]["has_unseen"] is False
    mine = compare(owner)[1]
    assert _quiz(mine)["correct_answer_index"] == 1 and _quiz(mine)["total_attempts"] == 1
    assert [r["text"] for r in mine["stickers"][2]["question"]["responses"]] == ["why?"]

    theirs = compare(voter)[1]
    poll = theirs["stickers"][0]["poll"]
    assert poll["total_votes"] == 1 and poll["my_vote"] == 2 and [o["votes"] for o in poll["options"]] == [0, 0, 1]
    assert [o["percentage"] for o in poll["options"]] == [0.0, 0.0, 100.0]
    quiz = _quiz(theirs)
    assert quiz["total_attempts"] == 1 and quiz["correct_attempts"] == 1 and quiz["correct_answer_index"] == 1
    assert [o["selected_count"] for o in quiz["options"]] == [0, 1]
    assert theirs["stickers"][2]["question"]["response_count"] == 1
    assert "responses" not in theirs["stickers"][2]["question"]
    assert theirs["stickers"][3]["countdown"]["follower_count"] == 1
    assert (
        theirs["stickers"][4]["slider"]["average_value"] == 8 and theirs["stickers"][4]["slider"]["response_count"] == 1
    )
    assert theirs["viewed_by_me"] is True and theirs["view_count"] == 1

    # someone who has not answered the quiz gets the options' texts only, in the feed and alone
    unanswered = compare(lurker)[1]
    quiz = _quiz(unanswered)
    assert [o["text"] for o in quiz["options"]] == ["3", "4"]
    for name in QUIZ_COUNTS:
        assert name not in quiz, (name, quiz)
    for option in quiz["options"]:
        assert "selected_count" not in option and "percentage" not in option and "is_correct" not in option, option
    assert unanswered["stickers"][0]["poll"]["total_votes"] == 1  # poll results are for everyone
    # after answering (wrongly), the counts are theirs too
    at = rs.interact(lurker, story, sticker_index=1, option_index=0).position
    answered = compare(lurker)[1]
    quiz = _quiz(answered)
    assert quiz["total_attempts"] == 2 and quiz["correct_attempts"] == 1 and quiz["correct_answer_index"] == 1
    assert [o["selected_count"] for o in quiz["options"]] == [1, 1]
    compare(voter)
    compare(owner)


# -- the live window: Redis lets a story go; MongoDB serves it afterwards ------------------------


def _story_keys(rs: ReadSide, story: str) -> list[str]:
    """The story's Redis keys, less its stamps (``at:{story}``), which outlive an ended story for a
    bounded time so that a stalled projector cannot bring it back; their lifetime is checked here."""
    from projections.redis_schema import Keys

    stamps = Keys(rs.redis_prefix).stamps(story)
    client = connect_redis(rs.redis_url)
    try:
        keys = sorted(
            k.decode() for k in client.scan_iter(match=rs.redis_prefix + "*", count=1000) if story in k.decode()
        )
        if stamps in keys:
            assert 0 < client.pttl(stamps) <= 50 * 3600 * 1000, "a story's stamps must expire"
        return [k for k in keys if k != stamps]
    finally:
        client.close()


def _live_members(rs: ReadSide, author: str) -> list[str]:
    from projections.redis_schema import Keys

    client = connect_redis(rs.redis_url)
    key = Keys(rs.redis_prefix).live(author)
    try:
        kind = client.type(key).decode()
        members = client.zrange(key, 0, -1) if kind == "zset" else client.smembers(key) if kind == "set" else []
        return [m.decode() for m in members]
    finally:
        client.close()


def _log_head(rs: ReadSide) -> int:
    from commands.event_store import EventStore

    store = EventStore(rs.event_store_url)
    try:
        return store.head()
    finally:
        store.close()


def _engaged_story(rs: ReadSide, uid, owner: str, **body) -> tuple[str, list[str], int]:
    story, _ = rs.story(owner, privacy="public", stickers=[STICKERS[0], QUESTION], **body)
    fans = [uid(f"fan{i}") for i in range(3)]
    for i, fan in enumerate(fans):
        rs.view(fan, story)
        rs.interact(fan, story, sticker_index=0, option_index=i % 2)
        at = rs.interact(fan, story, sticker_index=1, text=f"hello {i}").position
    rs.read(f"{S}/{story}", owner, at)
    keys = _story_keys(rs, story)
    assert keys, "a live story has Redis state"
    assert any(story in m for m in _live_members(rs, owner))
    return story, fans, at


def test_expired_story_leaves_redis_and_is_served_from_mongodb(read_side, uid, tmp_path):
    rs = read_side
    faketime = shutil.which("faketime")
    if faketime is None:
        pytest.skip("faketime is not installed: the expirer cannot be run 7 hours ahead")
    owner, follower = uid("owner"), uid("follower")
    rs.follow(follower, owner)
    story, fans, _ = _engaged_story(rs, uid, owner, expires_in_hours=6)
    keeper, _ = rs.story(owner, privacy="public", expires_in_hours=48)
    made = rs.write("POST", H, owner, {"title": "kept", "story_ids": [story]}, expect=201)
    highlight = made.body["highlight_id"]
    before = rs.read(f"{S}/{story}", owner, made.position).body

    # the expirer, 7 hours from now: the 6 h story is due (the 48 h one is not)
    out = subprocess.run(
        [faketime, "-f", "+7h", STORIES_BIN, "expirer", "--once"],
        env=rs.env,
        capture_output=True,
        timeout=60,
        cwd=rs.data_dir,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, (out.stdout.decode()[-2000:], out.stderr.decode()[-2000:])
    at = _log_head(rs)
    archive = rs.items(f"{S}/archive", owner, at)
    if story not in ids(archive):
        pytest.fail(f"the expirer did not expire the 6 h story: {out.stdout.decode()[-500:]}")

    assert _story_keys(rs, story) == [], "Redis keeps nothing of an expired story"
    assert not any(story in m for m in _live_members(rs, owner))
    assert any(keeper in m for m in _live_members(rs, owner))
    assert _story_keys(rs, keeper), "the live story keeps its state"

    # MongoDB serves it: the archive, the owner's highlight, viewers, answers, insights
    served = next(s for s in archive if s["story_id"] == story)
    assert served["is_expired"] is True and served["view_count"] == 3
    assert served["stickers"][0]["poll"]["total_votes"] == 3
    assert served["stickers"][1]["question"]["response_count"] == 3
    for name in ("view_count", "reply_count", "stickers", "unique_viewers", "created_at", "expires_at"):
        assert served[name] == before[name], name
    in_highlight = rs.read(f"{H}/{highlight}", owner, at).body
    assert ids(in_highlight["stories"]["items"]) == [story] and in_highlight["stories"]["items"][0] == served
    listed = rs.items(f"{H}/user/{owner}", owner, at)
    assert [h["story_ids"] for h in listed if h["highlight_id"] == highlight] == [[story]]
    # others see the highlight (audience only, expiry aside) but not the story alone
    assert ids(rs.read(f"{H}/{highlight}", follower, at).body["stories"]["items"]) == [story]
    # whether the caller saw it outlives Redis's seen set (MongoDB's viewer list answers)
    assert rs.read(f"{H}/{highlight}", fans[0], at).body["stories"]["items"][0]["viewed_by_me"] is True
    assert rs.read(f"{H}/{highlight}", follower, at).body["stories"]["items"][0]["viewed_by_me"] is False
    assert rs.query(f"{S}/{story}", follower, at=at).status == 404
    assert sorted(v["user_id"] for v in rs.items(f"{V}/{story}", owner, at)) == sorted(fans)
    assert {x["text"] for x in rs.items(f"{V}/{story}/answers", owner, at)} == {f"hello {i}" for i in range(3)}
    assert rs.read(f"{V}/{story}/insights", owner, at).body["total_views"] == 3
    assert rs.read(f"{S}/{story}", owner, at).body == served
    assert story not in ids(rs.items(f"{S}/user/{owner}", owner, at))
    feed = _feed_entry(rs, follower, owner, at)
    assert ids(feed["stories"]) == [keeper]


def test_deleted_story_leaves_redis(read_side, uid):
    rs = read_side
    owner, follower = uid("owner"), uid("follower")
    rs.follow(follower, owner)
    story, fans, _ = _engaged_story(rs, uid, owner)
    at = rs.write("DELETE", f"{S}/{story}", owner, expect=204).position
    rs.read(f"{S}/archive", owner, at)
    assert _story_keys(rs, story) == [], "Redis keeps nothing of a deleted story"
    assert not any(story in m for m in _live_members(rs, owner))
    for user in (owner, follower, *fans):
        assert rs.query(f"{S}/{story}", user, at=at).status == 404
    assert story not in ids(rs.items(f"{S}/archive", owner, at))
    assert all(e["user_id"] != owner for e in rs.items(f"{S}/feed", follower, at))


# -- highlights: covers, removals and reorders between pages -----------------------------------


def _highlight(rs: ReadSide, owner: str, story_ids: list[str], **body) -> tuple[str, int]:
    resp = rs.write("POST", H, owner, {"title": "h", "story_ids": story_ids, **body}, expect=201)
    return resp.body["highlight_id"], resp.position


def test_a_highlight_cover_never_names_a_story_the_caller_may_not_see(read_side, uid):
    rs = read_side
    owner, follower, friend = uid("owner"), uid("follower"), uid("friend")
    for user in (follower, friend):
        rs.follow(user, owner)
    rs.write("POST", f"{CF}/{friend}", owner, expect=201)
    public, _ = rs.story(owner, privacy="public")
    secret, _ = rs.story(owner, privacy="close_friends")
    hid, at = _highlight(rs, owner, [public, secret], cover={"story_id": secret, "emoji": "*"})
    for user, cover in (
        (owner, {"story_id": secret, "emoji": "*"}),
        (friend, {"story_id": secret, "emoji": "*"}),
        (follower, {"emoji": "*"}),
    ):
        assert rs.read(f"{H}/{hid}", user, at).body["cover"] == cover, user
        assert [h["cover"] for h in rs.items(f"{H}/user/{owner}", user, at)] == [cover], user
    # removed from the highlight, then deleted: the cover stops naming it, for the owner too
    at = rs.write("DELETE", f"{H}/{hid}/stories", owner, {"story_ids": [secret]}).position
    assert rs.read(f"{H}/{hid}", owner, at).body["cover"] == {"emoji": "*"}
    other, _ = _highlight(rs, owner, [public, secret], cover={"story_id": secret})
    at = rs.write("DELETE", f"{S}/{secret}", owner, expect=204).position
    assert rs.read(f"{H}/{other}", owner, at).body["cover"] is None


def test_a_highlights_stories_page_loses_nothing_when_a_story_is_removed_between_pages(read_side, uid):
    rs = read_side
    owner = uid("owner")
    stories = [rs.story(owner, privacy="public")[0] for _ in range(5)]
    hid, at = _highlight(rs, owner, stories)
    first = rs.read(f"{H}/{hid}?limit=2", owner, at).body["stories"]
    assert ids(first["items"]) == stories[:2]
    at = rs.write("DELETE", f"{H}/{hid}/stories", owner, {"story_ids": [stories[1]]}).position
    cursor = first["next_cursor"]
    rest = rs.read(f"{H}/{hid}?limit=10&cursor={cursor}", owner, at).body["stories"]
    assert ids(rest["items"]) == stories[2:]


def test_a_users_highlights_page_loses_nothing_when_reordered_between_pages(read_side, uid):
    rs = read_side
    owner = uid("owner")
    story, _ = rs.story(owner, privacy="public")
    made = [_highlight(rs, owner, [story])[0] for _ in range(4)]
    order = [*made]
    at = rs.write("POST", f"{H}/reorder", owner, {"highlight_ids": order}).position
    first = rs.read(f"{H}/user/{owner}?limit=2", owner, at).body
    assert [h["highlight_id"] for h in first["items"]] == order[:2]
    moved = [order[2], order[0], order[1], order[3]]  # the third moves to the front
    at = rs.write("POST", f"{H}/reorder", owner, {"highlight_ids": moved}).position
    rest = rs.read(f"{H}/user/{owner}?limit=10&cursor={first['next_cursor']}", owner, at).body
    assert sorted(h["highlight_id"] for h in rest["items"]) == sorted(order[2:])  # none lost, none repeated
