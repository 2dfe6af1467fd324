"""The command API as a real process: what needs one (settings from the environment, limits and
the rate limit of a process of its own, the event store going away under it, a read side). The
rest of the command API's tests run in process: ``tests/integration/test_command_api.py``.
Every rejected request is checked to have stored nothing (``api.rejected``)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from typing import Any
from urllib.parse import quote

import pytest

from tests.command_requests import (
    CF,
    FOLLOW,
    H,
    S,
    create_story,
    follow,
    spellings,
    text_story,
)

pytestmark = pytest.mark.timeout(60)

PROMPT_S = 8.0  # a 503 for a store that is down should come well before a client gives up


def test_the_query_api_finds_stories_and_highlights_by_any_spelling(read_side, uid):
    """Issue 11 item 7, query side: path ids in any spelling find what the read models hold under
    the canonical id; a path id that is no UUID is simply not found."""
    owner, viewer = uid("owner"), uid("viewer")
    story, _ = read_side.story(owner, privacy="public")
    read_side.view(viewer, story.upper())
    resp = read_side.write("POST", H, owner, {"title": "t", "story_ids": [story.upper()]}, expect=201)
    h, at = resp.body["highlight_id"], resp.position
    for spelling in [story, *spellings(story, braces=False)]:
        assert read_side.read(f"{S}/{quote(spelling)}", viewer, at).body["story_id"] == story, spelling
        viewers = read_side.read(f"/api/v1/viewers/story/{quote(spelling)}", owner, at).body
        assert viewers["story_id"] == story and [v["user_id"] for v in viewers["items"]] == [viewer], spelling
        answers = read_side.read(f"/api/v1/viewers/story/{quote(spelling)}/answers", owner, at).body
        assert answers["story_id"] == story, spelling
        assert read_side.read(f"/api/v1/viewers/story/{quote(spelling)}/insights", owner, at).status == 200
    for spelling in [h, *spellings(h, braces=False)]:
        got = read_side.read(f"{H}/{quote(spelling)}", viewer, at).body
        assert got["highlight_id"] == h and got["story_ids"] == [story], spelling
    for path in (
        f"{S}/not-a-uuid",
        f"{H}/not-a-uuid",
        "/api/v1/viewers/story/not-a-uuid",
        f"{S}/{story[:-1]}",
        f"{S}/0x{story[2:]}",
    ):
        assert read_side.read(path, owner, at, expect=404).body["error"]["code"] == "not_found"


# -- limits -----------------------------------------------------------------------------------


def limit_reached(resp, kind: str, limit: int) -> None:
    assert resp.body["error"]["details"] == {"limit": limit, "kind": kind}, resp


def test_each_limit_is_409_limit_reached_and_stores_nothing(start_command_api, uid):
    api = start_command_api(
        rate_limit_per_s=0,
        limit_live_stories=3,
        limit_follows=2,
        limit_close_friends=2,
        limit_highlight_stories=2,
        limit_highlights=2,
    )
    me = uid("me")

    # live stories per author: a deleted story frees its slot
    stories = [create_story(api, me, privacy="public") for _ in range(3)]
    limit_reached(api.rejected(409, "POST", S, me, text_story(), code="limit_reached"), "live_stories", 3)
    create_story(api, uid("someone-else"))  # per author
    assert api.request("DELETE", f"{S}/{stories[0]}", me).status == 204
    stories.append(create_story(api, me, privacy="public"))
    limit_reached(api.rejected(409, "POST", S, me, text_story(), code="limit_reached"), "live_stories", 3)

    # accounts followed: a re-follow is not a new follow; an unfollow frees a place
    a, b, c = uid("a"), uid("b"), uid("c")
    follow(api, me, a)
    follow(api, me, b)
    follow(api, me, a)
    limit_reached(api.rejected(409, "PUT", f"{FOLLOW}/{c}", me, code="limit_reached"), "follows", 2)
    assert api.request("DELETE", f"{FOLLOW}/{a}", me).status == 204
    follow(api, me, c)
    limit_reached(api.rejected(409, "PUT", f"{FOLLOW}/{a}", me, code="limit_reached"), "follows", 2)

    # close friends
    for friend in (a, b):
        assert api.request("POST", f"{CF}/{friend}", me).status == 201
    limit_reached(api.rejected(409, "POST", f"{CF}/{c}", me, code="limit_reached"), "close_friends", 2)
    assert api.request("DELETE", f"{CF}/{b}", me).status == 204
    assert api.request("POST", f"{CF}/{c}", me).status == 201

    # stories per highlight: on create and on add; removing one makes room
    s1, s2, s3 = stories[1:]
    limit_reached(
        api.rejected(409, "POST", H, me, {"title": "Too many", "story_ids": [s1, s2, s3]}, code="limit_reached"),
        "highlight_stories",
        2,
    )
    resp = api.request("POST", H, me, {"title": "One", "story_ids": [s1]})
    assert resp.status == 201, resp
    h1 = resp.body["highlight_id"]
    limit_reached(
        api.rejected(409, "POST", f"{H}/{h1}/stories", me, {"story_ids": [s2, s3]}, code="limit_reached"),
        "highlight_stories",
        2,
    )
    assert api.request("POST", f"{H}/{h1}/stories", me, {"story_ids": [s2]}).status == 200
    assert api.request("POST", f"{H}/{h1}/stories", me, {"story_ids": [s2]}).status == 200  # already in
    assert api.request("DELETE", f"{H}/{h1}/stories", me, {"story_ids": [s1]}).status == 200
    resp = api.request("POST", f"{H}/{h1}/stories", me, {"story_ids": [s3]})
    assert resp.status == 200 and resp.body["story_ids"] == [s2, s3], resp

    # highlights per user: deleting one makes room
    resp = api.request("POST", H, me, {"title": "Two", "story_ids": [s1]})
    assert resp.status == 201, resp
    limit_reached(
        api.rejected(409, "POST", H, me, {"title": "Three", "story_ids": [s1]}, code="limit_reached"), "highlights", 2
    )
    assert api.request("DELETE", f"{H}/{resp.body['highlight_id']}", me).status == 204
    assert api.request("POST", H, me, {"title": "Three", "story_ids": [s1]}).status == 201

    # with an Idempotency-Key too (an error is not recorded as the key's answer)
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    limit_reached(api.rejected(409, "POST", S, me, text_story(), headers=key, code="limit_reached"), "live_stories", 3)

    events = [e for e in api.export() if me in (e["data"].get("user_id"), e["data"].get("follower_id"))]
    assert sum(e["event_type"] == "StoryCreated" for e in events) == 4
    assert sum(e["event_type"] == "UserFollowed" for e in events) == 3
    assert sum(e["event_type"] == "CloseFriendAdded" for e in events) == 3
    assert sum(e["event_type"] == "HighlightCreated" for e in events) == 3


# -- 429 ----------------------------------------------------------------------------------------


def test_429_rate_limit_with_retry_after(start_command_api):
    api = start_command_api(rate_limit_per_s=1, rate_limit_burst=2)
    before = api.export_count()
    answers = [api.request("POST", S, "eager", text_story()) for _ in range(3)]
    assert [a.status for a in answers] == [201, 201, 429], answers
    limited = answers[2]
    assert limited.body["error"]["code"] == "rate_limited"
    assert limited.header("content-type").startswith("application/json")
    retry_after = int(limited.header("retry-after"))
    assert 1 <= retry_after <= 2
    assert api.export_count() == before + 2, "the limited request stored something"
    # per user: someone else is not limited
    assert api.request("POST", S, "calm", text_story()).status == 201
    # after Retry-After seconds the user may write again
    time.sleep(retry_after)
    assert api.request("POST", S, "eager", text_story()).status == 201
    assert len(api.export()) == before + 4


# -- 503 ----------------------------------------------------------------------------------------


class TcpProxy:
    """A loopback TCP forwarder that can be cut (every connection dropped, new ones refused)."""

    def __init__(self, target: tuple[str, int], port: int = 0) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while self.running:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            src.settimeout(None)
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.running = False
        self.thread.join(timeout=2)
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.sockets.clear()


@pytest.fixture
def event_store_behind_proxy(start_command_api, postgres_schema_url):
    """A command API on PostgreSQL reached through a TcpProxy the test can cut and restore."""
    real = postgres_schema_url
    proxies = [TcpProxy(("127.0.0.1", 5432))]
    api = start_command_api(event_store_url=real.replace("127.0.0.1:5432", f"127.0.0.1:{proxies[0].port}"))
    api.env["STORIES_EVENT_STORE_URL"] = real  # `stories export` reads the database directly

    def restore() -> None:
        proxies.append(TcpProxy(("127.0.0.1", 5432), port=proxies[0].port))

    yield api, proxies[0].cut, restore
    api.stop()  # before the proxy goes: a clean shutdown needs the store
    for proxy in proxies:
        proxy.cut()


def test_503_when_the_event_store_goes_down(event_store_behind_proxy):
    api, cut, restore = event_store_behind_proxy
    assert api.get("/ready").status == 200
    resp = api.request("POST", S, "writer", text_story(privacy="public"))
    assert resp.status == 201, resp
    assert api.export_count() == 1

    cut()
    resp = api.rejected(503, "POST", S, "writer", text_story(), code="unavailable")
    assert int(resp.header("retry-after")) >= 1
    assert api.get("/health").status == 200  # liveness has no dependencies
    api.check_nothing_stored()

    restore()  # the store comes back: so does the service, within a probe interval or two
    deadline = time.monotonic() + 10
    while (resp := api.request("POST", S, "writer", text_story())).status == 503:
        assert time.monotonic() < deadline, "the service did not recover"
        time.sleep(0.2)
    assert resp.status == 201, resp
    assert api.get("/ready").status == 200
    events = api.export()
    assert len(events) == 2  # the second domain event (private count records leave gaps in positions)
    assert resp.position == events[1]["position"] and events[1]["stream_id"] == resp.body["story_id"]


def test_503_promptly_while_the_event_store_stays_down(event_store_behind_proxy):
    api, cut, _ = event_store_behind_proxy
    story = create_story(api, "writer", privacy="public")
    cut()
    first = api.request("POST", S, "writer", text_story())  # the dropped connection fails fast
    assert first.status == 503, first
    answers: dict[str, Any] = {}

    def probe(name: str, method: str, path: str, user: str | None) -> None:
        try:
            answers[name] = api.request(method, path, user, timeout=PROMPT_S)
        except OSError as e:
            answers[name] = e

    threads = [
        threading.Thread(target=probe, args=args)
        for args in (("view", "POST", f"{S}/{story}/view", "reader"), ("ready", "GET", "/ready", None))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=PROMPT_S + 5)
    api.process.kill()  # it may be stuck for a minute; no graceful stop needed
    for name, answer in answers.items():
        if isinstance(answer, Exception):
            raise TimeoutError(f"{name}: no answer within {PROMPT_S} s ({answer!r})")
        assert answer.status == 503 and answer.header("retry-after"), (name, answer)


def test_starts_while_the_event_store_is_down(start_command_api):
    api = start_command_api(event_store_url="postgresql://postgres@127.0.0.1:1/x", start_timeout=10)
    assert api.get("/health").status == 200
    ready = api.get("/ready")
    assert ready.status == 503 and ready.header("retry-after")
    resp = api.request("POST", S, "writer", text_story())
    assert resp.status == 503 and resp.header("retry-after"), resp
