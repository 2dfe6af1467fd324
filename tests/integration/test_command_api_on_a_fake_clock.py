"""The command API's time rules, in process: ``aiohttp_client(create_app(...))`` on eventsourcing's
SQLite recorder in memory (``sqlite:///:memory:``) and a clock the test moves, so an instant such
as a story's ``expires_at`` is hit exactly rather than waited for.

The rule under test is the contract's exact time cut: a story is live while ``now < expires_at``
(``domain.stories.is_live``), so at ``expires_at`` itself it no longer takes views, answers, edits
or reshares (others get 404, as for a story they never could see; its owner gets 409
``story_expired``), and it no longer holds one of its author's live-story slots.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import jwt
import pytest

from commands.event_store import EventStore
from stories.settings import Settings
from tests.command_requests import S, text_story
from tests.conftest import FakeClock
from write_api.app import create_app

SECRET = "test-secret-of-at-least-32-bytes-for-hs256"
POLL = {"sticker_type": "poll", "poll": {"question": "Tea?", "options": [{"text": "yes"}, {"text": "no"}]}}


class Api:
    """The test client with a token per user."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def call(self, method: str, path: str, user: str, body: Any = None) -> tuple[int, dict]:
        now = int(time.time())  # tokens are checked against the wall clock, not the domain's
        token = jwt.encode({"sub": user, "iat": now, "exp": now + 600}, SECRET, algorithm="HS256")
        kwargs: dict[str, Any] = {"headers": {"Authorization": f"Bearer {token}"}}
        if body is not None:
            kwargs["json"] = body
        resp = await self.client.request(method, path, **kwargs)
        return resp.status, (await resp.json() if resp.content_length else {})

    async def post_story(self, user: str, **fields: Any) -> tuple[str, datetime]:
        status, body = await self.call("POST", S, user, text_story(privacy="public", **fields))
        assert status == 201, body
        return body["story_id"], datetime.fromisoformat(body["expires_at"])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def api(aiohttp_client, tmp_path, clock) -> Api:
    settings = Settings(data_dir=tmp_path, jwt_secret=SECRET, rate_limit_per_s=0, limit_live_stories=2)
    store = EventStore("sqlite:///:memory:")
    try:
        yield Api(await aiohttp_client(create_app(settings, store=store, clock=clock)))
    finally:
        store.close()


async def test_a_story_takes_views_and_answers_until_the_instant_it_expires(api, clock):
    story, expires_at = await api.post_story("ann", stickers=[POLL])
    assert expires_at == clock.now + timedelta(hours=24)
    clock.now = expires_at - timedelta(microseconds=1)
    assert (await api.call("POST", f"{S}/{story}/view", "bob"))[0] == 202
    assert (await api.call("POST", f"{S}/{story}/interact", "bob", {"sticker_index": 0, "option_index": 0}))[0] == 200
    clock.now = expires_at
    for path, body in ((f"{S}/{story}/view", None), (f"{S}/{story}/interact", {"sticker_index": 0, "option_index": 1})):
        for viewer in ("bob", "cid"):  # one who engaged before, one who never did
            status, answer = await api.call("POST", path, viewer, body)
            assert (status, answer["error"]["code"]) == (404, "not_found")
    status, answer = await api.call("POST", f"{S}/{story}/view", "ann")
    assert (status, answer["error"]["code"]) == (409, "story_expired")


async def test_an_edit_lands_up_to_the_expiry_and_not_at_it(api, clock):
    story, expires_at = await api.post_story("ann", expires_in_hours=6)
    assert expires_at == clock.now + timedelta(hours=6)
    clock.now = expires_at - timedelta(seconds=1)
    status, body = await api.call("PATCH", f"{S}/{story}", "ann", {"text_content": "still here"})
    assert status == 200 and body["edited"] is True
    clock.now = expires_at
    status, body = await api.call("PATCH", f"{S}/{story}", "ann", {"text_content": "too late"})
    assert (status, body["error"]["code"]) == (409, "story_expired")


async def test_an_expired_story_frees_its_authors_live_slot_at_its_expiry(api, clock):
    """``limit_live_stories=2``: a third live story is refused until the first one's instant."""
    _, first_expires = await api.post_story("ann", expires_in_hours=6)
    clock.advance(hours=1)
    await api.post_story("ann", expires_in_hours=6)
    status, body = await api.call("POST", S, "ann", text_story())
    assert (status, body["error"]["code"]) == (409, "limit_reached")
    clock.now = first_expires - timedelta(microseconds=1)
    assert (await api.call("POST", S, "ann", text_story()))[0] == 409
    clock.now = first_expires
    assert (await api.call("POST", S, "ann", text_story()))[0] == 201


async def test_a_reshare_is_refused_once_the_original_expired(api, clock):
    story, expires_at = await api.post_story("ann")
    clock.now = expires_at - timedelta(seconds=1)
    assert (await api.call("POST", f"{S}/{story}/share", "bob"))[0] == 201
    clock.now = expires_at
    status, body = await api.call("POST", f"{S}/{story}/share", "cid")
    assert (status, body["error"]["code"]) == (404, "not_found")
