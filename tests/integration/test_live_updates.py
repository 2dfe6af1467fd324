"""The query API's server-sent events (``read_api.live``), in process: commands go through the
real write path (StoriesApplication + GroupCommitter over a SQLite log), the projector
(ProjectionRunner + MongoViewStore + RedisViewStore) applies them and announces each batch on the
sharded change channel, and the query API app (``read_api.app.create_app``, served by
pytest-aiohttp) streams to its clients. Every test runs on one Redis and on a Redis Cluster.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from pymongo import MongoClient

from commands import models
from commands import use_cases as uc
from commands.application import StoriesApplication
from commands.event_store import EventStore
from commands.group_commit import GroupCommitter
from projections.mongo_views import MongoViewStore
from projections.redis_views import RedisViewStore
from projections.runner import ProjectionRunner
from read_api import live
from read_api.app import LIVE, POSITION, create_app
from stories.auth import mint_token
from stories.backends import connect_redis
from tests.conftest import FakeClock, on_one_redis_and_a_cluster

redis_url = on_one_redis_and_a_cluster  # the subscription runs on one Redis and on a Redis Cluster

pytestmark = pytest.mark.timeout(120)

POLL = {"sticker_type": "poll", "poll": {"question": "Tea?", "options": [{"text": "yes"}, {"text": "no"}]}}
WAIT_S = 10.0  # longest wait for an event that must come
QUIET_S = 0.6  # how long "nothing comes" is watched for


class Events:
    """One open event stream, read event by event (comments are counted, not returned)."""

    def __init__(self, response) -> None:
        self.response = response
        self.comments = 0

    async def next(self, timeout: float = WAIT_S) -> tuple[str, int | None, Any]:
        event, event_id, data = "message", None, []
        async with asyncio.timeout(timeout):
            while True:
                line = await self.response.content.readline()
                if not line:
                    raise EOFError("the stream ended")
                line = line.decode().rstrip("\n")
                if not line:
                    if data:
                        return event, event_id, orjson.loads("\n".join(data))
                    event, event_id, data = "message", None, []
                    continue
                if line.startswith(":"):
                    self.comments += 1
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    event = value
                elif name == "id":
                    event_id = int(value)
                elif name == "data":
                    data.append(value)

    async def until(self, wanted: Callable[[str, Any], bool], timeout: float = WAIT_S) -> tuple[str, int, Any]:
        """The first event ``wanted`` accepts, skipping others."""
        async with asyncio.timeout(timeout):
            while True:
                event, event_id, data = await self.next(timeout)
                if wanted(event, data):
                    return event, event_id, data

    async def nothing(self, within: float = QUIET_S) -> None:
        with pytest.raises(TimeoutError):
            got = await self.next(within)
            pytest.fail(f"unexpected event {got}")

    def close(self) -> None:
        self.response.close()


class World:
    """Write side, projector and a query API client on one test's own stores."""

    def __init__(self, settings, client, clock: FakeClock, tmp_path) -> None:
        self.settings, self.client, self.clock = settings, client, clock
        self.store = EventStore(f"sqlite:///{tmp_path / 'events.sqlite3'}")
        self.committer = GroupCommitter(self.store)
        self.app = StoriesApplication(self.store, self.committer, settings.platform, clock=clock)
        self.mongo = MongoClient(settings.mongodb_url, tz_aware=True)
        self.redis = connect_redis(settings.redis_url)
        self.runners = [
            ProjectionRunner(self.store, MongoViewStore(self.mongo, settings.mongodb_database)),
            ProjectionRunner(self.store, RedisViewStore(self.redis, settings.redis_prefix)),
        ]
        self.tokens: dict[str, str] = {}

    def close(self) -> None:
        self.committer.close()
        self.store.close()
        self.mongo.close()
        self.redis.close()

    def token(self, user: str) -> str:
        if user not in self.tokens:
            self.tokens[user] = mint_token(self.settings, user)
        return self.tokens[user]

    def headers(self, user: str, **extra: str) -> dict:
        return {"Authorization": f"Bearer {self.token(user)}", **extra}

    async def run(self, command: uc.Command) -> uc.Result:
        """One command through group commit, then the projector catches up."""
        self.clock.advance(seconds=1)
        step = self.app.step(command)
        outcome = await asyncio.to_thread(self.committer.run_sync, lambda batch: step(batch, self.clock()))
        await self.project()
        return outcome.result

    async def project(self) -> None:
        for runner in self.runners:
            await asyncio.to_thread(runner.catch_up)

    async def story(self, owner: str, **body: Any) -> str:
        spec = {"story_type": "text", "text_content": "hi", **body}
        created = await self.run(uc.CreateStory(owner, models.CreateStory(**spec)))
        return str(created.story_id)

    async def vote(self, user: str, story_id: str, option: int) -> None:
        await self.run(uc.Interact(user, story_id, models.Interact(sticker_index=0, option_index=option)))

    async def position(self) -> int:
        """The query API's projection position once it has seen the projector's latest."""
        positions = self.client.server.app[POSITION]
        head = self.store.head()
        assert await positions.wait_for(head, WAIT_S)
        return positions.current

    async def stream(
        self, path: str, user: str | None, *, query: dict | None = None, session=None, **headers: str
    ) -> Events:
        sent = self.headers(user, **headers) if user else headers
        if session is None:
            response = await self.client.get(path, headers=sent, params=query or {})
        else:
            response = await session.get(self.client.make_url(path), headers=sent, params=query or {})
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        return Events(response)


@pytest.fixture
async def world(read_side_settings, aiohttp_client, tmp_path):
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    app = create_app(read_side_settings, clock=clock)
    client = await aiohttp_client(app)
    w = World(read_side_settings, client, clock, tmp_path)
    hub = app[LIVE]
    async with asyncio.timeout(WAIT_S):
        await hub.subscribed.wait()
    try:
        yield w
    finally:
        w.close()


def votes(story: dict) -> list[int]:
    return [o["votes"] for o in story["stickers"][0]["poll"]["options"]]


def live_path(story_id: str) -> str:
    return f"/api/v1/stories/{story_id}/live"


FEED_LIVE = "/api/v1/stories/feed/live"


# -- 1, 7: a vote reaches a subscriber; ?access_token= ------------------------------------------


async def test_a_vote_reaches_a_subscriber(world: World):
    story_id = await world.story("alice", privacy="public", stickers=[POLL])
    await world.position()
    events = await world.stream(live_path(story_id), "bob")
    event, first_id, story = await events.next()
    assert event == "story" and story["story_id"] == story_id and votes(story) == [0, 0]
    await world.vote("carol", story_id, 1)
    event, event_id, story = await events.next()
    assert event == "story" and votes(story) == [0, 1]
    assert event_id >= first_id and event_id == await world.position()
    events.close()


async def test_access_token_in_the_query_and_a_bad_token(world: World):
    story_id = await world.story("alice", privacy="public", stickers=[POLL])
    await world.position()
    events = await world.stream(live_path(story_id), None, query={"access_token": world.token("bob")})
    assert (await events.next())[0] == "story"
    events.close()
    for path in (live_path(story_id), FEED_LIVE):
        for sent in (
            {"params": {"access_token": "not-a-token"}},
            {},
            {"headers": {"Authorization": "Bearer nope"}, "params": {"access_token": world.token("bob")}},
        ):
            response = await world.client.get(path, **sent)
            assert response.status == 401
            assert response.headers["Content-Type"].startswith("application/json")
            assert (await response.json())["error"]["code"] == "unauthorized"
            assert "X-Stories-Position" in response.headers
    events = await world.stream(FEED_LIVE, None, query={"access_token": world.token("bob")})
    events.close()


# -- 2: resume ----------------------------------------------------------------------------------


async def test_resume_after_a_disconnect_loses_nothing(world: World):
    story_id = await world.story("alice", privacy="public", stickers=[POLL])
    await world.position()
    events = await world.stream(live_path(story_id), "bob")
    _, last_id, story = await events.next()
    events.close()
    await world.vote("carol", story_id, 0)  # while disconnected
    now = await world.position()
    events = await world.stream(live_path(story_id), "bob", **{"Last-Event-ID": str(last_id)})
    event, event_id, story = await events.next()
    assert event == "story" and votes(story) == [1, 0] and event_id == now
    events.close()
    # up to date: nothing until the next change, then that change
    events = await world.stream(live_path(story_id), "bob", **{"Last-Event-ID": str(now)})
    await events.nothing()
    await world.vote("dave", story_id, 1)
    event, event_id, story = await events.next()
    assert event == "story" and votes(story) == [1, 1] and event_id > now
    events.close()


# -- 3: hidden or nonexistent: 404 ----------------------------------------------------------------


async def test_a_hidden_or_unknown_story_is_404_json(world: World):
    hidden = await world.story("alice", privacy="close_friends")
    await world.position()
    for story_id in (hidden, str(uuid.uuid4()), "not-an-id"):
        response = await world.client.get(live_path(story_id), headers=world.headers("bob"))
        assert response.status == 404
        assert response.headers["Content-Type"].startswith("application/json")
        assert (await response.json())["error"]["code"] == "not_found"
    # the owner may stream it
    events = await world.stream(live_path(hidden), "alice")
    assert (await events.next())[0] == "story"
    events.close()


# -- 4: access lost ---------------------------------------------------------------------------------


async def test_a_viewer_removed_from_close_friends_gets_end(world: World):
    await world.run(uc.AddCloseFriend("alice", "bob"))
    story_id = await world.story("alice", privacy="close_friends")
    await world.position()
    events = await world.stream(live_path(story_id), "bob")
    assert (await events.next())[0] == "story"
    await world.run(uc.RemoveCloseFriend("alice", "bob"))
    event, event_id, data = await events.next()
    assert event == "end" and data == {"story_id": story_id}
    assert event_id == await world.position()
    with pytest.raises(EOFError):
        await events.next()


# -- 5: deletion and expiry ------------------------------------------------------------------------


async def test_deletion_sends_end(world: World):
    story_id = await world.story("alice", privacy="public")
    await world.position()
    viewer = await world.stream(live_path(story_id), "bob")
    owner = await world.stream(live_path(story_id), "alice")
    assert (await viewer.next())[0] == (await owner.next())[0] == "story"
    await world.run(uc.DeleteStory("alice", story_id))
    for events in (viewer, owner):
        assert (await events.until(lambda e, d: e != "story"))[0] == "end"
        with pytest.raises(EOFError):
            await events.next()


async def test_expiry_sends_end(world: World):
    story_id = await world.story("alice", privacy="public", expires_in_hours=6)
    await world.position()
    viewer = await world.stream(live_path(story_id), "bob")
    owner = await world.stream(live_path(story_id), "alice")
    assert (await viewer.next())[0] == (await owner.next())[0] == "story"
    world.clock.advance(hours=6, seconds=1)
    await world.run(uc.ExpireStory(uuid.UUID(story_id)))  # what the expirer does
    assert (await viewer.next())[0] == "end"
    event, _, story = await owner.next()  # the owner sees it expired, then the end
    assert event == "story" and story["is_expired"] is True
    assert (await owner.next())[0] == "end"


# -- 6: the feed -------------------------------------------------------------------------------------


async def test_the_feed_stream_names_a_followed_author_who_posts(world: World):
    await world.run(uc.Follow("bob", "alice"))
    await world.position()
    events = await world.stream(FEED_LIVE, "bob")
    await world.story("alice", privacy="public")
    event, event_id, data = await events.next()
    assert (event, data) == ("tray", {"user_id": "alice"})
    assert event_id == await world.position()
    await world.story("zed", privacy="public")  # not followed: nothing
    await events.nothing()
    await world.story("bob", privacy="public")  # the viewer's own entry
    assert (await events.next())[:3:2] == ("tray", {"user_id": "bob"})
    await world.run(uc.Follow("bob", "zed"))  # a new follow: zed's entry appears
    assert (await events.next())[:3:2] == ("tray", {"user_id": "zed"})
    await world.story("zed", privacy="public")  # and zed's stories now count
    assert (await events.next())[:3:2] == ("tray", {"user_id": "zed"})
    events.close()
    # resuming from an old position: the current state (every followed author with live stories)
    events = await world.stream(FEED_LIVE, "bob", **{"Last-Event-ID": str(event_id)})
    got = {(await events.next())[2]["user_id"] for _ in range(3)}
    assert got == {"alice", "bob", "zed"}
    events.close()


# -- keep-alive -----------------------------------------------------------------------------------------


async def test_a_comment_comes_while_nothing_happens(world: World, monkeypatch):
    monkeypatch.setattr(live, "KEEPALIVE_S", 0.2)
    story_id = await world.story("alice", privacy="public")
    await world.position()
    events = await world.stream(live_path(story_id), "bob")
    assert (await events.next())[0] == "story"
    await events.nothing(1.0)
    assert events.comments >= 3
    events.close()


# -- 8: many streams ---------------------------------------------------------------------------------


async def test_many_streams_in_one_process_all_get_a_change(world: World):
    count = 200
    story_id = await world.story("alice", privacy="public", stickers=[POLL])
    await world.run(uc.Follow("bob", "alice"))
    await world.position()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))  # the test client's: 100 at most
    stories = [await world.stream(live_path(story_id), f"v{i}", session=session) for i in range(count // 2)]
    feeds = [await world.stream(FEED_LIVE, "bob", session=session) for _ in range(count // 2)]
    await asyncio.gather(*(s.next() for s in stories))
    hub = world.client.server.app[LIVE]
    assert len(hub.watches) == count
    await world.vote("carol", story_id, 0)
    got = await asyncio.gather(*(s.next() for s in stories), *(f.next() for f in feeds))
    assert all(e == "story" and votes(d) == [1, 0] for e, _, d in got[: count // 2])
    assert all((e, d) == ("tray", {"user_id": "alice"}) for e, _, d in got[count // 2 :])
    for s in (*stories, *feeds):
        s.close()
    async with asyncio.timeout(WAIT_S):  # closed streams leave the index
        while hub.watches:
            await asyncio.sleep(0.1)
    assert not hub.by_story and not hub.by_author and not hub.by_pair and not hub.feeds_of
    await session.close()


# -- the OpenAPI document ---------------------------------------------------------------------------


async def test_the_document_lists_the_event_streams(world: World):
    document = await (await world.client.get("/openapi.json")).json()
    for path in ("/api/v1/stories/{story_id}/live", "/api/v1/stories/feed/live"):
        op = document["paths"][path]["get"]
        assert list(op["responses"]["200"]["content"]) == ["text/event-stream"]
        assert {"access_token", "Last-Event-ID"} <= {p["name"] for p in op["parameters"]}


# -- the subscription lost and back ---------------------------------------------------------------


async def test_after_the_subscription_is_lost_every_stream_gets_the_current_state(world: World):
    import redis.asyncio

    story_id = await world.story("alice", privacy="public", stickers=[POLL])
    await world.run(uc.Follow("bob", "alice"))
    await world.run(uc.Follow("bob", "carol"))  # followed, no live stories: no tray for carol
    await world.position()
    story = await world.stream(live_path(story_id), "bob")
    feed = await world.stream(FEED_LIVE, "bob")
    assert (await story.next())[0] == "story"
    hub = world.client.server.app[LIVE]
    dispatch, dropped = hub.dispatch, asyncio.Event()
    voted_at = await world.position() + 1

    def lose(notice: dict) -> None:  # these notices are lost
        if int(notice.get("position", 0)) >= voted_at:
            dropped.set()

    # Earlier notices may still be on their way (pub/sub is its own connection): let them land first.
    async with asyncio.timeout(WAIT_S):
        while hub.last_position < voted_at - 1:
            await asyncio.sleep(0.01)
    hub.dispatch = lose
    try:
        await world.vote("dave", story_id, 1)
        async with asyncio.timeout(WAIT_S):  # the vote's own notice reached the hub, and was lost
            await dropped.wait()
    finally:
        hub.dispatch = dispatch
    await story.nothing()
    # the subscriber's connection drops (as on a Redis restart or a failover)
    host, port = hub.subscriber_at
    node = redis.asyncio.Redis(host=host, port=port)
    clients = await node.client_list()
    ids = [c["id"] for c in clients if c.get("name") == hub.client_name]
    assert ids
    for client_id in ids:
        await node.execute_command("CLIENT KILL", "ID", client_id)
    await node.aclose()
    event, _, served = await story.next()
    assert event == "story" and votes(served) == [0, 1]
    assert (await feed.next())[:3:2] == ("tray", {"user_id": "alice"})
    await feed.nothing()
    story.close()
    feed.close()
