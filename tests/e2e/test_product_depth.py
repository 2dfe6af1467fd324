"""Issue 13 ("Product depth") end to end: navigation insights, reshares, edits, mute and the views
timeline, on real processes (command API + projector + query API), both profiles. Every rejected
request is checked against ``stories export`` to have stored nothing."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.e2e.conftest import STORIES
from tests.e2e.read_side import ReadSide, cleanup, launch

pytestmark = pytest.mark.timeout(240)

S = "/api/v1/stories"
MUTED = "/api/v1/muted"
POLL = {"sticker_type": "poll", "poll": {"question": "Tea?", "options": [{"text": "yes"}, {"text": "no"}]}}
SLIDER = {"sticker_type": "slider", "slider": {"question": "Hot?", "emoji": "🔥", "min_value": 0, "max_value": 10}}
NAV_KEYS = {"tap_forward", "tap_back", "exit", "swipe_forward"}


@pytest.fixture(scope="module")
def entativa_side(tmp_path_factory: pytest.TempPathFactory, mongodb_url: str, redis_url: str) -> Iterator[ReadSide]:
    side = launch(tmp_path_factory.mktemp("entativa-depth"), mongodb_url, redis_url, platform="entativa")
    try:
        yield side
    finally:
        side.stop()
        cleanup(side)


# -- helpers --------------------------------------------------------------------------------------


def export_count(side: ReadSide) -> int:
    out = subprocess.run([STORIES, "export"], env=side.env, capture_output=True, timeout=60, cwd=side.data_dir)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    return sum(1 for line in out.stdout.decode().splitlines() if line.strip())


def export_events(side: ReadSide) -> list[dict]:
    out = subprocess.run([STORIES, "export"], env=side.env, capture_output=True, timeout=60, cwd=side.data_dir)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    return [json.loads(line) for line in out.stdout.decode().splitlines() if line.strip()]


class Rejections:
    """Requests that must fail; a run of them is checked at the end to have stored nothing."""

    def __init__(self, side: ReadSide) -> None:
        self.side = side
        self.before = export_count(side)
        self.sent: list[str] = []

    def __call__(
        self,
        status: int,
        method: str,
        path: str,
        user: str | None,
        body: Any = None,
        code: str | None = None,
        **kw: Any,
    ):
        resp = (
            self.side.command(method, path, user, body, **kw)
            if body is not None
            else self.side.command(method, path, user, **kw)
        )
        assert resp.status == status, (method, path, resp)
        assert (resp.header("content-type") or "").startswith("application/json"), resp.headers
        error = resp.body["error"]
        assert isinstance(error["code"], str) and error["code"] and isinstance(error["message"], str), resp
        if code is not None:
            assert error["code"] == code, (method, path, resp)
        self.sent.append(f"{method} {path} -> {status}")
        return resp

    def check(self) -> None:
        after = export_count(self.side)
        assert after == self.before, f"{after - self.before} event(s) stored by rejected requests: {self.sent}"


def navigate(side: ReadSide, user: str, story: str, action: str) -> Any:
    resp = side.write("POST", f"{S}/{story}/navigate", user, {"action": action}, expect=202)
    assert set(resp.body) == {"story_id", "counted", "position"}, resp
    assert resp.body["story_id"] == story
    return resp


def insights(side: ReadSide, owner: str, story: str, at: int) -> dict:
    return side.read(f"/api/v1/viewers/story/{story}/insights", owner, at).body


def feed_authors(side: ReadSide, user: str, at: int) -> list[str]:
    return [entry["user_id"] for entry in side.items(f"{S}/feed", user, at)]


def feed_story(side: ReadSide, user: str, at: int, story: str) -> dict | None:
    for entry in side.items(f"{S}/feed", user, at):
        for s in entry["stories"]:
            if s["story_id"] == story:
                return s
    return None


def backdated(side: ReadSide, owner: str, hours_ago: float, **body: Any) -> tuple[str, int]:
    return side.backdated_story(owner, hours_ago, **body)


def friends(side: ReadSide, a: str, b: str) -> int:
    side.follow(a, b)
    return side.follow(b, a)


# -- navigation -----------------------------------------------------------------------------------


def test_navigation_last_one_stands_and_completion_rate(read_side, uid):
    side = read_side
    owner = uid("owner")
    v1, v2, v3, v4, v5, v6 = (uid(f"v{i}") for i in range(1, 7))
    story, _ = side.story(owner, privacy="public")
    for v in (v1, v2, v3, v4, v6):
        side.view(v, story)
    side.view(v1, story)  # a repeat view: still one viewer
    resp = navigate(side, v1, story, "tap_forward")
    assert resp.body["counted"] is True
    navigate(side, v1, story, "exit")  # v1: exit stands
    navigate(side, v2, story, "exit")
    navigate(side, v2, story, "tap_back")  # v2: tap_back stands
    navigate(side, v3, story, "swipe_forward")
    navigate(side, v6, story, "tap_forward")
    # v4 viewed without navigating; v5 navigates without having viewed: counts nowhere
    assert navigate(side, v5, story, "exit").body["counted"] is True
    before = export_count(side)
    own = navigate(side, owner, story, "exit")
    assert own.body["counted"] is False
    assert export_count(side) == before, "the owner's own navigation stored something"
    at = navigate(side, v3, story, "swipe_forward").position  # the same again: still one

    out = insights(side, owner, story, at)
    assert out["unique_viewers"] == 5 and out["total_views"] == 6
    assert out["navigation"] == {"tap_forward": 1, "tap_back": 1, "exit": 1, "swipe_forward": 1}, out
    assert out["completion_rate"] == 60.0, out  # (5 - 2) / 5
    assert out["shares"] == 0
    assert isinstance(out["views_timeline"], list) and len(out["views_timeline"]) == 24
    assert out["views_timeline"][0] == 6 and sum(out["views_timeline"]) == 6

    # one decimal: 3 viewers, one left => 66.7
    s2, _ = side.story(owner, privacy="public")
    for v in (v1, v2, v3):
        side.view(v, s2)
    at = navigate(side, v2, s2, "swipe_forward").position
    out2 = insights(side, owner, s2, at)
    assert out2["completion_rate"] == 66.7, out2
    assert out2["navigation"]["swipe_forward"] == 1

    # user insights aggregate both stories
    user = side.read("/api/v1/viewers/user/insights", owner, at).body
    assert user["navigation"] == {"tap_forward": 1, "tap_back": 1, "exit": 1, "swipe_forward": 2}, user
    assert user["completion_rate"] == 62.5, user  # (8 story viewers - 3) / 8
    assert len(user["views_timeline"]) == 24 and user["views_timeline"][0] == 9
    assert user["shares"] == 0

    # a story nobody viewed: 0.0
    s3, at = side.story(owner, privacy="public")
    out3 = insights(side, owner, s3, at)
    assert out3["completion_rate"] == 0.0 and out3["navigation"] == dict.fromkeys(NAV_KEYS, 0)


def test_navigation_rejections_store_nothing(read_side, uid):
    side = read_side
    owner, follower, stranger = uid("owner"), uid("follower"), uid("stranger")
    side.follow(follower, owner)
    private, _ = side.story(owner, privacy="followers")
    public, _ = side.story(owner, privacy="public")
    old, _ = backdated(side, owner, 25, privacy="public")  # past its 24 h, not swept
    gone, _ = side.story(owner, privacy="public")
    side.write("DELETE", f"{S}/{gone}", owner, expect=204)
    rejected = Rejections(side)
    rejected(404, "POST", f"{S}/{private}/navigate", stranger, {"action": "exit"})
    rejected(404, "POST", f"{S}/{old}/navigate", follower, {"action": "exit"})
    rejected(409, "POST", f"{S}/{old}/navigate", owner, {"action": "exit"}, code="story_expired")
    rejected(404, "POST", f"{S}/{gone}/navigate", follower, {"action": "exit"})
    rejected(404, "POST", f"{S}/7f1c1e0e-0000-4000-8000-000000000000/navigate", follower, {"action": "exit"})
    rejected(422, "POST", f"{S}/{public}/navigate", follower, {"action": "skip"})
    rejected(422, "POST", f"{S}/{public}/navigate", follower, {})
    rejected(422, "POST", f"{S}/{public}/navigate", follower, {"action": "exit", "extra": 1})
    rejected(401, "POST", f"{S}/{public}/navigate", None, {"action": "exit"})
    resp = side.command("POST", f"{S}/{public}/navigate", follower)  # no body at all
    assert resp.status in (400, 422), resp
    rejected.check()
    # the follower can navigate the followers-only story
    assert navigate(side, follower, private, "tap_back").body["counted"] is True


def test_views_timeline_counts_hours_since_posting(read_side, uid):
    side = read_side
    owner, viewer = uid("owner"), uid("viewer")
    story, _ = backdated(side, owner, 2.5, privacy="public", expires_in_hours=6)
    side.view(viewer, story)
    at = side.view(uid("other"), story)
    out = insights(side, owner, story, at)
    assert len(out["views_timeline"]) == 6, out
    assert out["views_timeline"] == [0, 0, 2, 0, 0, 0], out
    long, _ = side.story(owner, privacy="public", expires_in_hours=48)
    at = side.view(viewer, long)
    out = insights(side, owner, long, at)
    assert len(out["views_timeline"]) == 48 and out["views_timeline"][0] == 1
    user = side.read("/api/v1/viewers/user/insights", owner, at).body
    assert len(user["views_timeline"]) == 48
    assert user["views_timeline"][:3] == [1, 0, 2], user["views_timeline"][:6]


# -- reshares -------------------------------------------------------------------------------------


def test_share_copies_the_story_counts_shares_and_survives_the_original(read_side, uid):
    side = read_side
    owner, sharer, other, fan = uid("owner"), uid("sharer"), uid("other"), uid("fan")
    side.follow(fan, sharer)
    original, _ = side.story(
        owner, privacy="public", text_content="look", background_color="#112233", stickers=[POLL], duration=7.0
    )
    resp = side.write("POST", f"{S}/{original}/share", sharer, expect=201)  # no body at all
    assert set(resp.body) == {"story_id", "expires_at", "reshared_from", "position"}, resp
    reshare = resp.body["story_id"]
    assert resp.body["reshared_from"] == {"story_id": original, "user_id": owner}
    expires = datetime.fromisoformat(resp.body["expires_at"])
    assert timedelta(hours=23, minutes=58) < expires - datetime.now(UTC) <= timedelta(hours=24)
    resp2 = side.write("POST", f"{S}/{original}/share", other, {"privacy": "public", "expires_in_hours": 6}, expect=201)
    assert datetime.fromisoformat(resp2.body["expires_at"]) - datetime.now(UTC) <= timedelta(hours=6)
    at = resp2.position

    served = side.read(f"{S}/{reshare}", fan, at).body
    assert served["user_id"] == sharer and served["reshared_from"] == {"story_id": original, "user_id": owner}
    assert served["text_content"] == "look" and served["background_color"] == "#112233"
    assert served["duration"] == 7.0 and served["stickers"] == []
    assert served["privacy"] == "followers"  # the sharer's own audience by default
    assert served["edited"] is False and served["edited_at"] is None
    assert side.read(f"{S}/{original}", fan, at).body["reshared_from"] is None
    assert feed_story(side, fan, at, reshare) is not None
    mine = side.items(f"{S}/user/{sharer}", sharer, at)
    assert [s["story_id"] for s in mine] == [reshare] and mine[0]["reshared_from"]["story_id"] == original
    side.read(f"{S}/{reshare}", uid("stranger"), at, expect=404)  # followers only

    out = insights(side, owner, original, at)
    assert out["shares"] == 2, out
    assert side.read("/api/v1/viewers/user/insights", owner, at).body["shares"] == 2
    assert insights(side, sharer, reshare, at)["shares"] == 0

    # a reshare of a reshare names its immediate original
    side.write("POST", f"{S}/{resp2.body['story_id']}/share", fan, expect=201)

    # deleting the original leaves the reshares standing, still naming it
    at = side.write("DELETE", f"{S}/{original}", owner, expect=204).position
    side.read(f"{S}/{original}", fan, at, expect=404)
    still = side.read(f"{S}/{reshare}", fan, at).body
    assert still["reshared_from"] == {"story_id": original, "user_id": owner}
    assert still["text_content"] == "look"
    assert feed_story(side, fan, at, reshare) is not None


def test_share_of_an_expired_original_leaves_the_reshare(read_side, uid):
    side = read_side
    owner, sharer = uid("owner"), uid("sharer")
    story, _ = backdated(side, owner, 6 - 12 / 3600, privacy="public", expires_in_hours=6)  # 12 s to live
    resp = side.write("POST", f"{S}/{story}/share", sharer, expect=201)
    reshare = resp.body["story_id"]
    time.sleep(13)
    rejected = Rejections(side)
    rejected(404, "POST", f"{S}/{story}/share", uid("late"))
    rejected(409, "POST", f"{S}/{story}/share", owner, code="story_expired")
    rejected.check()
    served = side.read(f"{S}/{reshare}", sharer, resp.position).body
    assert served["reshared_from"] == {"story_id": story, "user_id": owner} and served["is_expired"] is False


def test_share_rejections_store_nothing(read_side, uid):
    side = read_side
    owner, follower, stranger = uid("owner"), uid("follower"), uid("stranger")
    side.follow(follower, owner)
    followers_only, _ = side.story(owner, privacy="followers")
    closed, _ = side.story(owner, privacy="public", allow_sharing=False)
    hidden, _ = side.story(owner, privacy="public", hidden_from_ids=[stranger])
    public, _ = side.story(owner, privacy="public")
    old, _ = backdated(side, owner, 25, privacy="public")
    gone, _ = side.story(owner, privacy="public")
    side.write("DELETE", f"{S}/{gone}", owner, expect=204)
    rejected = Rejections(side)
    rejected(403, "POST", f"{S}/{followers_only}/share", follower, code="not_shareable")
    rejected(404, "POST", f"{S}/{followers_only}/share", stranger)
    rejected(403, "POST", f"{S}/{closed}/share", stranger, code="sharing_disabled")
    rejected(404, "POST", f"{S}/{hidden}/share", stranger)
    rejected(404, "POST", f"{S}/{old}/share", follower)
    rejected(409, "POST", f"{S}/{old}/share", owner, code="story_expired")
    rejected(404, "POST", f"{S}/{gone}/share", follower)
    rejected(404, "POST", f"{S}/7f1c1e0e-0000-4000-8000-000000000000/share", follower)
    rejected(422, "POST", f"{S}/{public}/share", follower, {"privacy": "everyone"})
    rejected(422, "POST", f"{S}/{public}/share", follower, {"privacy": "friends"})  # not on vignette
    rejected(422, "POST", f"{S}/{public}/share", follower, {"expires_in_hours": 5})
    rejected(422, "POST", f"{S}/{public}/share", follower, {"text_content": "mine"})
    rejected(422, "POST", f"{S}/{public}/share", follower, {"privacy": "custom"})  # custom needs viewers
    rejected(422, "POST", f"{S}/{public}/share", follower, {"hidden_from_ids": [follower]})
    rejected(401, "POST", f"{S}/{public}/share", None)
    rejected.check()


def test_share_takes_a_live_story_slot(tmp_path, mongodb_url, redis_url, uid):
    side = launch(tmp_path / "limits", mongodb_url, redis_url, limit_live_stories=1, limit_muted=1)
    try:
        owner, sharer = uid("owner"), uid("sharer")
        story, _ = side.story(owner, privacy="public")
        side.story(sharer, privacy="public")
        rejected = Rejections(side)
        rejected(409, "POST", f"{S}/{story}/share", sharer, code="limit_reached")
        rejected.check()
        # mute limit on the same stack
        side.write("PUT", f"{MUTED}/{uid('a')}", sharer, expect=200)
        rejected = Rejections(side)
        rejected(409, "PUT", f"{MUTED}/{uid('b')}", sharer, code="limit_reached")
        rejected.check()
        side.write("PUT", f"{MUTED}/{uid('a')}", sharer, expect=200)  # the same again: fine at the limit
    finally:
        side.stop()
        cleanup(side)


def test_entativa_share_needs_a_public_story_and_uses_friends(entativa_side, uid):
    side = entativa_side
    owner, friend, fan, friend_of_friend = uid("owner"), uid("friend"), uid("fan"), uid("fof")
    friends(side, owner, friend)
    friends(side, friend, friend_of_friend)
    side.follow(fan, owner)  # one way: not a friend
    friends_only, _ = side.story(owner)  # entativa's default: friends
    public, _ = side.story(owner, privacy="public")
    side.view(friend, friends_only)
    assert navigate(side, friend, friends_only, "exit").body["counted"] is True
    rejected = Rejections(side)
    rejected(404, "POST", f"{S}/{friends_only}/navigate", fan, {"action": "exit"})  # a follower is not a friend
    rejected(403, "POST", f"{S}/{friends_only}/share", friend, code="not_shareable")
    rejected(404, "POST", f"{S}/{friends_only}/share", fan)
    rejected(422, "POST", f"{S}/{public}/share", friend, {"privacy": "followers"})  # not on entativa
    rejected.check()
    resp = side.write("POST", f"{S}/{public}/share", friend, expect=201)
    reshare, at = resp.body["story_id"], resp.position
    served = side.read(f"{S}/{reshare}", friend_of_friend, at).body
    assert served["privacy"] == "friends" and served["reshared_from"] == {"story_id": public, "user_id": owner}
    side.read(f"{S}/{reshare}", fan, at, expect=404)  # not the sharer's friend
    assert feed_story(side, friend_of_friend, at, reshare) is not None
    assert insights(side, owner, public, at)["shares"] == 1


# -- edits ----------------------------------------------------------------------------------------


def test_edit_is_served_everywhere_with_edited_at(read_side, uid):
    side = read_side
    owner, follower = uid("owner"), uid("follower")
    side.follow(follower, owner)
    story, at = side.story(owner, privacy="followers", text_content="first", stickers=[POLL, SLIDER])
    fresh = side.read(f"{S}/{story}", follower, at).body
    assert fresh["edited"] is False and fresh["edited_at"] is None and fresh["reshared_from"] is None
    resp = side.write(
        "PATCH", f"{S}/{story}", owner, {"text_content": "second", "background_color": "#AABBCC"}, expect=200
    )
    assert set(resp.body) == {"story_id", "edited", "edited_at", "position"}, resp
    assert resp.body["edited"] is True and resp.body["story_id"] == story
    edited_at = resp.body["edited_at"]
    assert abs(datetime.fromisoformat(edited_at) - datetime.now(UTC)) < timedelta(minutes=1)
    at = resp.position
    for who in (owner, follower):
        served = side.read(f"{S}/{story}", who, at).body
        assert served["text_content"] == "second" and served["background_color"] == "#AABBCC", served
        assert served["edited"] is True and served["edited_at"] == edited_at
        assert [s["sticker_type"] for s in served["stickers"]] == ["poll", "slider"]
    in_feed = feed_story(side, follower, at, story)
    assert in_feed is not None and in_feed["text_content"] == "second" and in_feed["edited_at"] == edited_at
    [listed] = side.items(f"{S}/user/{owner}", follower, at)
    assert listed["text_content"] == "second" and listed["edited"] is True and listed["edited_at"] == edited_at

    # highlight: the edited content
    h = side.write("POST", "/api/v1/highlights", owner, {"title": "h", "story_ids": [story]}, expect=201)
    hl = side.read(f"/api/v1/highlights/{h.body['highlight_id']}", follower, h.position).body
    [in_hl] = hl["stories"]["items"]
    assert in_hl["text_content"] == "second" and in_hl["edited_at"] == edited_at

    # null removes a background
    at = side.write("PATCH", f"{S}/{story}", owner, {"background_color": None}, expect=200).position
    assert side.read(f"{S}/{story}", follower, at).body["background_color"] is None

    # the same content again changes nothing and stores nothing
    before = export_count(side)
    same = side.write("PATCH", f"{S}/{story}", owner, {"text_content": "second"}, expect=200)
    assert same.body["edited"] is True
    assert export_count(side) == before, "a no-op edit stored an event"

    # story-at lists the versions
    out = subprocess.run(
        [STORIES, "story-at", story, "--at", datetime.now(UTC).isoformat()],
        env=side.env,
        capture_output=True,
        timeout=60,
        cwd=side.data_dir,
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    doc = json.loads(out.stdout)
    versions = doc["versions"]
    assert [v["version"] for v in versions] == [1, 2, 3], versions
    assert versions[0]["text_content"] == "first" and versions[1]["text_content"] == "second"
    assert set(versions[1]["changed"]) == {"text_content", "background_color"}
    assert versions[2]["changed"] == ["background_color"] and versions[2]["background_color"] is None
    assert doc["text_content"] == "second" and doc["edited"] is True


def test_sticker_payload_frozen_after_a_vote_geometry_still_free(read_side, uid):
    side = read_side
    owner, voter = uid("owner"), uid("voter")
    story, _ = side.story(owner, privacy="public", stickers=[POLL, SLIDER])
    # before anyone answered, the payload can change
    new_poll = {"question": "Coffee?", "options": [{"text": "a"}, {"text": "b"}, {"text": "c"}]}
    at = side.write(
        "PATCH", f"{S}/{story}", owner, {"stickers": [{"sticker_index": 0, "poll": new_poll}]}, expect=200
    ).position
    served = side.read(f"{S}/{story}", voter, at).body
    assert served["stickers"][0]["poll"]["question"] == "Coffee?"
    assert [o["text"] for o in served["stickers"][0]["poll"]["options"]] == ["a", "b", "c"]
    side.interact(voter, story, sticker_index=0, option_index=2)
    rejected = Rejections(side)
    rejected(
        409,
        "PATCH",
        f"{S}/{story}",
        owner,
        {"stickers": [{"sticker_index": 0, "poll": {"question": "Other?", "options": [{"text": "x"}, {"text": "y"}]}}]},
        code="sticker_answered",
    )
    rejected(
        409,
        "PATCH",
        f"{S}/{story}",
        owner,  # with geometry too: the whole edit is refused
        {"text_content": "x", "stickers": [{"sticker_index": 0, "x": 0.2, "poll": new_poll | {"question": "Q"}}]},
        code="sticker_answered",
    )
    rejected.check()
    resp = side.write(
        "PATCH",
        f"{S}/{story}",
        owner,
        {
            "stickers": [
                {"sticker_index": 0, "x": 0.25, "y": 0.75, "rotation": 30.0},
                {"sticker_index": 1, "slider": {"question": "Cold?", "emoji": "🧊", "min_value": -5, "max_value": 5}},
            ]
        },
        expect=200,
    )
    served = side.read(f"{S}/{story}", voter, resp.position).body
    poll = served["stickers"][0]
    assert (poll["x"], poll["y"], poll["rotation"]) == (0.25, 0.75, 30.0)
    assert poll["poll"]["question"] == "Coffee?" and poll["poll"]["total_votes"] == 1
    assert poll["poll"]["my_vote"] == 2
    assert served["stickers"][1]["slider"]["question"] == "Cold?"
    # same payload as stands, on the answered sticker: allowed (nothing changes)
    side.write("PATCH", f"{S}/{story}", owner, {"stickers": [{"sticker_index": 0, "poll": new_poll}]}, expect=200)


def test_edit_rejections_store_nothing(read_side, uid):
    side = read_side
    owner, follower, stranger = uid("owner"), uid("follower"), uid("stranger")
    side.follow(follower, owner)
    story, _ = side.story(owner, privacy="followers", stickers=[POLL])
    image, _ = side.story(owner, story_type="image", media_url="https://cdn.example/a.jpg", text_content=None)
    old, _ = backdated(side, owner, 25, privacy="public")
    gone, _ = side.story(owner, privacy="public")
    side.write("DELETE", f"{S}/{gone}", owner, expect=204)
    rejected = Rejections(side)
    rejected(422, "PATCH", f"{S}/{story}", owner, {})
    rejected(422, "PATCH", f"{S}/{story}", owner, {"text_content": None})  # a text story keeps its text
    rejected(422, "PATCH", f"{S}/{story}", owner, {"text_content": "   "})
    rejected(422, "PATCH", f"{S}/{story}", owner, {"background_color": "red"})
    rejected(422, "PATCH", f"{S}/{story}", owner, {"background_gradient": ["#000000"]})
    rejected(422, "PATCH", f"{S}/{story}", owner, {"stickers": None})
    rejected(422, "PATCH", f"{S}/{story}", owner, {"story_type": "image"})
    rejected(422, "PATCH", f"{S}/{story}", owner, {"privacy": "public"})
    rejected(
        422,
        "PATCH",
        f"{S}/{story}",
        owner,
        {
            "stickers": [
                {
                    "sticker_index": 0,
                    "quiz": {"question": "q", "options": [{"text": "a"}, {"text": "b"}], "correct_answer_index": 0},
                }
            ]
        },
    )
    rejected(422, "PATCH", f"{S}/{story}", owner, {"stickers": [{"sticker_index": 3, "x": 0.1}]})
    rejected(422, "PATCH", f"{S}/{story}", owner, {"stickers": [{"sticker_index": 0, "x": 1.5}]})
    rejected(
        422,
        "PATCH",
        f"{S}/{story}",
        owner,
        {"stickers": [{"sticker_index": 0, "x": 0.1}, {"sticker_index": 0, "y": 0.1}]},
    )
    rejected(422, "PATCH", f"{S}/{story}", owner, {"stickers": [{"sticker_index": 0, "sticker_type": "quiz"}]})
    rejected(422, "PATCH", f"{S}/{story}", owner, {"text_content": "x" * 2201})
    rejected(403, "PATCH", f"{S}/{story}", follower, {"text_content": "mine"}, code="not_owner")
    rejected(404, "PATCH", f"{S}/{story}", stranger, {"text_content": "mine"})
    rejected(409, "PATCH", f"{S}/{old}", owner, {"text_content": "late"}, code="story_expired")
    rejected(404, "PATCH", f"{S}/{old}", follower, {"text_content": "late"})
    rejected(404, "PATCH", f"{S}/{gone}", owner, {"text_content": "late"})
    rejected(404, "PATCH", f"{S}/{gone}", follower, {"text_content": "late"})
    rejected(404, "PATCH", f"{S}/7f1c1e0e-0000-4000-8000-000000000000", owner, {"text_content": "x"})
    rejected(401, "PATCH", f"{S}/{story}", None, {"text_content": "x"})
    rejected.check()
    # an image story may lose its caption
    at = side.write("PATCH", f"{S}/{image}", owner, {"text_content": "caption"}, expect=200).position
    at = side.write("PATCH", f"{S}/{image}", owner, {"text_content": None}, expect=200).position
    assert side.read(f"{S}/{image}", follower, at).body["text_content"] is None


def test_edit_before_expiry_shows_in_the_archive(read_side, uid):
    side = read_side
    owner = uid("owner")
    story, _ = backdated(side, owner, 6 - 10 / 3600, privacy="public", expires_in_hours=6)  # 10 s to live
    resp = side.write("PATCH", f"{S}/{story}", owner, {"text_content": "last words"}, expect=200)
    time.sleep(11)
    [archived] = side.items(f"{S}/archive", owner, resp.position)
    assert archived["story_id"] == story and archived["text_content"] == "last words"
    assert archived["edited"] is True and archived["edited_at"] == resp.body["edited_at"]


def read_sse(side: ReadSide, path: str, user: str, until, timeout: float = 15.0) -> list[tuple[str, dict]]:
    """Read server-sent events until ``until(events)`` holds (or the timeout)."""
    conn = http.client.HTTPConnection("127.0.0.1", side.query_port, timeout=timeout)
    events: list[tuple[str, dict]] = []
    try:
        conn.request(
            "GET", path, headers={"Authorization": f"Bearer {side.token(user)}", "Accept": "text/event-stream"}
        )
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        name, data = None, []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = resp.fp.readline().decode().rstrip("\r\n")
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                events.append((name or "message", json.loads("\n".join(data))))
                name, data = None, []
                if until(events):
                    return events
        return events
    finally:
        conn.close()


def test_live_stream_sends_the_edit(read_side, uid):
    import threading

    side = read_side
    owner, follower = uid("owner"), uid("follower")
    story, at = side.story(owner, privacy="public", text_content="before")
    side.read(f"{S}/{story}", follower, at)
    result: list = []

    def listen():
        result.extend(
            read_sse(
                side, f"{S}/{story}/live", follower, lambda evs: any(e[1].get("text_content") == "after" for e in evs)
            )
        )

    t = threading.Thread(target=listen)
    t.start()
    time.sleep(1.5)
    side.write("PATCH", f"{S}/{story}", owner, {"text_content": "after"}, expect=200)
    t.join(20)
    stories = [e for name, e in result if name == "story"]
    assert stories and stories[0]["text_content"] == "before", result
    assert stories[-1]["text_content"] == "after" and stories[-1]["edited"] is True, result


# -- mute -----------------------------------------------------------------------------------------


def test_mute_hides_from_the_feed_only_and_unmute_brings_back(read_side, uid):
    side = read_side
    me, a, b, c = uid("me"), uid("a"), uid("b"), uid("c")
    side.follow(me, a)
    side.follow(me, b)
    a1, _ = side.story(a, privacy="followers")
    _b1, at = side.story(b, privacy="public")
    assert set(feed_authors(side, me, at)) == {a, b}
    at = side.view(me, a1)
    # what the author sees before
    a_story_before = side.read(f"{S}/{a1}", a, at).body
    a_insights_before = side.read("/api/v1/viewers/user/insights", a, at).body
    a_story_insights_before = insights(side, a, a1, at)
    a_feed_before = side.items(f"{S}/feed", a, at)

    resp = side.write("PUT", f"{MUTED}/{a}", me, expect=200)
    assert resp.body == {"user_id": a, "muted": True, "position": resp.position}
    before = export_count(side)
    again = side.write("PUT", f"{MUTED}/{a}", me, expect=200)  # idempotent
    assert again.body["muted"] is True and again.body["user_id"] == a
    assert export_count(side) == before, "muting twice stored an event"
    at = max(resp.position, again.position)
    assert feed_authors(side, me, at) == [b]
    # still viewable directly, still followed (a's followers-only story), viewable and viewed
    assert side.read(f"{S}/{a1}", me, at).body["story_id"] == a1
    assert [s["story_id"] for s in side.items(f"{S}/user/{a}", me, at)] == [a1]

    # the author sees nothing of it
    at = side.write("PUT", f"{MUTED}/{c}", me, expect=200).position
    assert side.items(MUTED, a, at) == []
    a_story_after = side.read(f"{S}/{a1}", a, at).body
    assert a_story_after == a_story_before
    a_insights_after = side.read("/api/v1/viewers/user/insights", a, at).body
    assert a_insights_after == a_insights_before
    assert insights(side, a, a1, at) == a_story_insights_before  # audience_size too: still a follower
    assert not any("mute" in k for k in a_insights_after)
    assert side.items(f"{S}/feed", a, at) == a_feed_before
    viewers = side.items(f"/api/v1/viewers/story/{a1}", a, at)
    assert [v["user_id"] for v in viewers] == [me] and not any("mute" in json.dumps(v) for v in viewers)

    # GET /muted: latest first, paged
    at = side.write("PUT", f"{MUTED}/{b}", me, expect=200).position
    listed = side.items(MUTED, me, at)
    assert [m["user_id"] for m in listed] == [b, c, a], listed
    assert all(set(m) == {"user_id", "muted_at"} for m in listed)
    times = [datetime.fromisoformat(m["muted_at"]) for m in listed]
    assert times == sorted(times, reverse=True)
    assert side.items(MUTED, me, at, limit=1) == listed
    assert len(side.pages(MUTED, me, at, limit=2)) == 2
    assert feed_authors(side, me, at) == []

    # unmute brings them back; the follow never went away
    resp = side.write("DELETE", f"{MUTED}/{a}", me, expect=204)
    at = resp.position
    assert feed_authors(side, me, at) == [a]
    assert [m["user_id"] for m in side.items(MUTED, me, at)] == [b, c]
    at = side.write("DELETE", f"{MUTED}/{b}", me, expect=204).position
    assert set(feed_authors(side, me, at)) == {a, b}
    # mute again after an unmute works
    at = side.write("PUT", f"{MUTED}/{a}", me, expect=200).position
    assert feed_authors(side, me, at) == [b]
    assert [m["user_id"] for m in side.items(MUTED, me, at)] == [a, c]


def test_mute_rejections_store_nothing(read_side, uid):
    side = read_side
    me, other = uid("me"), uid("other")
    rejected = Rejections(side)
    rejected(404, "DELETE", f"{MUTED}/{other}", me, code="not_muted")
    rejected(422, "PUT", f"{MUTED}/{me}", me, code="cannot_mute_self")
    rejected(422, "PUT", f"{MUTED}/{'x' * 65}", me)
    rejected(422, "PUT", f"{MUTED}/bad%20id", me)
    rejected(401, "PUT", f"{MUTED}/{other}", None)
    rejected(401, "DELETE", f"{MUTED}/{other}", None)
    rejected.check()
    at = side.write("PUT", f"{MUTED}/{other}", me, expect=200).position
    side.write("DELETE", f"{MUTED}/{other}", me, expect=204)
    rejected = Rejections(side)
    rejected(404, "DELETE", f"{MUTED}/{other}", me, code="not_muted")  # twice
    rejected.check()
    # the query side: paging errors, no token
    assert side.query(MUTED, None).status == 401
    assert side.query(f"{MUTED}?limit=0", me, at=at).status == 422
    assert side.query(f"{MUTED}?cursor=garbage", me, at=at).status == 422


def test_entativa_mute_friends(entativa_side, uid):
    side = entativa_side
    me, friend, pal = uid("me"), uid("friend"), uid("pal")
    friends(side, me, friend)
    friends(side, me, pal)
    f1, _ = side.story(friend)
    _p1, at = side.story(pal)
    assert set(feed_authors(side, me, at)) == {friend, pal}
    at = side.write("PUT", f"{MUTED}/{friend}", me, expect=200).position
    assert feed_authors(side, me, at) == [pal]
    assert side.read(f"{S}/{f1}", me, at).body["story_id"] == f1  # still a friend: still viewable
    assert side.items(MUTED, friend, at) == []
    assert [m["user_id"] for m in side.items(MUTED, me, at)] == [friend]
    # the friend's own tray is untouched by my mute of them
    assert feed_authors(side, friend, at) == [friend]
    at = side.write("DELETE", f"{MUTED}/{friend}", me, expect=204).position
    assert set(feed_authors(side, me, at)) == {friend, pal}


def test_navigation_burst_last_one_stands_across_projector_batches(read_side, uid):
    """Many viewers at once, each viewing then navigating several times (their own order kept):
    the projector sees them in mixed batches; each viewer's last navigation stands."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    side = read_side
    owner = uid("owner")
    story, _ = side.story(owner, privacy="public")
    rng = random.Random(13)
    plans = {uid(f"b{i}"): [rng.choice(sorted(NAV_KEYS)) for _ in range(rng.randint(0, 4))] for i in range(30)}
    strangers = [uid(f"n{i}") for i in range(5)]

    def run(viewer: str) -> int:
        last = side.view(viewer, story)
        for action in plans[viewer]:
            last = navigate(side, viewer, story, action).position
        return last

    def stray(user: str) -> int:
        return navigate(side, user, story, "exit").position

    with ThreadPoolExecutor(12) as pool:
        positions = list(pool.map(run, plans)) + list(pool.map(stray, strangers))
    at = max(positions)
    out = insights(side, owner, story, at)
    expected = dict.fromkeys(NAV_KEYS, 0)
    for actions in plans.values():
        if actions:
            expected[actions[-1]] += 1
    assert out["unique_viewers"] == 30
    assert out["navigation"] == expected, out
    left = expected["exit"] + expected["swipe_forward"]
    assert out["completion_rate"] == round((30 - left) * 100 / 30, 1)


def test_share_with_an_idempotency_key_creates_one_reshare(read_side, uid):
    side = read_side
    owner, sharer = uid("owner"), uid("sharer")
    story, _ = side.story(owner, privacy="public")
    headers = {"Idempotency-Key": uid("key")}
    first = side.command("POST", f"{S}/{story}/share", sharer, headers=headers)
    assert first.status == 201, first
    count = export_count(side)
    again = side.command("POST", f"{S}/{story}/share", sharer, headers=headers)
    assert again.status == 201 and again.body == first.body, (first, again)
    assert export_count(side) == count
    assert insights(side, owner, story, again.position)["shares"] == 1
    assert len(side.items(f"{S}/user/{sharer}", sharer, again.position)) == 1


def test_story_at_before_the_edit_shows_the_first_version(read_side, uid):
    side = read_side
    owner = uid("owner")
    story, _ = side.story(owner, privacy="public", text_content="v1")
    time.sleep(0.05)
    between = datetime.now(UTC)
    time.sleep(0.05)
    side.write("PATCH", f"{S}/{story}", owner, {"text_content": "v2"}, expect=200)
    out = subprocess.run(
        [STORIES, "story-at", story, "--at", between.isoformat()],
        env=side.env,
        capture_output=True,
        timeout=60,
        cwd=side.data_dir,
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    doc = json.loads(out.stdout)
    assert doc["text_content"] == "v1" and doc["edited"] is False and doc["edited_at"] is None
    assert [v["version"] for v in doc["versions"]] == [1]


def test_edit_right_after_create_reaches_the_live_read_model(read_side, uid):
    """Create and edit back to back (often one projector batch): the live story shows the edit."""
    side = read_side
    owner, follower = uid("owner"), uid("follower")
    side.follow(follower, owner)
    pairs = []
    for i in range(8):
        story = side.write(
            "POST", S, owner, {"story_type": "text", "text_content": f"c{i}", "privacy": "public"}, expect=201
        ).body["story_id"]
        resp = side.write("PATCH", f"{S}/{story}", owner, {"text_content": f"e{i}"}, expect=200)
        pairs.append((story, f"e{i}", resp.position))
    at = max(p for _, _, p in pairs)
    for story, text, _ in pairs:
        served = side.read(f"{S}/{story}", follower, at).body
        assert served["text_content"] == text and served["edited"] is True, served
    feed = {s["story_id"]: s for e in side.items(f"{S}/feed", follower, at) for s in e["stories"]}
    assert all(feed[story]["text_content"] == text for story, text, _ in pairs)


def test_a_reshare_does_not_show_the_original_to_whom_it_is_hidden(read_side, uid):
    side = read_side
    owner, sharer, hidden = uid("owner"), uid("sharer"), uid("hidden")
    side.follow(hidden, sharer)
    story, _ = side.story(owner, privacy="public", text_content="not for you", hidden_from_ids=[hidden])
    resp = side.write("POST", f"{S}/{story}/share", sharer, expect=201)
    side.read(f"{S}/{story}", hidden, resp.position, expect=404)
    served = side.query(f"{S}/{resp.body['story_id']}", hidden, at=resp.position)
    assert served.status == 404 or served.body.get("text_content") != "not for you", served


def test_zz_a_rebuild_equals_the_live_read_models(read_side, uid):
    """Last in the module: every event above (navigations, edits, reshares, mutes) rebuilt by
    ``stories replay`` into a fresh database gives the MongoDB read models the projector built."""
    from pymongo import MongoClient

    from tests.read_models import dump_mongo

    side = read_side
    at = side.write("PUT", f"{MUTED}/{uid('last')}", uid("me"), expect=200).position
    side.read(MUTED, uid("me"), at)  # the read models have reached the head
    database, prefix = side.mongodb_database + "_rebuilt", side.redis_prefix[:-1] + "-rebuilt:"
    out = subprocess.run(
        [STORIES, "replay", "--database", database, "--prefix", prefix],
        env=side.env,
        capture_output=True,
        timeout=120,
        cwd=side.data_dir,
    )
    assert out.returncode == 0, (out.stdout.decode()[-2000:], out.stderr.decode()[-2000:])
    with MongoClient(side.mongodb_url, tz_aware=True) as mongo:
        try:
            live, rebuilt = dump_mongo(mongo, side.mongodb_database), dump_mongo(mongo, database)
            for name in live:
                assert live[name] == rebuilt[name], name
        finally:
            mongo.drop_database(database)
            from stories.backends import connect_redis

            client = connect_redis(side.redis_url)
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()


def test_a_payload_edit_racing_first_votes_never_leaves_a_vote_on_a_changed_payload(read_side, uid):
    """An edit that cuts a poll to two options races votes for its fourth option: either the edit
    is refused (a vote came first) or no vote for the fourth option is ever stored."""
    from concurrent.futures import ThreadPoolExecutor

    side = read_side
    four = {"sticker_type": "poll", "poll": {"question": "Pick", "options": [{"text": t} for t in "abcd"]}}
    two = {"question": "Pick", "options": [{"text": "a"}, {"text": "b"}]}
    outcomes = []
    for round_ in range(6):
        owner = uid(f"owner{round_}")
        story, _ = side.story(owner, privacy="public", stickers=[four])
        voters = [uid(f"r{round_}v{i}") for i in range(8)]

        def vote(v: str, story: str = story) -> int:
            return side.command("POST", f"{S}/{story}/interact", v, {"sticker_index": 0, "option_index": 3}).status

        def edit(story: str = story, owner: str = owner) -> int:
            return side.command(
                "PATCH", f"{S}/{story}", owner, {"stickers": [{"sticker_index": 0, "poll": two}]}
            ).status

        with ThreadPoolExecutor(9) as pool:
            futures = (
                [pool.submit(vote, v) for v in voters[:4]]
                + [pool.submit(edit)]
                + [pool.submit(vote, v) for v in voters[4:]]
            )
            statuses = [f.result() for f in futures]
        edit_status = statuses[4]
        votes = statuses[:4] + statuses[5:]
        assert edit_status in (200, 409), statuses
        assert all(s in (200, 422) for s in votes), statuses
        outcomes.append((story, edit_status, votes))
    events = export_events(side)
    for story, edit_status, votes in outcomes:
        voted = [e for e in events if e.get("event_type") == "PollVoted" and e["data"]["story_id"] == story]
        assert len(voted) == votes.count(200), (story, votes, len(voted))
        if edit_status == 200:
            assert not voted, (story, "a vote for the removed option was stored although the edit went through")
        else:
            assert voted and all(e["data"]["option_index"] == 3 for e in voted)
