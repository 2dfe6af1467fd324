"""The query API over HTTP, served in process (``tests/integration/conftest.py``): every endpoint, fed through the command API and
the projector, read with read-your-writes (X-Stories-Min-Position = the command's position)."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest

pytestmark = pytest.mark.timeout(180)

S = "/api/v1/stories"
H = "/api/v1/highlights"
NO_SUCH_STORY = "7f1c1e0e-0000-4000-8000-000000000000"

ALL_QUERIES = [
    f"{S}/feed",
    f"{S}/archive",
    f"{S}/user/someone",
    f"{S}/{NO_SUCH_STORY}",
    f"{H}/user/someone",
    f"{H}/{NO_SUCH_STORY}",
    f"/api/v1/viewers/story/{NO_SUCH_STORY}",
    f"/api/v1/viewers/story/{NO_SUCH_STORY}/answers",
    f"/api/v1/viewers/story/{NO_SUCH_STORY}/insights",
    "/api/v1/viewers/user/insights",
    "/api/v1/close-friends/",
    "/api/v1/close-friends",
]


def error_of(resp, status: int, code: str | None = None) -> dict:
    assert resp.status == status, resp
    assert (resp.header("content-type") or "").startswith("application/json"), resp.headers
    error = resp.body["error"]
    assert isinstance(error["code"], str) and error["code"] and isinstance(error["message"], str), resp
    if code is not None:
        assert error["code"] == code, resp
    return error


def ids(stories: list[dict]) -> list[str]:
    return [s["story_id"] for s in stories]


# -- operations endpoints -------------------------------------------------------------------------


def test_health_ready_metrics_and_openapi(read_side):
    health = read_side.query("/health")
    assert health.status == 200
    ready = read_side.query("/ready")
    assert ready.status == 200, ready
    assert ready.body["checks"] == {"mongodb": "ok", "redis": "ok"}
    read_side.query(f"{S}/feed", "metrics-user")  # at least one served request to count
    metrics = read_side.query("/metrics")
    assert metrics.status == 200
    text = metrics.raw.decode()
    assert "stories_projection_position_mongo" in text and "stories_projection_position_redis" in text
    assert "stories_projection_lag_events" in text
    doc = read_side.query("/openapi.json")
    assert doc.status == 200
    spec = doc.body
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path in [
        "/api/v1/stories/feed",
        "/api/v1/stories/{story_id}",
        "/api/v1/stories/user/{user_id}",
        "/api/v1/stories/archive",
        "/api/v1/highlights/user/{user_id}",
        "/api/v1/highlights/{highlight_id}",
        "/api/v1/viewers/story/{story_id}",
        "/api/v1/viewers/story/{story_id}/answers",
        "/api/v1/viewers/story/{story_id}/insights",
        "/api/v1/viewers/user/insights",
        "/api/v1/close-friends/",
        "/api/v1/close-friends",
    ]:
        assert "get" in paths[path], path
    params = {p["name"] for p in paths["/api/v1/viewers/story/{story_id}"]["get"]["parameters"]}
    assert {"story_id", "limit", "cursor", "min_position"} <= params
    for paged in (
        "/api/v1/stories/feed",
        "/api/v1/stories/archive",
        "/api/v1/stories/user/{user_id}",
        "/api/v1/highlights/user/{user_id}",
        "/api/v1/highlights/{highlight_id}",
        "/api/v1/viewers/story/{story_id}/answers",
        "/api/v1/close-friends/",
        "/api/v1/close-friends",
    ):
        assert {"limit", "cursor"} <= {p["name"] for p in paths[paged]["get"]["parameters"]}, paged
    answers = {p["name"] for p in paths["/api/v1/viewers/story/{story_id}/answers"]["get"]["parameters"]}
    assert "sticker_index" in answers


# -- authentication, validation, read-your-writes limits ----------------------------------------


@pytest.mark.parametrize("path", ALL_QUERIES)
def test_401_without_or_with_a_bad_token(read_side, path):
    error_of(read_side.query(path), 401)
    error_of(read_side.query(path, token="not-a-jwt"), 401)
    error_of(
        read_side.query(
            path, token=read_side.token("mallory", secret="another-secret-entirely-and-long-enough-for-hs256")
        ),
        401,
    )
    error_of(read_side.query(path, token=read_side.token("mallory", ttl=-120)), 401)


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", ""])
def test_422_bad_min_position(read_side, value):
    if value:  # an empty header is no header; as a parameter it is a bad value
        error_of(read_side.query(f"{S}/feed", "alice", headers={"X-Stories-Min-Position": value}), 422)
    error_of(read_side.query(f"{S}/feed?min_position={value}", "alice"), 422)


def test_422_bad_limit_and_cursor(read_side, uid):
    owner = uid("owner")
    story, at = read_side.story(owner, privacy="public")
    read_side.read(f"{S}/{story}", owner, at)
    for path in (f"{S}/archive", f"/api/v1/viewers/story/{story}"):
        for limit in ("0", "101", "-1", "abc", "2.5"):
            error = error_of(read_side.query(f"{path}?limit={limit}", owner), 422)
            assert any(d["field"] == "limit" for d in error["details"]), error
        for cursor in ("garbage!", "%%%", "bm90LWpzb24"):
            error_of(read_side.query(f"{path}?cursor={cursor}", owner), 422)
        assert read_side.query(f"{path}?limit=100", owner).status == 200
        assert read_side.query(f"{path}?limit=1", owner).status == 200


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


@pytest.mark.parametrize("raw", [b"[1]", b'["x","y"]', b'[1,"y"]', b"[]", b'["2026-01-01T00:00:00Z","a","b"]'])
def test_422_cursor_of_the_wrong_shape(read_side, uid, raw):
    owner = uid("owner")
    story, at = read_side.story(owner, privacy="public")
    read_side.read(f"{S}/{story}", owner, at)
    error_of(read_side.query(f"/api/v1/viewers/story/{story}?cursor={_b64(raw)}", owner), 422)
    error_of(read_side.query(f"{S}/archive?cursor={_b64(raw)}", owner), 422)


def test_503_with_retry_after_when_min_position_is_far_ahead(read_side):
    for kw in ({"headers": {"X-Stories-Min-Position": str(10**9)}}, {}):
        path = f"{S}/feed" if kw else f"{S}/feed?min_position={10**9}"
        # The client gives up after 15 s: an answer at all proves the wait is bounded.
        resp = read_side.query(path, "alice", **kw)
        error = error_of(resp, 503)
        assert resp.header("retry-after") and int(resp.header("retry-after")) >= 1, resp.headers
        assert error["details"]["requested"] == 10**9 and error["details"]["current"] < 10**9


def test_every_answer_carries_the_position_it_was_served_at(read_side, uid):
    owner = uid("owner")
    story, at = read_side.story(owner, privacy="public")
    for path in [
        f"{S}/feed",
        f"{S}/archive",
        f"{S}/user/{owner}",
        f"{S}/{story}",
        f"{H}/user/{owner}",
        f"{S}/{story}",
        f"/api/v1/viewers/story/{story}",
        f"/api/v1/viewers/story/{story}/answers",
        f"/api/v1/viewers/story/{story}/insights",
        "/api/v1/viewers/user/insights",
        "/api/v1/close-friends/",
        "/api/v1/close-friends",
    ]:
        resp = read_side.query(path, owner, at=at)
        assert resp.status == 200, (path, resp)
        assert int(resp.header("x-stories-position")) >= at
        plain = read_side.query(path, owner)  # without min_position too
        assert plain.status == 200 and int(plain.header("x-stories-position")) >= 0


def test_not_found_and_forbidden_answers_carry_the_position(read_side, uid):
    owner, stranger = uid("owner"), uid("stranger")
    story, at = read_side.story(owner, privacy="public")
    missing = read_side.query(f"{S}/{NO_SUCH_STORY}", stranger, at=at)
    error_of(missing, 404)
    forbidden = read_side.query(f"/api/v1/viewers/story/{story}", stranger, at=at)
    error_of(forbidden, 403)
    assert int(missing.header("x-stories-position") or -1) >= at
    assert int(forbidden.header("x-stories-position") or -1) >= at


# -- stories -----------------------------------------------------------------------------------


STICKERS = [
    {"sticker_type": "poll", "poll": {"question": "Best?", "options": [{"text": "a"}, {"text": "b"}, {"text": "c"}]}},
    {
        "sticker_type": "quiz",
        "quiz": {"question": "2+2?", "options": [{"text": "3"}, {"text": "4"}], "correct_answer_index": 1},
    },
    {"sticker_type": "question", "question": {"text": "Ask me"}},
    {"sticker_type": "countdown", "countdown": {"title": "Launch", "end_time": "2099-01-01T00:00:00Z"}},
    {"sticker_type": "slider", "slider": {"question": "How much?", "min_value": 0, "max_value": 10}},
    {"sticker_type": "link", "link": {"url": "https://example.org/", "label": "read"}},
]


def test_story_with_sticker_results(read_side, uid):
    owner, bob, carol, dave = uid("owner"), uid("bob"), uid("carol"), uid("dave")
    story, at = read_side.story(owner, privacy="public", stickers=STICKERS)
    for user, option in ((bob, 0), (carol, 0), (dave, 1)):
        read_side.interact(user, story, sticker_index=0, option_index=option)
    assert read_side.interact(bob, story, sticker_index=1, option_index=1).body["correct"] is True
    read_side.interact(carol, story, sticker_index=1, option_index=0)
    read_side.interact(bob, story, sticker_index=2, text="first question")
    read_side.interact(carol, story, sticker_index=2, text="second question")
    for user in (bob, carol, dave):
        read_side.interact(user, story, sticker_index=3, action="follow")
    read_side.interact(dave, story, sticker_index=3, action="unfollow")
    read_side.interact(bob, story, sticker_index=4, value=2)
    read_side.interact(carol, story, sticker_index=4, value=7)
    at = read_side.interact(bob, story, sticker_index=5, action="tap").position

    seen_by_bob = read_side.read(f"{S}/{story}", bob, at).body
    poll, quiz, question, countdown, slider, link = (s[s["sticker_type"]] for s in seen_by_bob["stickers"])
    assert [s["sticker_type"] for s in seen_by_bob["stickers"]] == [s["sticker_type"] for s in STICKERS]
    assert [(o["text"], o["votes"], o["percentage"]) for o in poll["options"]] == [
        ("a", 2, 66.7),
        ("b", 1, 33.3),
        ("c", 0, 0.0),
    ]
    assert poll["total_votes"] == 3 and poll["my_vote"] == 0
    assert [o["selected_count"] for o in quiz["options"]] == [1, 1]
    assert sum(round(o["percentage"] * 10) for o in quiz["options"]) == 1000
    assert quiz["total_attempts"] == 2 and quiz["correct_attempts"] == 1
    assert question["response_count"] == 2 and "responses" not in question
    assert countdown["follower_count"] == 2 and countdown["is_over"] is False and countdown["following"] is True
    assert slider["average_value"] == 4.5 and slider["response_count"] == 2 and slider["my_value"] == 2
    assert "tap_count" not in link

    seen_by_dave = read_side.read(f"{S}/{story}", dave, at).body
    d_poll, d_quiz, _, d_countdown, d_slider, _ = (s[s["sticker_type"]] for s in seen_by_dave["stickers"])
    assert d_poll["my_vote"] == 1 and d_countdown["following"] is False and d_slider["my_value"] is None
    assert d_quiz["my_answer"] is None and "correct_answer_index" not in d_quiz  # not given away before an attempt

    mine = read_side.read(f"{S}/{story}", owner, at).body
    o_question, o_link = mine["stickers"][2]["question"], mine["stickers"][5]["link"]
    assert o_question["response_count"] == 2
    assert [(r["user_id"], r["text"]) for r in o_question["responses"]] == [
        (carol, "second question"),
        (bob, "first question"),
    ]  # newest first
    assert o_link["tap_count"] == 1
    assert mine["stickers"][1]["quiz"]["correct_answer_index"] == 1
    for served in (seen_by_bob, mine):
        assert served["story_id"] == story and served["user_id"] == owner and served["privacy"] == "public"
        assert served["is_expired"] is False and served["close_friends_only"] is False
        for name in (
            "story_type",
            "media_url",
            "text_content",
            "view_count",
            "reply_count",
            "created_at",
            "expires_at",
            "viewed_by_me",
        ):
            assert name in served, name


def test_story_fields_views_and_replies(read_side, uid):
    owner, bob = uid("owner"), uid("bob")
    story, at = read_side.story(
        owner,
        story_type="image",
        media_url="https://cdn.example.org/x.jpg",
        privacy="public",
        background_color="#112233",
        duration=7,
    )
    before = read_side.read(f"{S}/{story}", bob, at).body
    assert before["viewed_by_me"] is False and before["view_count"] == 0
    assert before["story_type"] == "image" and before["media_url"] == "https://cdn.example.org/x.jpg"
    assert before["duration"] == 7 and before["background_color"] == "#112233"
    assert "allowed_viewer_ids" not in before and "hidden_from_ids" not in before  # owner-only fields
    read_side.view(bob, story)
    read_side.view(bob, story)
    at = read_side.write("POST", f"{S}/{story}/reply", bob, {"text": "nice"}, expect=201).position
    after = read_side.read(f"{S}/{story}", bob, at).body
    assert after["viewed_by_me"] is True and after["view_count"] == 2 and after["reply_count"] == 1
    mine = read_side.read(f"{S}/{story}", owner, at).body
    assert mine["unique_viewers"] == 1 and mine["viewed_by_me"] is False


def test_404_for_stories_the_caller_may_not_see(read_side, uid):
    owner, follower, stranger, hidden, listed, close = (
        uid(n) for n in ("owner", "follower", "stranger", "hidden", "listed", "close")
    )
    read_side.follow(follower, owner)
    read_side.follow(hidden, owner)
    read_side.write("POST", f"/api/v1/close-friends/{close}", owner, expect=201)
    followers_only, _ = read_side.story(owner, privacy="followers", hidden_from_ids=[hidden])
    custom, _ = read_side.story(owner, privacy="custom", allowed_viewer_ids=[listed])
    close_only, _ = read_side.story(owner, privacy="close_friends")
    deleted, _ = read_side.story(owner, privacy="public")
    at = read_side.write("DELETE", f"{S}/{deleted}", owner, expect=204).position
    expected = {
        followers_only: {owner, follower},
        custom: {owner, listed},
        close_only: {owner, close},
        deleted: set(),
    }
    everyone = [owner, follower, stranger, hidden, listed, close]
    for story, allowed in expected.items():
        for user in everyone:
            resp = read_side.query(f"{S}/{story}", user, at=at)
            if user in allowed:
                assert resp.status == 200, (story, user, resp)
            else:
                error_of(resp, 404)
    error_of(read_side.query(f"{S}/{NO_SUCH_STORY}", owner, at=at), 404)
    error_of(read_side.query(f"{S}/not-a-uuid", owner, at=at), 404)


def test_user_stories_oldest_first_and_only_visible(read_side, uid):
    owner, viewer, other = uid("owner"), uid("viewer"), uid("other")
    read_side.follow(viewer, owner)
    first, _ = read_side.story(owner, privacy="public", text_content="1")
    hidden, _ = read_side.story(owner, privacy="custom", allowed_viewer_ids=[other])
    second, _ = read_side.story(owner, privacy="followers", text_content="2")
    third, _ = read_side.story(owner, privacy="public", text_content="3")
    deleted, _ = read_side.story(owner, privacy="public")
    at = read_side.write("DELETE", f"{S}/{deleted}", owner, expect=204).position
    served = read_side.read(f"{S}/user/{owner}", viewer, at).body
    assert set(served) == {"items", "next_cursor"} and served["next_cursor"] is None
    assert all(s["user_id"] == owner for s in served["items"])
    assert ids(served["items"]) == [first, second, third]
    assert ids(read_side.items(f"{S}/user/{owner}", owner, at)) == [first, hidden, second, third]
    assert ids(read_side.items(f"{S}/user/{owner}", other, at)) == [first, hidden, third]
    assert ids(read_side.items(f"{S}/user/{owner}", owner, at, limit=1)) == [first, hidden, second, third]
    assert ids(read_side.items(f"{S}/user/{owner}", other, at, limit=1)) == [first, hidden, third]
    assert read_side.read(f"{S}/user/{uid('nobody')}", viewer, at).body == {"items": [], "next_cursor": None}


# -- the feed ------------------------------------------------------------------------------------


def test_feed_tray_order(read_side, uid):
    me = uid("me")
    a, b, c, d, e, f, g, h = (uid(n) for n in "abcdefgh")
    for author in (a, b, c, d, e, f, g):
        read_side.follow(me, author)
    read_side.write("POST", f"/api/v1/close-friends/{me}", e, expect=201)
    _a1, _ = read_side.story(a, privacy="followers")
    b1, _ = read_side.story(b, privacy="public")
    c1, _ = read_side.story(c, privacy="public")
    own, _ = read_side.story(me, privacy="public")
    d1, _ = read_side.story(d, privacy="public")
    _e1, _ = read_side.story(e, privacy="close_friends")
    _f1, _ = read_side.story(f, privacy="close_friends")  # me is not on f's list: no entry for f
    _g1, _ = read_side.story(g, privacy="public", hidden_from_ids=[me])  # hidden from me: no entry for g
    _h1, _ = read_side.story(h, privacy="public")  # not followed: no entry for h
    b2, _ = read_side.story(b, privacy="public")
    read_side.view(me, b1)
    read_side.view(me, b2)
    at = read_side.view(me, d1)

    feed = read_side.items(f"{S}/feed", me, at)
    assert read_side.items(f"{S}/feed", me, at, limit=1) == feed  # paged one entry at a time: the same tray
    order = [entry["user_id"] for entry in feed]
    # own first; unseen (newest latest_at first): e, c, a; then fully seen: b (b2 newest), d
    assert order == [me, e, c, a, b, d], order
    by = {entry["user_id"]: entry for entry in feed}
    assert ids(by[b]["stories"]) == [b1, b2] and by[b]["has_unseen"] is False
    assert by[b]["latest_at"] == by[b]["stories"][-1]["created_at"]
    assert by[d]["has_unseen"] is False and by[a]["has_unseen"] is True and by[c]["has_unseen"] is True
    assert by[e]["close_friends"] is True and by[e]["stories"][0]["close_friends_only"] is True
    assert by[a]["close_friends"] is False
    assert ids(by[me]["stories"]) == [own]
    for entry in feed:
        assert set(entry) >= {"user_id", "stories", "has_unseen", "latest_at", "close_friends"}
        assert entry["stories"] and all(s["user_id"] == entry["user_id"] for s in entry["stories"])
    unseen = [x for x in feed[1:] if x["has_unseen"]]
    seen = [x for x in feed[1:] if not x["has_unseen"]]
    assert feed[1:] == unseen + seen
    for group in (unseen, seen):
        latest = [x["latest_at"] for x in group]
        assert latest == sorted(latest, reverse=True)

    # unfollowing removes the author; deleting the only story removes the entry
    read_side.write("DELETE", f"/api/v1/following/{a}", me, expect=204)
    at = read_side.write("DELETE", f"{S}/{c1}", c, expect=204).position
    order = [x["user_id"] for x in read_side.items(f"{S}/feed", me, at)]
    assert order == [me, e, b, d], order


def test_feed_of_someone_with_nothing_to_show(read_side, uid):
    lonely = uid("lonely")
    resp = read_side.query(f"{S}/feed", lonely)
    assert resp.status == 200 and resp.body == {"items": [], "next_cursor": None}


# -- archive (expired stories; the processes run on the real clock, so expired stories are ----------
# -- appended to the shared log with a clock in the past, through the real write path) ------------


def test_archive_holds_own_expired_stories_newest_first(read_side, uid):
    owner, follower = uid("owner"), uid("follower")
    read_side.follow(follower, owner)
    live, at = read_side.story(owner, privacy="public", expires_in_hours=6)
    assert read_side.read(f"{S}/archive", owner, at).body == {"items": [], "next_cursor": None}

    older, _ = read_side.backdated_story(owner, hours_ago=9, expires_in_hours=6, privacy="public")
    newer, _ = read_side.backdated_story(owner, hours_ago=7, expires_in_hours=6, privacy="public")
    gone, _ = read_side.backdated_story(owner, hours_ago=8, expires_in_hours=6, privacy="public")
    at = read_side.write("DELETE", f"{S}/{gone}", owner, expect=204).position

    archive = read_side.read(f"{S}/archive", owner, at).body
    assert ids(archive["items"]) == [newer, older] and archive["next_cursor"] is None
    assert all(s["is_expired"] for s in archive["items"])
    page1 = read_side.read(f"{S}/archive?limit=1", owner, at).body
    assert ids(page1["items"]) == [newer] and page1["next_cursor"]
    page2 = read_side.read(f"{S}/archive?limit=1&cursor={page1['next_cursor']}", owner, at).body
    assert ids(page2["items"]) == [older] and page2["next_cursor"] is None

    # the archive is the caller's own; expired stories are gone for everyone else
    assert read_side.read(f"{S}/archive", follower, at).body["items"] == []
    error_of(read_side.query(f"{S}/{newer}", follower, at=at), 404)
    assert ids(read_side.items(f"{S}/user/{owner}", follower, at)) == [live]
    feed = read_side.items(f"{S}/feed", follower, at)
    assert [ids(x["stories"]) for x in feed if x["user_id"] == owner] == [[live]]
    assert read_side.read(f"{S}/{newer}", owner, at).body["is_expired"] is True  # the owner still sees it


# -- highlights ----------------------------------------------------------------------------------


def test_highlights_pinned_first_then_order_and_visibility(read_side, uid):
    owner, follower, stranger = uid("owner"), uid("follower"), uid("stranger")
    read_side.follow(follower, owner)
    public, _ = read_side.story(owner, privacy="public")
    followers_only, _ = read_side.story(owner, privacy="followers")
    expired, _ = read_side.backdated_story(owner, hours_ago=30, expires_in_hours=24, privacy="public")

    def create(title, story_ids, **extra):
        resp = read_side.write("POST", H, owner, {"title": title, "story_ids": story_ids, **extra}, expect=201)
        return resp.body["highlight_id"]

    h1 = create("one", [public])
    h2 = create("two", [followers_only, public])
    h3 = create("three", [expired])
    h4 = create("four", [followers_only])
    h5 = create("archived", [public], is_archived=True)
    read_side.write("PATCH", f"{H}/{h3}", owner, {"is_pinned": True})
    at = read_side.write("POST", f"{H}/reorder", owner, {"highlight_ids": [h2, h1, h4, h3, h5]}).position

    mine = read_side.items(f"{H}/user/{owner}", owner, at)
    assert [x["highlight_id"] for x in mine] == [h3, h2, h1, h4, h5]
    assert [x["highlight_id"] for x in read_side.items(f"{H}/user/{owner}", owner, at, limit=2)] == [h3, h2, h1, h4, h5]
    for x in mine:
        assert "stories" not in x and x["story_count"] == len(x["story_ids"]), x
    assert mine[0]["is_pinned"] is True and mine[1]["order_index"] == 0 and mine[2]["order_index"] == 1
    as_follower = read_side.items(f"{H}/user/{owner}", follower, at)
    assert [x["highlight_id"] for x in as_follower] == [h3, h2, h1, h4]
    assert [x["highlight_id"] for x in read_side.items(f"{H}/user/{owner}", follower, at, limit=1)] == [h3, h2, h1, h4]
    by = {x["highlight_id"]: x for x in as_follower}
    assert by[h2]["story_ids"] == [followers_only, public] and by[h2]["story_count"] == 2
    assert by[h3]["story_ids"] == [expired] and by[h3]["story_count"] == 1  # highlights outlive expiry
    assert all("stories" not in x for x in as_follower)
    as_stranger = read_side.items(f"{H}/user/{owner}", stranger, at)
    assert [x["highlight_id"] for x in as_stranger] == [h3, h2, h1]  # h4 has nothing they may see
    assert {x["highlight_id"]: x for x in as_stranger}[h2]["story_ids"] == [public]
    assert {x["highlight_id"]: x for x in as_stranger}[h2]["story_count"] == 1

    one = read_side.read(f"{H}/{h2}", follower, at).body
    assert (
        one["title"] == "two" and ids(one["stories"]["items"]) == [followers_only, public] and one["order_index"] == 0
    )
    assert one["story_ids"] == [followers_only, public] and one["story_count"] == 2
    assert one["stories"]["next_cursor"] is None
    assert ids(read_side.items(f"{H}/{h2}", follower, at, limit=1, key="stories")) == [followers_only, public]
    assert ids(read_side.read(f"{H}/{h3}", stranger, at).body["stories"]["items"]) == [expired]
    assert ids(read_side.read(f"{H}/{h2}", stranger, at).body["stories"]["items"]) == [public]
    error_of(read_side.query(f"{H}/{h4}", stranger, at=at), 404)
    error_of(read_side.query(f"{H}/{h5}", follower, at=at), 404)  # archived: the owner's alone
    assert read_side.read(f"{H}/{h5}", owner, at).body["is_archived"] is True

    # a deleted story leaves its highlights; a deleted highlight is gone
    read_side.write("DELETE", f"{S}/{public}", owner, expect=204)
    at = read_side.write("DELETE", f"{H}/{h1}", owner, expect=204).position
    as_stranger = read_side.items(f"{H}/user/{owner}", stranger, at)
    assert [x["highlight_id"] for x in as_stranger] == [h3]
    error_of(read_side.query(f"{H}/{h1}", owner, at=at), 404)
    error_of(read_side.query(f"{H}/{NO_SUCH_STORY}", owner, at=at), 404)


# -- viewers and insights ------------------------------------------------------------------------


def test_viewers_newest_first_with_pagination(read_side, uid):
    owner, u1, u2, u3, stranger = (uid(n) for n in ("owner", "u1", "u2", "u3", "stranger"))
    story, _ = read_side.story(owner, privacy="public")
    for viewer in (u1, u2, u3):
        read_side.view(viewer, story)
        time.sleep(0.01)  # distinct millisecond timestamps
    time.sleep(0.01)
    at = read_side.view(u1, story)  # u1 again: the order is by first view, so u1 stays last
    listing = read_side.read(f"/api/v1/viewers/story/{story}", owner, at).body
    assert listing["story_id"] == story and listing["total"] == 3
    assert [v["user_id"] for v in listing["items"]] == [u3, u2, u1]
    assert listing["items"][2]["view_count"] == 2 and listing["next_cursor"] is None
    again = listing["items"][2]
    assert again["first_viewed_at"] < again["viewed_at"]
    assert all(set(v) == {"user_id", "first_viewed_at", "viewed_at", "view_count"} for v in listing["items"])

    page = read_side.read(f"/api/v1/viewers/story/{story}?limit=2", owner, at).body
    assert [v["user_id"] for v in page["items"]] == [u3, u2] and page["next_cursor"]
    assert page["story_id"] == story and page["total"] == 3
    rest = read_side.read(f"/api/v1/viewers/story/{story}?limit=2&cursor={page['next_cursor']}", owner, at).body
    assert [v["user_id"] for v in rest["items"]] == [u1] and rest["next_cursor"] is None

    # someone else's story they can see: 403; one they cannot see: 404
    error_of(read_side.query(f"/api/v1/viewers/story/{story}", stranger, at=at), 403)
    error_of(read_side.query(f"/api/v1/viewers/story/{story}/insights", u1, at=at), 403)
    secret, at = read_side.story(owner, privacy="custom", allowed_viewer_ids=[u1])
    error_of(read_side.query(f"/api/v1/viewers/story/{secret}", stranger, at=at), 404)
    error_of(read_side.query(f"/api/v1/viewers/story/{secret}/insights", stranger, at=at), 404)
    error_of(read_side.query(f"/api/v1/viewers/story/{secret}", u1, at=at), 403)
    error_of(read_side.query(f"/api/v1/viewers/story/{NO_SUCH_STORY}", owner, at=at), 404)


def test_story_and_user_insights(read_side, uid):
    owner, u1, u2, u3, u4 = (uid(n) for n in ("owner", "u1", "u2", "u3", "u4"))
    for user in (u1, u2, u3, u4):
        read_side.follow(user, owner)
    poll = STICKERS[0]
    story, _ = read_side.story(owner, privacy="followers", stickers=[poll, STICKERS[2]])
    other, _ = read_side.story(owner, privacy="public")
    hours = set()
    for viewer in (u1, u1, u2, u3):
        read_side.view(viewer, story)
        hours.add(datetime.now(UTC).hour)
    read_side.view(u4, other)
    hours.add(datetime.now(UTC).hour)
    read_side.write("POST", f"{S}/{story}/reply", u1, {"text": "hey"}, expect=201)
    read_side.interact(u1, story, sticker_index=0, option_index=2)
    read_side.interact(u2, story, sticker_index=0, option_index=0)
    at = read_side.interact(u3, story, sticker_index=1, text="q?").position

    insights = read_side.read(f"/api/v1/viewers/story/{story}/insights", owner, at).body
    assert insights["total_views"] == 4 and insights["unique_viewers"] == 3
    assert insights["reach_percentage"] == 75.0  # 3 of 4 followers
    assert insights["replies"] == 1
    assert insights["sticker_interactions"] == {"sticker_0_poll": 2, "sticker_1_question": 1}
    assert insights["total_interactions"] == 4  # 2 votes + 1 answer + 1 reply
    assert insights["interaction_rate"] == 133.3  # interactions per unique viewer, in percent
    assert set(insights["views_by_hour"]) == {str(h) for h in range(24)}
    assert sum(insights["views_by_hour"].values()) == 4
    assert insights["peak_viewing_hour"] in hours

    totals = read_side.read("/api/v1/viewers/user/insights", owner, at).body
    assert totals["user_id"] == owner and totals["story_count"] == 2
    assert totals["total_views"] == 5 and totals["unique_viewers"] == 4 and totals["replies"] == 1
    assert totals["total_interactions"] == 4 and totals["interaction_rate"] == 100.0
    assert totals["sticker_interactions"] == {"poll": 2, "question": 1}
    assert sum(totals["views_by_hour"].values()) == 5
    nobody = read_side.read("/api/v1/viewers/user/insights", u4, at).body
    assert nobody["story_count"] == 0 and nobody["total_views"] == 0 and nobody["peak_viewing_hour"] is None
    # unique_viewers counts people, not (person, story) pairs: u1 seeing the second story too
    # adds views, not a viewer (issue 11: it summed each story's uniques)
    at = read_side.view(u1, other)
    totals = read_side.read("/api/v1/viewers/user/insights", owner, at).body
    assert totals["total_views"] == 6 and totals["unique_viewers"] == 4


# -- close friends -------------------------------------------------------------------------------


def test_close_friends_with_is_mutual(read_side, uid):
    owner, mutual, one_way, follows_me = uid("owner"), uid("mutual"), uid("oneway"), uid("followsme")
    read_side.follow(owner, mutual)
    read_side.follow(mutual, owner)
    read_side.follow(owner, one_way)
    read_side.follow(follows_me, owner)
    for friend in (mutual, one_way, follows_me):
        read_side.write("POST", f"/api/v1/close-friends/{friend}", owner, expect=201)
        time.sleep(0.01)
    at = read_side.follow(uid("someone"), owner)
    listed = read_side.items("/api/v1/close-friends/", owner, at)
    assert [(x["user_id"], x["is_mutual"]) for x in listed] == [
        (follows_me, False),
        (one_way, False),
        (mutual, True),
    ]  # newest first
    assert read_side.items("/api/v1/close-friends", owner, at, limit=1) == listed  # without the slash, paged
    assert all(x["added_at"] for x in listed)
    read_side.write("DELETE", f"/api/v1/close-friends/{one_way}", owner, expect=204)
    at = read_side.follow(one_way, owner)
    listed = read_side.items("/api/v1/close-friends/", owner, at)
    assert [(x["user_id"], x["is_mutual"]) for x in listed] == [(follows_me, False), (mutual, True)]
    assert read_side.read("/api/v1/close-friends/", mutual, at).body == {"items": [], "next_cursor": None}


def test_feed_never_gives_a_quiz_answer_away(read_side, uid):
    owner, follower = uid("owner"), uid("follower")
    read_side.follow(follower, owner)
    _story, at = read_side.story(owner, privacy="public", stickers=STICKERS)
    theirs = read_side.items(f"{S}/feed", follower, at)
    quiz = next(s["quiz"] for s in theirs[0]["stories"][0]["stickers"] if s["sticker_type"] == "quiz")
    assert "correct_answer_index" not in quiz and [o["text"] for o in quiz["options"]] == ["3", "4"]
    mine = read_side.items(f"{S}/feed", owner, at)
    own_quiz = next(s["quiz"] for s in mine[0]["stories"][0]["stickers"] if s["sticker_type"] == "quiz")
    assert own_quiz["correct_answer_index"] == 1
