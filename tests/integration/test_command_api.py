"""The command API over HTTP, served in this process (``tests/in_process.py``: the app on its own
event loop in a thread, the log in a SQLite file, read back in process), with the same client the
end-to-end tests use. Every rejected request is checked to have stored nothing (``api.rejected``).
What needs a real process is in ``tests/e2e/test_command_api_process.py``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.command_requests import (
    CF,
    COUNTDOWN,
    FOLLOW,
    LINK,
    LOCATION,
    MENTION,
    MUSIC,
    POLL,
    QUESTION,
    QUIZ,
    ROUTES,
    SLIDER,
    H,
    Positions,
    S,
    all_stickers,
    create_story,
    follow,
    spellings,
    text_story,
)
from tests.e2e.conftest import RUNNING, CommandApi
from tests.in_process import launch_in_process

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CommandApi]:
    """One vignette command API per module, rate limit off."""
    instance = launch_in_process(tmp_path_factory.mktemp("command-api"), rate_limit_per_s=0)
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def entativa_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CommandApi]:
    instance = launch_in_process(
        tmp_path_factory.mktemp("command-api-entativa"), rate_limit_per_s=0, platform="entativa"
    )
    yield instance
    instance.stop()


@pytest.fixture(autouse=True)
def _check_rejections_stored_nothing() -> Iterator[None]:
    """A test's last rejections are checked against the log when it ends."""
    yield
    for running in list(RUNNING):
        running.check_nothing_stored()


# -- the operational endpoints --------------------------------------------------------------


def test_health_ready_metrics_docs_and_openapi(api):
    health = api.get("/health")
    assert health.status == 200 and health.body["status"] == "ok"

    ready = api.get("/ready")
    assert ready.status == 200, ready
    assert ready.body["status"] == "ready" and ready.body["checks"] == {"event_store": "ok"}

    doc = api.get("/openapi.json")
    assert doc.status == 200 and doc.header("content-type").startswith("application/json")
    spec = doc.body
    assert spec["openapi"].startswith("3.")
    listed = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert set(ROUTES) <= listed, set(ROUTES) - listed
    for method, path in ROUTES:
        op = spec["paths"][path][method]
        assert "401" in op["responses"] and "429" in op["responses"] and "503" in op["responses"], (method, path)
        assert op.get("security"), (method, path)
        if "requestBody" in op:
            assert {"400", "413", "415", "422"} <= set(op["responses"]), (method, path)
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[1] in spec["components"]["schemas"]
    assert spec["paths"]["/api/v1/stories"]["post"]["responses"].keys() >= {"201"}

    docs = api.get("/docs")
    assert docs.status == 200 and docs.header("content-type").startswith("text/html")
    assert b"<html" in docs.raw.lower() and b"/openapi.json" in docs.raw

    api.get("/health")
    metrics = api.get("/metrics")
    assert metrics.status == 200 and metrics.header("content-type").startswith("text/plain")
    text = metrics.raw.decode()
    assert "# TYPE http_requests_total counter" in text
    assert 'route="/health"' in text
    assert "stories_log_head" in text and "http_request_duration_seconds_bucket" in text


def test_unknown_endpoint_and_wrong_method_answer_json_errors(api):
    api.rejected(404, "GET", "/api/v1/nothing-here")
    api.rejected(405, "GET", S, "someone")


# -- stories --------------------------------------------------------------------------------


def test_story_create_view_reply_delete_with_increasing_positions(api, uid):
    alice, bob = uid("alice"), uid("bob")
    positions = Positions()

    resp = api.request("PUT", f"{FOLLOW}/{alice}", bob)
    assert resp.status == 200 and resp.body == {"user_id": alice, "following": True, "position": resp.position}
    followed_at = positions.appended(resp)

    resp = api.request("POST", S, alice, text_story(background_color="#112233", duration=7, expires_in_hours=12))
    assert resp.status == 201, resp
    assert set(resp.body) == {"story_id", "expires_at", "position"}
    story = resp.body["story_id"]
    uuid.UUID(story)
    expires = datetime.fromisoformat(resp.body["expires_at"])
    assert timedelta(hours=11, minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=12)
    created_at = positions.appended(resp)

    resp = api.request("POST", f"{S}/{story}/view", bob)
    assert resp.status == 202 and resp.body["story_id"] == story and resp.body["counted"] is True, resp
    positions.appended(resp)
    resp = api.request("POST", f"{S}/{story}/view", bob)  # a repeat view is recorded too
    assert resp.status == 202 and resp.body["counted"] is True, resp
    positions.appended(resp)

    resp = api.request("POST", f"{S}/{story}/view", alice)  # the owner's views are not recorded
    assert resp.status == 202 and resp.body["counted"] is False, resp
    assert resp.position >= positions.last

    resp = api.request("POST", f"{S}/{story}/reply", bob, {"text": "  nice!  "})
    assert resp.status == 201 and resp.body["reply_number"] == 1 and resp.body["story_id"] == story, resp
    positions.appended(resp)
    resp = api.request("POST", f"{S}/{story}/reply", bob, {"text": "again"})
    assert resp.status == 201 and resp.body["reply_number"] == 2, resp
    positions.appended(resp)

    resp = api.request("DELETE", f"{S}/{story}", alice)
    assert resp.status == 204 and resp.raw == b"", resp
    deleted_at = positions.appended(resp)

    events = [
        e
        for e in api.export()
        if e["stream_id"] == story or e["data"].get("story_id") == story or e["data"].get("follower_id") == bob
    ]
    assert [e["event_type"] for e in events] == [
        "UserFollowed",
        "StoryCreated",
        "StoryViewed",
        "StoryViewed",
        "StoryReplied",
        "StoryReplied",
        "StoryDeleted",
    ]
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)
    assert events[0]["position"] == followed_at
    assert events[1]["position"] == created_at and events[-1]["position"] == deleted_at
    created = events[1]
    assert created["stream_id"] == story and created["platform"] == "vignette"
    assert created["data"]["user_id"] == alice and created["data"]["privacy"] == "followers"
    assert created["data"]["duration"] == 7 and created["data"]["allow_replies"] == "everyone"
    assert created["data"]["background_color"] == "#112233"
    assert [e["data"]["view_number"] for e in events[2:4]] == [1, 2]
    assert events[4]["data"]["text"] == "nice!"
    assert set(created) >= {
        "event_id",
        "event_type",
        "stream_id",
        "stream_version",
        "position",
        "occurred_at",
        "platform",
        "schema_version",
        "data",
    }

    # gone: every command on it now says 404
    api.rejected(404, "POST", f"{S}/{story}/view", bob, code="not_found")
    api.rejected(404, "POST", f"{S}/{story}/reply", bob, {"text": "hi"})
    api.rejected(404, "POST", f"{S}/{story}/interact", bob, {"sticker_index": 0, "option_index": 0})
    api.rejected(404, "DELETE", f"{S}/{story}", alice)


def test_create_image_and_video_stories(api, uid):
    user = uid("maker")
    resp = api.request(
        "POST",
        S,
        user,
        {
            "story_type": "image",
            "media_url": "https://cdn.example.com/a.jpg",
            "thumbnail_url": "https://cdn.example.com/a_t.jpg",
            "privacy": "public",
        },
    )
    assert resp.status == 201, resp
    resp = api.request(
        "POST",
        S,
        user,
        {
            "story_type": "video",
            "media_id": "m-123",
            "duration": 15,
            "background_gradient": ["#000000", "#ffffff"],
            "allow_replies": "audience",
        },
    )
    assert resp.status == 201, resp
    # charset parameters on the content type are fine
    resp = api.request(
        "POST",
        S,
        user,
        data=b'{"story_type": "text", "text_content": "x"}',
        content_type="application/json; charset=utf-8",
    )
    assert resp.status == 201, resp


def test_interact_with_every_sticker_type(api, uid):
    owner, fan, other, newcomer = uid("owner"), uid("fan"), uid("other"), uid("newcomer")
    resp = api.request("POST", S, owner, text_story(privacy="public", stickers=all_stickers()))
    assert resp.status == 201, resp
    story = resp.body["story_id"]
    positions = Positions()
    positions.appended(resp)
    path = f"{S}/{story}/interact"

    def interact(body: dict, user: str = fan):
        resp = api.request("POST", path, user, body)
        assert resp.status == 200, resp
        assert resp.body["story_id"] == story and resp.body["sticker_index"] == body["sticker_index"]
        return resp

    resp = interact({"sticker_index": POLL, "option_index": 1})
    assert resp.body["sticker_type"] == "poll"
    positions.appended(resp)
    quiz = interact({"sticker_index": QUIZ, "option_index": 1})
    assert quiz.body["sticker_type"] == "quiz"
    assert quiz.body["correct"] is True and quiz.body["correct_answer_index"] == 1
    positions.appended(quiz)
    wrong = interact({"sticker_index": QUIZ, "option_index": 0}, other)
    assert wrong.body["correct"] is False and wrong.body["correct_answer_index"] == 1
    positions.appended(wrong)
    positions.appended(interact({"sticker_index": QUESTION, "text": "why?"}))
    positions.appended(interact({"sticker_index": QUESTION, "text": "and how?"}))  # many answers allowed
    resp = interact({"sticker_index": COUNTDOWN, "action": "follow"})
    assert resp.body["following"] is True and resp.body["sticker_type"] == "countdown"
    positions.appended(resp)
    resp = interact({"sticker_index": COUNTDOWN, "action": "follow"})  # a state: nothing new appended
    assert resp.body["following"] is True and resp.position >= positions.last
    resp = interact({"sticker_index": COUNTDOWN, "action": "unfollow"})
    assert resp.body["following"] is False
    positions.appended(resp)
    resp = interact({"sticker_index": SLIDER, "value": 7.5})
    assert resp.body["sticker_type"] == "slider"
    positions.appended(resp)
    resp = interact({"sticker_index": LINK, "action": "tap"})
    assert resp.body["sticker_type"] == "link"
    positions.appended(resp)
    positions.appended(interact({"sticker_index": LINK, "action": "tap"}))

    events = [e for e in api.export() if e["data"].get("story_id") == story]
    assert [e["event_type"] for e in events] == [
        "StoryCreated",
        "PollVoted",
        "QuizAnswered",
        "QuizAnswered",
        "QuestionAnswered",
        "QuestionAnswered",
        "CountdownFollowed",
        "CountdownUnfollowed",
        "SliderAnswered",
        "LinkTapped",
        "LinkTapped",
    ]
    assert events[1]["data"]["option_index"] == 1 and events[8]["data"]["value"] == 7.5
    assert [e["data"]["tap_number"] for e in events[9:]] == [1, 2]

    # 409: once-per-user stickers
    api.rejected(409, "POST", path, fan, {"sticker_index": POLL, "option_index": 0}, code="already_voted")
    api.rejected(409, "POST", path, fan, {"sticker_index": POLL, "option_index": 1}, code="already_voted")
    api.rejected(409, "POST", path, fan, {"sticker_index": QUIZ, "option_index": 1}, code="already_answered")
    api.rejected(409, "POST", path, other, {"sticker_index": QUIZ, "option_index": 1}, code="already_answered")
    api.rejected(409, "POST", path, fan, {"sticker_index": SLIDER, "value": 3}, code="already_answered")
    # 403: the owner does not vote on or answer their own story's stickers
    api.rejected(403, "POST", path, owner, {"sticker_index": POLL, "option_index": 0}, code="own_story")
    api.rejected(403, "POST", path, owner, {"sticker_index": QUIZ, "option_index": 1}, code="own_story")
    api.rejected(403, "POST", path, owner, {"sticker_index": SLIDER, "value": 1}, code="own_story")
    api.rejected(403, "POST", path, owner, {"sticker_index": QUESTION, "text": "me?"}, code="own_story")
    # 422: values that do not fit the sticker
    resp = api.rejected(422, "POST", path, newcomer, {"sticker_index": SLIDER, "value": 11})
    assert resp.body["error"]["details"][0]["field"] == "value"
    api.rejected(422, "POST", path, newcomer, {"sticker_index": SLIDER, "value": -0.1})
    api.rejected(422, "POST", path, newcomer, {"sticker_index": SLIDER})
    resp = api.rejected(422, "POST", path, newcomer, {"sticker_index": POLL, "option_index": 2})
    assert resp.body["error"]["details"][0]["field"] == "option_index"
    api.rejected(422, "POST", path, newcomer, {"sticker_index": POLL})
    api.rejected(422, "POST", path, newcomer, {"sticker_index": POLL, "option_index": -1})
    api.rejected(422, "POST", path, newcomer, {"sticker_index": QUESTION, "text": "   "})
    api.rejected(422, "POST", path, newcomer, {"sticker_index": COUNTDOWN, "action": "tap"})
    api.rejected(422, "POST", path, newcomer, {"sticker_index": LINK, "action": "follow"})
    api.rejected(422, "POST", path, newcomer, {"sticker_index": LINK, "action": "tap", "extra": 1})
    api.rejected(422, "POST", path, newcomer, {"sticker_index": MENTION}, code="not_interactive")
    api.rejected(422, "POST", path, newcomer, {"sticker_index": LOCATION}, code="not_interactive")
    api.rejected(422, "POST", path, newcomer, {"sticker_index": MUSIC}, code="not_interactive")
    resp = api.rejected(422, "POST", path, newcomer, {"sticker_index": 9, "option_index": 0}, code="sticker_not_found")
    assert resp.body["error"]["details"][0]["field"] == "sticker_index"
    resp = api.rejected(422, "POST", path, newcomer, {"sticker_index": 10})
    assert resp.body["error"]["details"][0]["field"] == "sticker_index"
    api.rejected(422, "POST", path, newcomer, {"option_index": 0})


def test_replies_follow_the_reply_policy(api, uid):
    owner, stranger, fan = uid("owner"), uid("stranger"), uid("fan")
    follow(api, fan, owner)
    off = create_story(api, owner, privacy="public", allow_replies="off")
    audience = create_story(api, owner, privacy="public", allow_replies="audience")
    resp = api.request("POST", f"{S}/{audience}/reply", fan, {"text": "hi"})
    assert resp.status == 201, resp
    api.rejected(403, "POST", f"{S}/{off}/reply", fan, {"text": "hi"}, code="replies_disabled")
    api.rejected(403, "POST", f"{S}/{audience}/reply", stranger, {"text": "hi"}, code="replies_restricted")
    api.rejected(403, "POST", f"{S}/{audience}/reply", owner, {"text": "me"}, code="own_story")
    api.rejected(422, "POST", f"{S}/{audience}/reply", fan, {"text": "   "})
    api.rejected(422, "POST", f"{S}/{audience}/reply", fan, {"text": ""})
    api.rejected(422, "POST", f"{S}/{audience}/reply", fan, {"text": "x" * 1001})
    api.rejected(422, "POST", f"{S}/{audience}/reply", fan, {})


# -- highlights -----------------------------------------------------------------------------


def test_highlights_every_endpoint(api, uid):
    owner, other = uid("owner"), uid("other")
    s1, s2, s3 = (create_story(api, owner, privacy="public") for _ in range(3))
    theirs = create_story(api, other, privacy="public")
    positions = Positions()

    resp = api.request(
        "POST",
        H,
        owner,
        {
            "title": "Trips",
            "story_ids": [s1],
            "description": "far away",
            "cover": {"media_url": "https://cdn.example.com/c.jpg"},
        },
    )
    assert resp.status == 201 and set(resp.body) == {"highlight_id", "position"}, resp
    h1 = resp.body["highlight_id"]
    positions.appended(resp)
    resp = api.request("POST", H, owner, {"title": "Food", "story_ids": [s2, s2], "is_pinned": True})
    assert resp.status == 201, resp
    h2 = resp.body["highlight_id"]
    positions.appended(resp)
    resp = api.request("POST", H, owner, {"title": "Gone soon", "story_ids": [s3]})
    assert resp.status == 201, resp
    h3 = resp.body["highlight_id"]
    positions.appended(resp)

    resp = api.request("PATCH", f"{H}/{h1}", owner, {"title": "  Travels ", "is_pinned": True, "cover": None})
    assert resp.status == 200 and resp.body["highlight_id"] == h1, resp
    positions.appended(resp)
    resp = api.request("PATCH", f"{H}/{h1}", owner, {"is_archived": True, "description": None})
    assert resp.status == 200, resp
    positions.appended(resp)

    resp = api.request("POST", f"{H}/{h1}/stories", owner, {"story_ids": [s2, s3, s1]})
    assert resp.status == 200 and resp.body["story_ids"] == [s1, s2, s3], resp
    positions.appended(resp)
    resp = api.request("POST", f"{H}/{h1}/stories", owner, {"story_ids": [s1]})  # already in: nothing new
    assert resp.status == 200 and resp.body["story_ids"] == [s1, s2, s3], resp

    resp = api.request("DELETE", f"{H}/{h1}/stories", owner, {"story_ids": [s2]})
    assert resp.status == 200 and resp.body["story_ids"] == [s1, s3], resp
    positions.appended(resp)

    resp = api.request("POST", f"{H}/reorder", owner, {"highlight_ids": [h2, h3, h1]})
    assert resp.status == 200 and resp.body["highlight_ids"] == [h2, h3, h1], resp
    positions.appended(resp)

    resp = api.request("DELETE", f"{H}/{h3}", owner)
    assert resp.status == 204 and resp.raw == b"", resp
    positions.appended(resp)
    resp = api.request("POST", f"{H}/reorder", owner, {"highlight_ids": [h1, h2]})  # h3 left the list
    assert resp.status == 200 and resp.body["highlight_ids"] == [h1, h2], resp
    positions.appended(resp)

    events = [e for e in api.export() if e["data"].get("user_id") == owner and e["event_type"].startswith("Highlight")]
    assert [e["event_type"] for e in events] == [
        "HighlightCreated",
        "HighlightFiled",
        "HighlightCreated",
        "HighlightFiled",
        "HighlightCreated",
        "HighlightFiled",
        "HighlightUpdated",
        "HighlightUpdated",
        "HighlightStoriesAdded",
        "HighlightStoriesRemoved",
        "HighlightsReordered",
        "HighlightDeleted",
        "HighlightUnfiled",
        "HighlightsReordered",
    ]
    assert events[2]["data"]["story_ids"] == [s2]  # duplicates collapse
    assert events[6]["data"]["changes"] == {"title": "Travels", "is_pinned": True, "cover": None}
    assert events[8]["data"]["story_ids"] == [s2, s3]  # only the new ones

    # errors, none of which stores anything
    api.rejected(403, "PATCH", f"{H}/{h2}", other, {"title": "mine now"}, code="not_owner")
    api.rejected(403, "POST", f"{H}/{h2}/stories", other, {"story_ids": [theirs]}, code="not_owner")
    api.rejected(403, "DELETE", f"{H}/{h2}/stories", other, {"story_ids": [s2]}, code="not_owner")
    api.rejected(403, "DELETE", f"{H}/{h2}", other, code="not_owner")
    # h1 is archived: others cannot know it exists
    api.rejected(404, "PATCH", f"{H}/{h1}", other, {"title": "mine now"}, code="not_found")
    api.rejected(404, "DELETE", f"{H}/{h1}", other, code="not_found")
    api.rejected(404, "PATCH", f"{H}/{uuid.uuid4()}", owner, {"title": "x"})
    api.rejected(404, "PATCH", f"{H}/not-a-uuid", owner, {"title": "x"})
    api.rejected(404, "DELETE", f"{H}/{uuid.uuid4()}", owner)
    api.rejected(404, "POST", f"{H}/{uuid.uuid4()}/stories", owner, {"story_ids": [s1]})
    api.rejected(404, "DELETE", f"{H}/{h3}", owner)
    api.rejected(404, "PATCH", f"{H}/{h3}", owner, {"title": "back?"})
    api.rejected(404, "POST", f"{H}/{h3}/stories", owner, {"story_ids": [s1]})
    api.rejected(404, "DELETE", f"{H}/{h3}/stories", owner, {"story_ids": [s3]})
    resp = api.rejected(422, "POST", f"{H}/{h1}/stories", owner, {"story_ids": [theirs]}, code="invalid_story_ids")
    assert resp.body["error"]["details"][0]["field"] == "story_ids"
    api.rejected(422, "POST", H, owner, {"title": "Bad", "story_ids": ["not-a-story"]}, code="invalid_story_ids")
    api.rejected(422, "POST", H, owner, {"title": "Theirs", "story_ids": [theirs]}, code="invalid_story_ids")
    api.rejected(422, "POST", H, owner, {"title": "Empty", "story_ids": []})
    api.rejected(422, "POST", H, owner, {"title": "", "story_ids": [s1]})
    api.rejected(422, "POST", H, owner, {"title": "   ", "story_ids": [s1]})
    api.rejected(422, "POST", H, owner, {"title": "x" * 51, "story_ids": [s1]})
    api.rejected(422, "POST", H, owner, {"story_ids": [s1]})
    api.rejected(422, "PATCH", f"{H}/{h1}", owner, {})
    api.rejected(422, "PATCH", f"{H}/{h1}", owner, {"title": None})
    api.rejected(422, "PATCH", f"{H}/{h1}", owner, {"owner": other})
    api.rejected(422, "PATCH", f"{H}/{h1}", owner, {"description": "d" * 201})
    api.rejected(422, "POST", f"{H}/reorder", owner, {"highlight_ids": [h1]}, code="not_your_whole_list")
    api.rejected(422, "POST", f"{H}/reorder", owner, {"highlight_ids": [h1, h1, h2]}, code="not_your_whole_list")
    api.rejected(422, "POST", f"{H}/reorder", owner, {"highlight_ids": [h1, h2, h3]}, code="not_your_whole_list")
    api.rejected(422, "POST", f"{H}/reorder", other, {"highlight_ids": [h2, h1]}, code="not_your_whole_list")
    api.rejected(422, "DELETE", f"{H}/{h1}/stories", owner, {"story_ids": []})


def test_highlight_commands_answer_404_to_whom_the_highlight_is_unknown(api, uid):
    """Issue 11 item 5: a non-owner gets 403 only for a highlight they may know exists (not
    archived, one of its stories visible to them, as the query API shows it); to anyone else
    it is 404 exactly like a random id, and nothing is stored."""
    owner, follower, friend, stranger, hidden = (uid(n) for n in ("owner", "follower", "friend", "stranger", "hidden"))
    follow(api, follower, owner)
    follow(api, hidden, owner)
    assert api.request("POST", f"{CF}/{friend}", owner).status == 201
    followers_only = create_story(api, owner, privacy="followers", hidden_from_ids=[hidden])
    close = create_story(api, owner, privacy="close_friends")
    public, doomed = (create_story(api, owner, privacy="public") for _ in range(2))

    def highlight(story_ids: list[str], **extra: Any) -> str:
        resp = api.request("POST", H, owner, {"title": "h", "story_ids": story_ids, **extra})
        assert resp.status == 201, resp
        return resp.body["highlight_id"]

    h_followers, h_close, h_archived, h_gone, h_mixed = (
        highlight([followers_only]),
        highlight([close]),
        highlight([public], is_archived=True),
        highlight([doomed]),
        highlight([close, public]),
    )
    assert api.request("DELETE", f"{S}/{doomed}", owner).status == 204  # its only story

    def attempts(h: str) -> list[tuple[str, str, Any]]:
        return [
            ("PATCH", f"{H}/{h}", {"title": "mine now"}),
            ("POST", f"{H}/{h}/stories", {"story_ids": [public]}),
            ("DELETE", f"{H}/{h}/stories", {"story_ids": [public]}),
            ("DELETE", f"{H}/{h}", None),
        ]

    def send(status: int, user: str, method: str, path: str, body: Any, code: str):
        args = (user,) if body is None else (user, body)
        return api.rejected(status, method, path, *args, code=code)

    unknown = [send(404, stranger, *attempt, "not_found") for attempt in attempts(str(uuid.uuid4()))]
    knows = {
        h_followers: {follower},
        h_close: {friend},
        h_archived: set(),
        h_gone: set(),
        h_mixed: {follower, friend, stranger, hidden},
    }
    for h, audience in knows.items():
        for user in (follower, friend, stranger, hidden):
            for n, attempt in enumerate(attempts(h)):
                if user in audience:
                    send(403, user, *attempt, "not_owner")
                else:
                    resp = send(404, user, *attempt, "not_found")
                    assert resp.body == unknown[n].body, (h, user, attempt)  # nothing tells them apart

    # the owner still manages every one; un-archived, the highlight is known to its audience again
    resp = api.request("PATCH", f"{H}/{h_archived}", owner, {"is_archived": False})
    assert resp.status == 200, resp
    send(403, stranger, "PATCH", f"{H}/{h_archived}", {"title": "x"}, "not_owner")
    resp = api.request("POST", f"{H}/{h_gone}/stories", owner, {"story_ids": [public]})
    assert resp.status == 200, resp
    send(403, stranger, "DELETE", f"{H}/{h_gone}", None, "not_owner")


def test_ids_in_any_spelling_name_one_story_or_highlight(api, uid):
    """Issue 11 item 7: every spelling of a story's or highlight's UUID, in a path or a body,
    means the canonical id, which is what the log stores."""
    owner, viewer = uid("owner"), uid("viewer")
    s1 = create_story(api, owner, privacy="public", stickers=all_stickers()[:1])
    s2 = create_story(api, owner, privacy="public")

    resp = api.request(
        "POST", H, owner, {"title": "Once", "story_ids": [s1, *spellings(s1)], "cover": {"story_id": s1.upper()}}
    )
    assert resp.status == 201, resp
    h = resp.body["highlight_id"]
    resp = api.request("POST", f"{H}/{h.upper()}/stories", owner, {"story_ids": [*spellings(s1), *spellings(s2)]})
    assert resp.status == 200 and resp.body["story_ids"] == [s1, s2], resp
    for path in spellings(h, braces=False):
        resp = api.request("POST", f"{H}/{path}/stories", owner, {"story_ids": spellings(s2)})
        assert resp.status == 200 and resp.body == {
            "highlight_id": h,
            "story_ids": [s1, s2],
            "position": resp.position,
        }, resp
    resp = api.request("PATCH", f"{H}/{h.upper()}", owner, {"cover": {"story_id": "urn:uuid:" + s2.upper()}})
    assert resp.status == 200 and resp.body["highlight_id"] == h, resp
    resp = api.request("POST", f"{H}/reorder", owner, {"highlight_ids": [h.upper()]})  # the whole list, as it is
    assert resp.status == 200 and resp.body["highlight_ids"] == [h], resp

    resp = api.request("POST", f"{S}/{s1.upper()}/view", viewer)
    assert resp.status == 202 and resp.body["story_id"] == s1, resp
    resp = api.request("POST", f"{S}/urn:uuid:{s1}/interact", viewer, {"sticker_index": 0, "option_index": 1})
    assert resp.status == 200 and resp.body["story_id"] == s1, resp
    api.rejected(
        409,
        "POST",
        f"{S}/{s1.replace('-', '')}/interact",
        viewer,
        {"sticker_index": 0, "option_index": 0},
        code="already_voted",
    )
    resp = api.request("DELETE", f"{H}/{h}/stories", owner, {"story_ids": spellings(s2)})
    assert resp.status == 200 and resp.body["story_ids"] == [s1], resp
    for oddity in ("+" + s1.replace("-", "")[1:], s1.replace("-", "")[:31] + "_", "0x" + s1[2:]):
        api.rejected(404, "POST", f"{S}/{oddity}/view", viewer)  # UUID() takes these; we do not
        api.rejected(404, "PATCH", f"{H}/{oddity}", owner, {"title": "x"})

    events = [
        e
        for e in api.export()
        if e["data"].get("story_id") == s1
        or (e["event_type"].startswith("Highlight") and e["data"]["user_id"] == owner)
    ]
    by_type = {e["event_type"]: e["data"] for e in events}
    assert by_type["HighlightCreated"]["story_ids"] == [s1]
    assert by_type["HighlightCreated"]["cover"] == {"story_id": s1}
    assert by_type["HighlightStoriesAdded"]["story_ids"] == [s2]
    assert by_type["HighlightUpdated"]["changes"] == {"cover": {"story_id": s2}}
    assert by_type["HighlightStoriesRemoved"]["story_ids"] == [s2]
    assert [e["event_type"] for e in events].count("HighlightStoriesAdded") == 1
    assert by_type["StoryViewed"]["story_id"] == s1 and by_type["PollVoted"]["story_id"] == s1


def test_highlight_cover_object_round_trips_and_bad_covers_are_422(api, uid):
    owner, other = uid("owner"), uid("other")
    s1, s2, s3 = (create_story(api, owner, privacy="public") for _ in range(3))
    theirs = create_story(api, other, privacy="public")
    cover = {"story_id": s2, "media_url": "https://cdn.example.com/c.jpg", "emoji": "🌴", "color": "#12AB9f"}
    resp = api.request("POST", H, owner, {"title": "Trips", "story_ids": [s1, s2], "cover": cover})
    assert resp.status == 201, resp
    hid = resp.body["highlight_id"]
    resp = api.request("PATCH", f"{H}/{hid}", owner, {"cover": {"emoji": "🎉"}})
    assert resp.status == 200, resp
    resp = api.request("PATCH", f"{H}/{hid}", owner, {"cover": None})
    assert resp.status == 200, resp
    resp = api.request("POST", H, owner, {"title": "Only a colour", "story_ids": [s1], "cover": {"color": "#000000"}})
    assert resp.status == 201, resp

    events = [
        e
        for e in api.export()
        if e["data"].get("user_id") == owner and e["event_type"] in ("HighlightCreated", "HighlightUpdated")
    ]
    assert [e["schema_version"] for e in events] == [2, 2, 2, 2]
    assert events[0]["data"]["cover"] == cover
    assert [e["data"]["changes"] for e in events[1:3]] == [{"cover": {"emoji": "🎉"}}, {"cover": None}]
    assert events[3]["data"]["cover"] == {"color": "#000000"}

    for bad, field in (
        ({"story_id": s3}, "cover.story_id"),  # not one of the highlight's stories
        ({"story_id": theirs}, "cover.story_id"),
        ({"media_url": "ftp://cdn.example.com/c.jpg"}, "cover.media_url"),
        ({"media_url": "not a url"}, "cover.media_url"),
        ({"emoji": ""}, "cover.emoji"),
        ({"emoji": "x" * 17}, "cover.emoji"),
        ({"color": "red"}, "cover.color"),
        ({"color": "#1234567"}, "cover.color"),
        ({"size": "big"}, "cover.size"),
        ({"emoji": 1}, "cover.emoji"),
        ("https://cdn.example.com/c.jpg", "cover"),
    ):
        for method, path, body in (
            ("POST", H, {"title": "Bad", "story_ids": [s1], "cover": bad}),
            ("PATCH", f"{H}/{hid}", {"cover": bad}),
        ):
            resp = api.rejected(422, method, path, owner, body)
            fields = {d["field"] for d in resp.body["error"]["details"]}
            assert any(f == field or f.startswith(field + ".") for f in fields), (bad, resp)


# -- the social graph -----------------------------------------------------------------------


def test_close_friends_and_following(api, uid):
    me, pal, ex = uid("me"), uid("pal"), uid("ex")
    positions = Positions()

    resp = api.request("POST", f"{CF}/{pal}", me)
    assert resp.status == 201 and resp.body["user_id"] == pal and resp.body["close_friend"] is True, resp
    positions.appended(resp)
    resp = api.request("DELETE", f"{CF}/{pal}", me)
    assert resp.status == 204 and resp.raw == b"", resp
    positions.appended(resp)
    resp = api.request("POST", f"{CF}/{pal}", me)  # back on the list
    assert resp.status == 201, resp
    positions.appended(resp)

    resp = api.request("PUT", f"{FOLLOW}/{pal}", me)
    assert resp.status == 200 and resp.body["following"] is True, resp
    positions.appended(resp)
    again = api.request("PUT", f"{FOLLOW}/{pal}", me)  # PUT is idempotent: nothing appended
    assert again.status == 200 and again.body["following"] is True, again
    assert again.position >= positions.last
    resp = api.request("PUT", f"{FOLLOW}/{ex}", me)
    assert resp.status == 200, resp
    positions.appended(resp)
    resp = api.request("DELETE", f"{FOLLOW}/{ex}", me)
    assert resp.status == 204 and resp.raw == b"", resp
    positions.appended(resp)

    events = [e for e in api.export() if me in (e["data"].get("user_id"), e["data"].get("follower_id"))]
    assert [e["event_type"] for e in events] == [
        "CloseFriendAdded",
        "CloseFriendRemoved",
        "CloseFriendAdded",
        "UserFollowed",
        "UserFollowed",
        "UserUnfollowed",
    ]
    assert events[0]["data"] == {"user_id": me, "friend_id": pal}
    assert events[3]["data"] == {"follower_id": me, "followee_id": pal}

    api.rejected(409, "POST", f"{CF}/{pal}", me, code="already_close_friend")
    api.rejected(404, "DELETE", f"{CF}/{uid('nobody')}", me, code="not_close_friend")
    api.rejected(404, "DELETE", f"{CF}/{me}", pal, code="not_close_friend")  # lists are one-way
    api.rejected(422, "POST", f"{CF}/{me}", me)
    api.rejected(422, "POST", f"{CF}/bad%20name", me)
    api.rejected(404, "DELETE", f"{FOLLOW}/{ex}", me, code="not_following")
    api.rejected(404, "DELETE", f"{FOLLOW}/{uid('stranger')}", me, code="not_following")
    api.rejected(422, "PUT", f"{FOLLOW}/{me}", me, code="cannot_follow_self")
    api.rejected(422, "PUT", f"{FOLLOW}/{'x' * 65}", me)


# -- the contract's error table ---------------------------------------------------------------


def test_400_body_not_json_or_not_an_object(api, uid):
    user, fan = uid("user"), uid("fan")
    story = create_story(api, user, privacy="public")
    for raw in (b"{not json", b"\xff\xfe", b'{"a": 1,}', b"{'single': 'quotes'}"):
        api.rejected(400, "POST", S, user, data=raw, content_type="application/json", code="invalid_json")
    for raw in (b"[1, 2]", b'"text"', b"42", b"null", b"true", b"[]"):
        api.rejected(400, "POST", S, user, data=raw, content_type="application/json", code="not_an_object")
    api.rejected(400, "POST", f"{S}/{story}/reply", fan, data=b"[]", content_type="application/json")
    api.rejected(400, "POST", f"{S}/{story}/interact", fan, data=b"{", content_type="application/json")
    api.rejected(400, "POST", f"{S}/{story}/view", fan, data=b"[]", content_type="application/json")
    api.rejected(400, "POST", H, user, data=b"[]", content_type="application/json")
    api.rejected(400, "POST", f"{H}/reorder", user, data=b"nope", content_type="application/json")
    api.rejected(400, "PATCH", f"{H}/{uuid.uuid4()}", user, data=b"nope", content_type="application/json")
    api.rejected(400, "POST", S, user, code="body_required")  # no body at all
    api.rejected(400, "POST", f"{S}/{story}/reply", fan, code="body_required")


def test_401_no_token_bad_signature_expired(api, uid):
    user = uid("user")
    body = text_story()
    resp = api.rejected(401, "POST", S, None, body, code="unauthorized")
    assert resp.header("www-authenticate") == "Bearer"
    api.rejected(
        401,
        "POST",
        S,
        None,
        body,
        token=api.token(user, secret="another-secret-entirely-32-bytes!!"),
        code="unauthorized",
    )
    api.rejected(401, "POST", S, None, body, token=api.token(user, ttl=-60), code="unauthorized")
    api.rejected(401, "POST", S, None, body, token="not.a.jwt")
    api.rejected(401, "POST", S, None, body, headers={"Authorization": f"Basic {api.token(user)}"})
    api.rejected(401, "POST", S, None, body, headers={"Authorization": "Bearer"})
    api.rejected(401, "POST", S, None, body, token=api.token("bad user!"))
    api.rejected(401, "POST", S, None, body, token=api.token("u" * 65))
    unsigned = api.token(user).rsplit(".", 1)[0] + "."
    api.rejected(401, "POST", S, None, body, token=unsigned)
    for method, path in ROUTES:
        concrete = (
            path.replace("{story_id}", str(uuid.uuid4()))
            .replace("{highlight_id}", str(uuid.uuid4()))
            .replace("{user_id}", "someone")
        )
        api.rejected(401, method.upper(), concrete, None, {})
    # the body never names the acting user
    api.rejected(422, "POST", S, user, text_story(user_id="someone-else"))


def test_403_not_the_owner(api, uid):
    owner, viewer = uid("owner"), uid("viewer")
    story = create_story(api, owner, privacy="public")
    resp = api.request("POST", H, owner, {"title": "Mine", "story_ids": [story]})
    assert resp.status == 201, resp
    highlight = resp.body["highlight_id"]
    api.rejected(403, "DELETE", f"{S}/{story}", viewer, code="not_owner")
    api.rejected(403, "DELETE", f"{H}/{highlight}", viewer, code="not_owner")
    api.rejected(403, "PATCH", f"{H}/{highlight}", viewer, {"is_pinned": True}, code="not_owner")


def test_404_unknown_and_invisible_stories(api, uid):
    owner, follower, stranger, cf, allowed, hidden, ex = (
        uid(n) for n in ("owner", "follower", "stranger", "cf", "allowed", "hidden", "ex")
    )
    for u in (follower, cf, allowed, hidden, ex):
        follow(api, u, owner)
    resp = api.request("POST", f"{CF}/{cf}", owner)
    assert resp.status == 201, resp
    resp = api.request("DELETE", f"{FOLLOW}/{owner}", ex)  # an unfollow takes the audience away again
    assert resp.status == 204, resp

    followers = create_story(api, owner, privacy="followers", stickers=all_stickers()[:1])
    close = create_story(api, owner, privacy="close_friends")
    custom = create_story(api, owner, privacy="custom", allowed_viewer_ids=[allowed, stranger])
    hidden_from = create_story(api, owner, privacy="public", hidden_from_ids=[hidden])
    hidden_custom = create_story(api, owner, privacy="custom", allowed_viewer_ids=[hidden], hidden_from_ids=[hidden])

    # who may see what: 202 for the audience, 404 (never 403) for everyone else
    audiences = {
        followers: {follower, cf, allowed, hidden},
        close: {cf},
        custom: {allowed, stranger},
        hidden_from: {follower, cf, allowed, stranger, ex},
        hidden_custom: set(),
    }
    everyone = [follower, stranger, cf, allowed, hidden, ex]
    for story, audience in audiences.items():
        for user in everyone:
            if user in audience:
                resp = api.request("POST", f"{S}/{story}/view", user)
                assert resp.status == 202, (story, user, resp)
    resp = api.request("POST", f"{S}/{followers}/interact", allowed, {"sticker_index": 0, "option_index": 0})
    assert resp.status == 200, resp

    for story, audience in audiences.items():
        for user in everyone:
            if user not in audience:
                api.rejected(404, "POST", f"{S}/{story}/view", user, code="not_found")
    unknown = str(uuid.uuid4())
    api.rejected(404, "POST", f"{S}/{unknown}/view", stranger, code="not_found")
    api.rejected(404, "POST", f"{S}/not-a-uuid/view", stranger)
    api.rejected(404, "POST", f"{S}/{unknown}/reply", stranger, {"text": "hi"})
    api.rejected(404, "POST", f"{S}/{unknown}/interact", stranger, {"sticker_index": 0, "option_index": 0})
    api.rejected(404, "DELETE", f"{S}/{unknown}", stranger)
    # the other commands hide the story just the same
    api.rejected(404, "POST", f"{S}/{followers}/reply", stranger, {"text": "hi"})
    api.rejected(404, "POST", f"{S}/{followers}/interact", stranger, {"sticker_index": 0, "option_index": 0})
    api.rejected(404, "POST", f"{S}/{followers}/interact", stranger, {"sticker_index": 5})  # no sticker leak
    api.rejected(404, "POST", f"{S}/{followers}/interact", ex, {"sticker_index": 0, "option_index": 1})
    api.rejected(404, "DELETE", f"{S}/{close}", follower)
    api.rejected(404, "DELETE", f"{S}/{followers}", stranger)
    api.rejected(404, "DELETE", f"{S}/{hidden_from}", hidden)
    api.rejected(404, "POST", f"{S}/{custom}/reply", follower, {"text": "hi"})
    api.rejected(404, "POST", f"{S}/{hidden_from}/reply", hidden, {"text": "hi"})


def test_413_body_over_64_kib(api, uid):
    user, fan = uid("user"), uid("fan")
    story = create_story(api, user, privacy="public")
    big = {"story_type": "text", "text_content": "x", "media_id": "m" * (70 * 1024)}
    api.rejected(413, "POST", S, user, big, code="body_too_large")
    raw = b'{"story_type": "text", "text_content": "' + b"y" * (65 * 1024) + b'"}'
    api.rejected(413, "POST", S, user, data=raw, content_type="application/json", chunked=True)
    api.rejected(413, "POST", f"{S}/{story}/reply", fan, {"text": "z" * (65 * 1024)})
    api.rejected(413, "POST", f"{S}/{story}/view", fan, {"pad": "z" * (65 * 1024)})
    api.rejected(413, "PATCH", f"{H}/{uuid.uuid4()}", user, {"title": "t" * (65 * 1024)})
    # just under the limit is not refused for its size (it fails on its fields instead)
    near = {"story_type": "text", "text_content": "x", "media_id": "m" * (60 * 1024)}
    api.rejected(422, "POST", S, user, near)


def test_415_not_application_json(api, uid):
    user, fan = uid("user"), uid("fan")
    story = create_story(api, user, privacy="public")
    body = b'{"story_type": "text", "text_content": "hi"}'
    api.rejected(415, "POST", S, user, data=body, content_type="text/plain", code="unsupported_media_type")
    api.rejected(415, "POST", S, user, data=body, content_type="application/x-www-form-urlencoded")
    api.rejected(415, "POST", S, user, data=body, content_type="multipart/form-data; boundary=x")
    api.rejected(415, "POST", S, user, data=body)  # no Content-Type at all
    api.rejected(415, "POST", f"{S}/{story}/view", fan, data=b"{}", content_type="text/plain")
    api.rejected(415, "POST", f"{S}/{story}/reply", fan, data=b'{"text": "hi"}', content_type="text/json")
    api.rejected(
        415, "PATCH", f"{H}/{uuid.uuid4()}", user, data=b'{"title": "t"}', content_type="application/merge-patch+json"
    )


def test_422_lists_every_failing_field(api, uid):
    user = uid("user")
    resp = api.rejected(
        422,
        "POST",
        S,
        user,
        {"story_type": "gif", "duration": 20, "expires_in_hours": 5, "privacy": "friends_of_friends", "surprise": 1},
        code="validation_error",
    )
    details = resp.body["error"]["details"]
    fields = {d["field"] for d in details}
    assert {"story_type", "duration", "expires_in_hours", "privacy", "surprise"} <= fields, fields
    assert all(d["message"] for d in details)

    resp = api.rejected(422, "POST", S, user, {"story_type": "text"})
    assert [d["field"] for d in resp.body["error"]["details"]] == ["text_content"]
    resp = api.rejected(422, "POST", S, user, {"story_type": "text", "text_content": "   "})
    assert [d["field"] for d in resp.body["error"]["details"]] == ["text_content"]
    resp = api.rejected(422, "POST", S, user, {"story_type": "image"})
    assert resp.body["error"]["details"][0]["field"] in ("media_url", "media_id")
    resp = api.rejected(422, "POST", S, user, {"story_type": "video", "text_content": "no media"})
    assert resp.body["error"]["details"][0]["field"] in ("media_url", "media_id")
    resp = api.rejected(422, "POST", S, user, text_story(privacy="friends"))  # entativa's word, not vignette's
    assert resp.body["error"]["details"][0]["field"] == "privacy"
    resp = api.rejected(422, "POST", S, user, text_story(privacy="custom"))
    assert resp.body["error"]["details"][0]["field"] == "allowed_viewer_ids"
    api.rejected(422, "POST", S, user, text_story(allowed_viewer_ids=["someone"]))
    api.rejected(422, "POST", S, user, text_story(hidden_from_ids=[user]))
    api.rejected(422, "POST", S, user, text_story(hidden_from_ids=["not valid!"]))
    api.rejected(422, "POST", S, user, text_story(background_color="red"))
    api.rejected(422, "POST", S, user, text_story(background_gradient=["#000000"]))
    api.rejected(422, "POST", S, user, text_story(media_url="not a url"))
    api.rejected(422, "POST", S, user, text_story(duration=0.5))
    api.rejected(422, "POST", S, user, text_story(duration=15.5))
    api.rejected(422, "POST", S, user, text_story(expires_in_hours=72))
    api.rejected(422, "POST", S, user, text_story(allow_replies="friends"))
    api.rejected(422, "POST", S, user, text_story(text_content="t" * 2201))
    api.rejected(422, "POST", S, user, text_story(stickers="none"))

    poll = all_stickers()[POLL]
    api.rejected(422, "POST", S, user, text_story(stickers=[poll, poll]))  # one poll per story
    api.rejected(422, "POST", S, user, text_story(stickers=[all_stickers()[LOCATION]] * 11))
    api.rejected(422, "POST", S, user, text_story(stickers=[{"sticker_type": "poll"}]))  # no payload
    api.rejected(422, "POST", S, user, text_story(stickers=[{**poll, "quiz": all_stickers()[QUIZ]["quiz"]}]))
    api.rejected(422, "POST", S, user, text_story(stickers=[{**poll, "sticker_type": "gif"}]))
    api.rejected(422, "POST", S, user, text_story(stickers=[{**poll, "x": 1.5}]))
    api.rejected(422, "POST", S, user, text_story(stickers=[{**poll, "height": -0.1}]))
    api.rejected(422, "POST", S, user, text_story(stickers=[{**poll, "rotation": 181}]))
    api.rejected(
        422,
        "POST",
        S,
        user,
        text_story(stickers=[{"sticker_type": "poll", "poll": {"question": "?", "options": [{"text": "only one"}]}}]),
    )
    api.rejected(
        422,
        "POST",
        S,
        user,
        text_story(
            stickers=[
                {"sticker_type": "poll", "poll": {"question": "?", "options": [{"text": str(i)} for i in range(5)]}}
            ]
        ),
    )
    api.rejected(
        422,
        "POST",
        S,
        user,
        text_story(
            stickers=[
                {
                    "sticker_type": "quiz",
                    "quiz": {"question": "?", "options": [{"text": "a"}, {"text": "b"}], "correct_answer_index": 2},
                }
            ]
        ),
    )
    api.rejected(
        422,
        "POST",
        S,
        user,
        text_story(stickers=[{"sticker_type": "slider", "slider": {"question": "?", "min_value": 5, "max_value": 5}}]),
    )
    api.rejected(
        422,
        "POST",
        S,
        user,
        text_story(stickers=[{"sticker_type": "countdown", "countdown": {"title": "t", "end_time": "next tuesday"}}]),
    )
    api.rejected(
        422,
        "POST",
        S,
        user,
        text_story(stickers=[{"sticker_type": "location", "location": {"name": "x", "lat": 91, "lng": 0}}]),
    )
    api.rejected(
        422,
        "POST",
        S,
        user,
        text_story(stickers=[{"sticker_type": "mention", "mention": {"user_id": "no spaces allowed"}}]),
    )
    api.rejected(
        422, "POST", S, user, text_story(stickers=[{"sticker_type": "link", "link": {"url": "javascript:alert(1)"}}])
    )

    resp = api.rejected(422, "POST", S, user, text_story(), headers={"Idempotency-Key": "k" * 256})
    assert resp.body["error"]["details"][0]["field"] == "Idempotency-Key"


def test_422_booleans_are_not_numbers(api, uid):
    owner, fan = uid("owner"), uid("fan")
    story = create_story(api, owner, privacy="public", stickers=all_stickers())
    api.rejected(422, "POST", f"{S}/{story}/interact", fan, {"sticker_index": SLIDER, "value": True})
    api.rejected(422, "POST", f"{S}/{story}/interact", fan, {"sticker_index": True, "option_index": 1})
    api.rejected(422, "POST", f"{S}/{story}/interact", fan, {"sticker_index": POLL, "option_index": False})
    api.rejected(422, "POST", S, owner, text_story(duration=True))


# -- Idempotency-Key ------------------------------------------------------------------------


def test_idempotency_key_replays_the_first_answer(api, uid):
    user, other, fan = uid("user"), uid("other"), uid("fan")
    key = {"Idempotency-Key": f"create-{uuid.uuid4()}"}
    body = text_story(privacy="public", stickers=all_stickers())
    first = api.request("POST", S, user, body, headers=key)
    assert first.status == 201, first
    story = first.body["story_id"]
    replays = [api.request("POST", S, user, body, headers=key) for _ in range(2)]
    # the same JSON with its keys in another order is the same request
    replays.append(api.request("POST", S, user, dict(reversed(list(body.items()))), headers=key))
    for again in replays:
        assert (again.status, again.body, again.header("x-stories-position")) == (
            first.status,
            first.body,
            first.header("x-stories-position"),
        ), (first, again)
    # keys belong to their user
    theirs = api.request("POST", S, other, body, headers=key)
    assert theirs.status == 201 and theirs.body["story_id"] != story, theirs

    # a retried vote gets its first answer back, not "already voted"
    vote_key = {"Idempotency-Key": "vote-1"}
    vote = {"sticker_index": POLL, "option_index": 0}
    first_vote = api.request("POST", f"{S}/{story}/interact", fan, vote, headers=vote_key)
    assert first_vote.status == 200, first_vote
    again = api.request("POST", f"{S}/{story}/interact", fan, vote, headers=vote_key)
    assert (again.status, again.body, again.header("x-stories-position")) == (
        first_vote.status,
        first_vote.body,
        first_vote.header("x-stories-position"),
    ), (first_vote, again)
    # so does a view (no body)
    view_key = {"Idempotency-Key": "view-1"}
    first_view = api.request("POST", f"{S}/{story}/view", fan, headers=view_key)
    assert first_view.status == 202, first_view
    again = api.request("POST", f"{S}/{story}/view", fan, headers=view_key)
    assert (again.status, again.body, again.header("x-stories-position")) == (
        first_view.status,
        first_view.body,
        first_view.header("x-stories-position"),
    ), (first_view, again)

    # every retry appended nothing: one event per first request
    events = api.export()
    created = [e for e in events if e["event_type"] == "StoryCreated" and e["data"]["user_id"] in (user, other)]
    assert [(e["data"]["user_id"], e["stream_id"]) for e in created] == [
        (user, story),
        (other, theirs.body["story_id"]),
    ]
    assert created[0]["position"] == first.position
    engaged = [e["event_type"] for e in events if e["data"].get("user_id") == fan or e["data"].get("viewer_id") == fan]
    assert engaged == ["PollVoted", "StoryViewed"]

    # same key, another body: 409, and nothing stored
    api.rejected(
        409,
        "POST",
        S,
        user,
        text_story(privacy="public", text_content="other"),
        headers=key,
        code="idempotency_key_reused",
    )
    # same key on another path: another request, 409 too
    api.rejected(409, "POST", H, user, {"title": "t", "story_ids": [story]}, headers=key, code="idempotency_key_reused")
    api.rejected(
        409,
        "POST",
        f"{S}/{story}/interact",
        fan,
        {"sticker_index": POLL, "option_index": 1},
        headers=vote_key,
        code="idempotency_key_reused",
    )
    # without the key, the second vote is a conflict
    api.rejected(409, "POST", f"{S}/{story}/interact", fan, vote, code="already_voted")


# -- platforms and audiences ------------------------------------------------------------------


def test_followers_story_visible_to_followers_only(api, uid):
    owner, fan, stranger = uid("owner"), uid("fan"), uid("stranger")
    follow(api, fan, owner)
    story = create_story(api, owner)  # followers by default on vignette
    resp = api.request("POST", f"{S}/{story}/view", fan)  # one-way: the owner need not follow back
    assert resp.status == 202 and resp.body["counted"] is True, resp
    assert [e["data"]["privacy"] for e in api.export() if e["stream_id"] == story] == ["followers"]
    api.rejected(404, "POST", f"{S}/{story}/view", stranger, code="not_found")
    api.rejected(404, "POST", f"{S}/{story}/view", owner.upper())  # user ids are exact


def test_entativa_friends_are_mutual_follows(entativa_api, uid):
    api = entativa_api
    owner, one_way, friend, late, ex = uid("owner"), uid("oneway"), uid("friend"), uid("late"), uid("ex")
    for a, b in ((one_way, owner), (friend, owner), (owner, friend), (late, owner), (ex, owner), (owner, ex)):
        follow(api, a, b)
    resp = api.request("POST", S, owner, text_story())
    assert resp.status == 201, resp
    story = resp.body["story_id"]
    explicit = create_story(api, owner, privacy="friends")
    resp = api.request("POST", f"{S}/{story}/view", friend)
    assert resp.status == 202, resp
    resp = api.request("POST", f"{S}/{story}/view", ex)
    assert resp.status == 202, resp
    follow(api, owner, late)  # the owner follows back: now they are friends
    resp = api.request("POST", f"{S}/{explicit}/view", late)
    assert resp.status == 202, resp
    resp = api.request("DELETE", f"{FOLLOW}/{owner}", ex)  # and an unfollow ends the friendship
    assert resp.status == 204, resp

    created = [e for e in api.export() if e["stream_id"] in (story, explicit)]
    assert [e["data"]["privacy"] for e in created] == ["friends", "friends"]
    assert {e["platform"] for e in created} == {"entativa"}

    api.rejected(404, "POST", f"{S}/{story}/view", one_way, code="not_found")
    api.rejected(404, "POST", f"{S}/{story}/reply", one_way, {"text": "hi"})
    api.rejected(404, "POST", f"{S}/{story}/view", ex)
    api.rejected(404, "POST", f"{S}/{explicit}/view", uid("stranger"))
    resp = api.rejected(422, "POST", S, owner, text_story(privacy="followers"))
    assert resp.body["error"]["details"][0]["field"] == "privacy"
    assert "entativa" in api.get("/openapi.json").body["info"]["title"]
