"""Requests and small helpers shared by the command API's tests (``tests/integration/test_command_api.py``
in process, ``tests/e2e/test_command_api_process.py`` against a real process)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

S = "/api/v1/stories"
H = "/api/v1/highlights"
CF = "/api/v1/close-friends"
FOLLOW = "/api/v1/following"

ROUTES = [
    ("post", "/api/v1/stories"),
    ("post", "/api/v1/stories/{story_id}/view"),
    ("post", "/api/v1/stories/{story_id}/reply"),
    ("post", "/api/v1/stories/{story_id}/interact"),
    ("delete", "/api/v1/stories/{story_id}"),
    ("post", "/api/v1/highlights"),
    ("patch", "/api/v1/highlights/{highlight_id}"),
    ("post", "/api/v1/highlights/{highlight_id}/stories"),
    ("delete", "/api/v1/highlights/{highlight_id}/stories"),
    ("delete", "/api/v1/highlights/{highlight_id}"),
    ("post", "/api/v1/highlights/reorder"),
    ("post", "/api/v1/close-friends/{user_id}"),
    ("delete", "/api/v1/close-friends/{user_id}"),
    ("put", "/api/v1/following/{user_id}"),
    ("delete", "/api/v1/following/{user_id}"),
]


def text_story(**fields: Any) -> dict:
    return {"story_type": "text", "text_content": "hello", **fields}


def all_stickers() -> list[dict]:
    end = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    return [
        {"sticker_type": "poll", "poll": {"question": "Tea?", "options": [{"text": "yes"}, {"text": "no"}]}},
        {
            "sticker_type": "quiz",
            "quiz": {"question": "2+2?", "options": [{"text": "3"}, {"text": "4"}], "correct_answer_index": 1},
        },
        {"sticker_type": "question", "question": {"text": "Ask me anything"}},
        {"sticker_type": "countdown", "countdown": {"title": "Launch", "end_time": end}},
        {"sticker_type": "slider", "slider": {"question": "How hot?", "emoji": "🔥", "min_value": 0, "max_value": 10}},
        {"sticker_type": "mention", "mention": {"user_id": "someone"}},
        {"sticker_type": "location", "location": {"name": "Paris", "lat": 48.85, "lng": 2.35}},
        {"sticker_type": "music", "music": {"title": "Song", "artist": "Band", "track_id": "t1"}},
        {"sticker_type": "link", "link": {"url": "https://example.com/x", "label": "go"}, "x": 0.1, "y": 0.9},
    ]


POLL, QUIZ, QUESTION, COUNTDOWN, SLIDER, MENTION, LOCATION, MUSIC, LINK = range(9)


def create_story(api, user: str, **fields: Any) -> str:
    resp = api.request("POST", S, user, text_story(**fields))
    assert resp.status == 201, resp
    return resp.body["story_id"]


def follow(api, follower: str, followee: str) -> None:
    resp = api.request("PUT", f"{FOLLOW}/{followee}", follower)
    assert resp.status == 200, resp


class Positions:
    """Every appending write must answer a position past all earlier ones."""

    def __init__(self) -> None:
        self.last = 0

    def appended(self, resp) -> int:
        position = resp.position
        assert position > self.last, (position, self.last, resp)
        self.last = position
        return position


def spellings(canonical: str, braces: bool = True) -> list[str]:
    """Other spellings of one UUID: upper case, no hyphens, braces, URN. ``braces=False`` for a
    path: the HTTP routers' ``{name}`` placeholders never match a segment with braces (404
    before any handler runs)."""
    bare = canonical.replace("-", "")
    return [
        canonical.upper(),
        bare,
        *(["{" + canonical + "}"] if braces else []),
        "urn:uuid:" + canonical,
        "URN:UUID:" + bare.upper(),
    ]
