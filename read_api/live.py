"""Live updates: the contract's server-sent events (``GET /api/v1/stories/{id}/live`` and
``GET /api/v1/stories/feed/live``).

The projector announces what every batch it applies to Redis changed, on the sharded pub/sub
channel ``Keys.changes`` (``projections.redis_views.change_notice``: the batch's end position,
the stories and authors it touched, and ``[user, author]`` pairs changed for one user only).
Each query API process subscribes once (``LiveHub.run``, started with the app) and fans the
notices out to its connections in process, through indexes (story -> watches, (viewer, owner) ->
watches, author -> feed watches), so a notice costs O(what it names), not O(connections).

Fan-out never waits on a client: it only marks a connection dirty (a story stream) or adds to
its set of changed authors (a feed stream: bounded by the viewer's follows) and wakes the
connection's own task, which sends the CURRENT state when it gets to it. A client that falls
behind gets the current state once, not every step; a slow socket holds up its own task only.

A notice is published just before the projection position moves, so a connection first waits
(on the process's one shared position reader, ``ProjectionPositions``) for the read models to
reach the notice's position; each event's ``id:`` is the position the state was read at. When
the subscription is lost (a Redis restart, a cluster failover) the hub reconnects with back-off
and then marks every connection dirty: story streams re-read their story, feed streams send
``tray`` for each followed author with live stories.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime
from typing import Any

import orjson
import redis.asyncio
import redis.cluster
from aiohttp import web
from redis.asyncio import Redis

from domain.errors import NotFound
from domain.platform import Platform
from projections.redis_schema import Keys
from read_api.queries import tray_authors
from stories.auth import AuthError
from stories.backends import is_cluster
from stories.http import UNAVAILABLE, USER, ApiError, actor

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0  # a comment line at least this often (the contract: at least every 15 s)
SWEEP_S = 1.0  # how often the hub looks for connections whose client went away
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.1, 5.0  # resubscribing after the subscription was lost
READ_TIMEOUT_S = 1.0  # one wait for a pub/sub message (the loop then checks it is still wanted)
RETRY_MS = 1000  # the reconnection delay suggested to EventSource clients

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def live_user(request: web.Request) -> str:
    """The verified caller: the Authorization header as every query, or (browsers' EventSource
    sets no headers) ``?access_token=`` on these two endpoints only."""
    if request.headers.get("Authorization") is None and "access_token" in request.query:
        try:
            return request.app[USER].user_of(f"Bearer {request.query['access_token']}")
        except AuthError as e:
            raise ApiError(401, "unauthorized", str(e), headers={"WWW-Authenticate": "Bearer"}) from None
    return actor(request)


def last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID", "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 19 else None


def sse(event: str, data: Any, event_id: int) -> bytes:
    return b"event: %s\nid: %d\ndata: %s\n\n" % (event.encode(), event_id, orjson.dumps(data))


KEEPALIVE = b": keep-alive\n\n"


class _Watch:
    """One open stream: its wake-up event, the highest notice position it has to reflect, and
    whether its client is gone."""

    def __init__(self, request: web.Request, viewer: str) -> None:
        self.request, self.viewer = request, viewer
        self.wake = asyncio.Event()
        self.target = 0
        self.resync = False  # the subscription was lost: send the whole current state
        self.gone = False

    def poke(self, position: int, resync: bool = False) -> None:
        self.target = max(self.target, position)
        self.resync = self.resync or resync
        self.wake.set()


class StoryWatch(_Watch):
    def __init__(self, request: web.Request, viewer: str, story_id: str, owner: str) -> None:
        super().__init__(request, viewer)
        self.story_id, self.owner = story_id, owner


class FeedWatch(_Watch):
    def __init__(self, request: web.Request, viewer: str) -> None:
        super().__init__(request, viewer)
        self.followed: set[str] = set()  # the authors whose tray entries the viewer sees (and the viewer)
        self.changed: set[str] = set()  # authors to send ``tray`` for; a subset of the above and pair authors
        self.refollow = False  # a pair named the viewer: re-read whom they follow


class LiveHub:
    """The process's one subscription to the change notices, and its open streams."""

    def __init__(self, redis_client: Any, prefix: str, platform: Platform) -> None:
        self.redis, self.keys, self.platform = redis_client, Keys(prefix), platform
        self.channel = self.keys.changes
        self.by_story: dict[str, set[StoryWatch]] = {}
        self.by_pair: dict[tuple[str, str], set[StoryWatch]] = {}  # (viewer, owner)
        self.by_author: dict[str, set[FeedWatch]] = {}
        self.feeds_of: dict[str, set[FeedWatch]] = {}  # viewer -> their feed streams
        self.watches: set[_Watch] = set()
        self.subscribed = asyncio.Event()  # set while the subscription is up (tests wait on it)
        self.closing = False
        self.notices = 0  # notices received (a test's way to see the fan-out ran)
        self.last_position = 0
        self.client_name = f"stories-live-{uuid.uuid4().hex[:12]}"  # the subscriber's, in CLIENT LIST
        self.subscriber_at: tuple[str, int] | None = None  # the node it is subscribed on

    # -- the index ------------------------------------------------------------------------

    def add_story(self, w: StoryWatch) -> None:
        self.watches.add(w)
        self.by_story.setdefault(w.story_id, set()).add(w)
        self.by_pair.setdefault((w.viewer, w.owner), set()).add(w)

    def add_feed(self, w: FeedWatch) -> None:
        self.watches.add(w)
        self.feeds_of.setdefault(w.viewer, set()).add(w)

    def set_followed(self, w: FeedWatch, authors: set[str]) -> None:
        """Re-index a feed stream under the authors it now follows (and its viewer)."""
        authors = authors | {w.viewer}
        for author in w.followed - authors:
            self._unindex(self.by_author, author, w)
        for author in authors - w.followed:
            self.by_author.setdefault(author, set()).add(w)
        w.followed = authors

    @staticmethod
    def _unindex(index: dict, key: Any, w: _Watch) -> None:
        found = index.get(key)
        if found is not None:
            found.discard(w)
            if not found:
                del index[key]

    def remove(self, w: _Watch) -> None:
        self.watches.discard(w)
        if isinstance(w, StoryWatch):
            self._unindex(self.by_story, w.story_id, w)
            self._unindex(self.by_pair, (w.viewer, w.owner), w)
        elif isinstance(w, FeedWatch):
            for author in w.followed:
                self._unindex(self.by_author, author, w)
            w.followed = set()
            self._unindex(self.feeds_of, w.viewer, w)

    # -- fan-out --------------------------------------------------------------------------

    def dispatch(self, notice: dict) -> None:
        """Mark what one notice concerns; never waits (each connection's task does the work)."""
        position = int(notice.get("position", 0))
        self.notices += 1
        self.last_position = max(self.last_position, position)
        if notice.get("resync"):  # an erasure: whose state changed is not published, so every stream re-reads
            self.wake_all(resync=True)
            return
        for story_id in notice.get("stories", ()):
            for w in self.by_story.get(story_id, ()):
                w.poke(position)
        for author in notice.get("authors", ()):
            for f in self.by_author.get(author, ()):
                f.changed.add(author)
                f.poke(position)
        for pair in notice.get("pairs", ()):
            user, author = pair[0], pair[1]
            for w in self.by_pair.get((user, author), ()):
                w.poke(position)
            for f in self.feeds_of.get(user, ()):
                f.changed.add(author)
                f.refollow = True
                f.poke(position)

    def switch(self, prefix: str) -> None:
        """Another generation is served (``read_api.app.GenerationWatcher``): its keys, and its
        change channel. ``run`` resubscribes within ``READ_TIMEOUT_S``, and every stream then
        re-reads its current state from the new generation."""
        self.keys = Keys(prefix)
        self.channel = self.keys.changes
        self.wake_all(resync=True)

    def wake_all(self, resync: bool) -> None:
        for w in self.watches:
            w.poke(self.last_position, resync)

    def close(self) -> None:
        """The app shuts down: every stream ends (its client reconnects to another process)."""
        self.closing = True
        for w in self.watches:
            w.wake.set()

    # -- the subscription -----------------------------------------------------------------

    async def run(self) -> None:
        """Subscribe, dispatch, and on any loss resubscribe with back-off (until cancelled);
        after every (re)subscription every connection re-reads its current state."""
        backoff = BACKOFF_MIN_S
        sweeper = asyncio.create_task(self._sweep())
        try:
            while not self.closing:
                pubsub = None
                try:
                    channel = self.channel
                    pubsub, conn = await self._subscribe()
                    backoff = BACKOFF_MIN_S
                    self.subscribed.set()
                    self.wake_all(resync=True)
                    while not self.closing and self.channel == channel:  # (a switch: resubscribe)
                        message = await pubsub.get_message(timeout=READ_TIMEOUT_S)
                        if message is None:
                            continue
                        kind = message.get("type")
                        if kind == "smessage":
                            try:
                                notice = orjson.loads(message["data"])
                            except orjson.JSONDecodeError:
                                log.warning("ignoring a malformed change notice")
                                continue
                            self.dispatch(notice)
                        elif kind == "ssubscribe":  # redis-py reconnected and resubscribed by itself
                            self.wake_all(resync=True)  # notices may have been lost meanwhile
                        elif kind == "sunsubscribe":  # the slot moved to another node (a failover)
                            raise ConnectionError("the change channel moved")
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    self.subscribed.clear()
                    log.warning(
                        "live updates: the change subscription is lost (%s); resubscribing in %.1f s",
                        str(e)[:200] or type(e).__name__,
                        backoff,
                    )
                    await asyncio.sleep(backoff * (0.5 + random.random() / 2))
                    backoff = min(BACKOFF_MAX_S, backoff * 2)
                finally:
                    self.subscribed.clear()
                    if pubsub is not None:
                        with suppress(Exception):
                            await pubsub.aclose()
                        with suppress(Exception):
                            await conn.aclose()
        finally:
            sweeper.cancel()

    async def _subscribe(self) -> tuple[Any, Redis]:
        """A pub/sub connection subscribed to the channel: on one server, a connection of its
        own; on a cluster, a plain connection to the master that owns the channel's slot."""
        if is_cluster(self.redis):
            host, port = await self._channel_master()
            kwargs = {
                k: v
                for k, v in self.redis.connection_kwargs.items()
                if k in ("username", "password", "ssl", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
            }
            conn = redis.asyncio.Redis(
                host=host, port=port, socket_connect_timeout=2, client_name=self.client_name, **kwargs
            )
            self.subscriber_at = (host, port)
        else:
            kwargs = dict(self.redis.connection_pool.connection_kwargs)
            kwargs.pop("socket_timeout", None)  # a subscriber waits as long as the channel is quiet
            kwargs["client_name"] = self.client_name
            conn = redis.asyncio.Redis(
                connection_pool=redis.asyncio.ConnectionPool(
                    connection_class=self.redis.connection_pool.connection_class, **kwargs
                )
            )
            self.subscriber_at = (kwargs.get("host", "localhost"), kwargs.get("port", 6379))
        pubsub = conn.pubsub()
        try:
            await pubsub.ssubscribe(self.channel)
            # the confirmation, or the error (MOVED: asked the wrong node)
            async with asyncio.timeout(5):
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "ssubscribe":
                        break
        except BaseException:
            with suppress(Exception):
                await pubsub.aclose()
            with suppress(Exception):
                await conn.aclose()
            raise
        return pubsub, conn

    async def _channel_master(self) -> tuple[str, int]:
        """The master owning the channel's slot, asked of the cluster's nodes (CLUSTER SLOTS) so
        that a failover is seen as soon as any node knows of it."""
        slot = redis.cluster.key_slot(self.channel.encode())
        candidates = [(n.host, n.port) for n in self.redis.get_nodes()]
        candidates += [(n.host, n.port) for n in getattr(self.redis, "startup_nodes", ())]
        random.shuffle(candidates)
        last: Exception | None = None
        for host, port in dict.fromkeys(candidates):
            node = redis.asyncio.Redis(host=host, port=port, socket_connect_timeout=1, socket_timeout=2)
            try:
                ranges = await node.execute_command("CLUSTER SLOTS")
            except Exception as e:
                last = e
                continue
            finally:
                with suppress(Exception):
                    await node.aclose()
            master = _slot_master(ranges, slot, host)
            if master is not None:
                return master
        raise ConnectionError(f"no cluster node names the master of slot {slot}: {last}")

    async def _sweep(self) -> None:
        """Wake the streams whose client went away (aiohttp does not cancel their handlers)."""
        while True:
            await asyncio.sleep(SWEEP_S)
            for w in list(self.watches):
                transport = w.request.transport
                if transport is None or transport.is_closing():
                    w.gone = True
                    w.wake.set()


def _slot_master(ranges: Any, slot: int, asked: str) -> tuple[str, int] | None:
    """The master of ``slot`` in a CLUSTER SLOTS reply, raw or as redis-py parses it."""
    if isinstance(ranges, dict):  # {(start, end): {"primary": (host, port), "replicas": [...]}}
        for (start, end), nodes in ranges.items():
            if int(start) <= slot <= int(end):
                host, port = nodes["primary"][:2]
                return (_text(host) or asked, int(port))
        return None
    for entry in ranges or ():
        start, end, master = int(entry[0]), int(entry[1]), entry[2]
        if start <= slot <= end:
            return (_text(master[0]) or asked, int(master[1]))
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- the streams ------------------------------------------------------------------------


class Stream:
    """Writes one SSE response; ``wait`` sleeps until woken, sending comments meanwhile."""

    def __init__(self, hub: LiveHub, watch: _Watch, response: web.StreamResponse) -> None:
        self.hub, self.watch, self.response = hub, watch, response

    @property
    def over(self) -> bool:
        return self.hub.closing or self.watch.gone

    async def send(self, chunk: bytes) -> None:
        await self.response.write(chunk)

    async def wait(self, deadline: float | None = None) -> bool:
        """Until the watch is woken (True) or ``deadline`` (loop time) passes (False); a comment
        every KEEPALIVE_S meanwhile."""
        loop = asyncio.get_running_loop()
        while not self.watch.wake.is_set() and not self.over:
            timeout = KEEPALIVE_S if deadline is None else min(KEEPALIVE_S, deadline - loop.time())
            if timeout <= 0:
                return False
            try:
                async with asyncio.timeout(timeout):
                    await self.watch.wake.wait()
            except TimeoutError:
                if deadline is not None and loop.time() >= deadline:
                    return False
                await self.send(KEEPALIVE)
        return True

    async def settle(self, positions: Any, target: int) -> None:
        """Until the read models reach ``target`` (one shared reader; comments while waiting)."""
        while not self.over and not await positions.wait_for(target, KEEPALIVE_S):
            if positions.failing:
                return  # the read that follows fails too, and ends the stream
            await self.send(KEEPALIVE)


async def open_stream(request: web.Request, served_at: int) -> web.StreamResponse:
    response = web.StreamResponse(headers={**SSE_HEADERS, "X-Stories-Position": str(served_at)})
    await response.prepare(request)
    await response.write(b"retry: %d\n: live\n\n" % RETRY_MS)
    return response


def _expiry_deadline(story: dict, now: Callable[[], datetime]) -> float | None:
    """Loop time at which the served story expires (it ends for others, turns expired for its owner)."""
    try:
        left = (datetime.fromisoformat(story["expires_at"]) - now()).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None
    return asyncio.get_running_loop().time() + max(0.0, left) + 0.05


async def story_stream(
    request: web.Request, hub: LiveHub, queries: Any, positions: Any, clock: Callable[[], datetime]
) -> web.StreamResponse:
    viewer = live_user(request)
    resume = last_event_id(request)
    story_id = request.match_info["story_id"]
    served_at, notices = positions.current, hub.notices
    story = await queries.story(story_id, viewer, clock())  # NotFound: the usual 404 before the stream
    watch = StoryWatch(request, viewer, story["story_id"], story["user_id"])
    hub.add_story(watch)
    if hub.notices != notices:  # a notice came during the read, before the index had this stream
        watch.poke(hub.last_position)
    try:
        response = await open_stream(request, served_at)
    except BaseException:
        hub.remove(watch)
        raise
    try:
        stream = Stream(hub, watch, response)
        last: dict = story
        if resume is None or served_at > resume:  # else nothing changed after what the client has
            await stream.send(sse("story", story, served_at))
        owner = viewer == story["user_id"]
        if owner and story.get("is_expired"):
            await stream.send(sse("end", {"story_id": story["story_id"]}, served_at))
            return response
        deadline = _expiry_deadline(story, clock)
        while not stream.over:
            woken = await stream.wait(deadline)
            if stream.over:
                break
            watch.wake.clear()
            watch.resync = False
            if woken:
                await stream.settle(positions, watch.target)
            served_at = positions.current
            try:
                story = await queries.story(story_id, viewer, clock())
            except NotFound:
                await stream.send(sse("end", {"story_id": watch.story_id}, served_at))
                break
            if story != last:
                await stream.send(sse("story", story, served_at))
                last = story
            if owner and story.get("is_expired"):
                await stream.send(sse("end", {"story_id": watch.story_id}, served_at))
                break
            deadline = _expiry_deadline(story, clock)
        return response
    except ConnectionResetError:  # the client went away
        return response
    except UNAVAILABLE as e:  # a store went away mid-stream: end it; the client reconnects
        log.info("live story stream ended: %s", e)
        return response
    finally:
        hub.remove(watch)


async def followed_authors(hub: LiveHub, viewer: str) -> set[str]:
    """Whose tray entries the viewer sees (``tray_authors``)."""
    return {_text(a) for a in await tray_authors(hub.redis, hub.keys, hub.platform, viewer)}


async def authors_with_live_entries(hub: LiveHub, authors: set[str]) -> list[str]:
    """Which of these authors have live stories (one pipelined read; bounded by the follows limit)."""
    ordered = sorted(authors)
    if not ordered:
        return []
    async with hub.redis.pipeline(transaction=False) as p:
        for author in ordered:
            p.exists(hub.keys.live(author))
        found = await p.execute()
    return [a for a, n in zip(ordered, found) if n]


async def feed_stream(request: web.Request, hub: LiveHub, positions: Any) -> web.StreamResponse:
    viewer = live_user(request)
    resume = last_event_id(request)
    watch = FeedWatch(request, viewer)
    hub.add_feed(watch)  # pairs naming the viewer reach it from now on
    try:
        served_at, notices = positions.current, hub.notices
        hub.set_followed(watch, await followed_authors(hub, viewer))  # UNAVAILABLE: a 503 before the stream
        if hub.notices != notices:  # authors' notices during the read missed this stream: resend all
            watch.poke(hub.last_position, resync=True)
        response = await open_stream(request, served_at)
    except BaseException:
        hub.remove(watch)
        raise
    try:
        stream = Stream(hub, watch, response)
        if resume is not None and served_at > resume:  # the current state: every live entry
            watch.resync = True
            watch.target = max(watch.target, served_at)
            watch.wake.set()
        while not stream.over:
            await stream.wait()
            if stream.over:
                break
            watch.wake.clear()
            await stream.settle(positions, watch.target)
            changed, watch.changed = watch.changed, set()
            resync, watch.resync = watch.resync, False
            refollow, watch.refollow = watch.refollow, False
            served_at = positions.current
            if refollow or resync:
                hub.set_followed(watch, await followed_authors(hub, viewer))
            if resync:
                changed |= set(await authors_with_live_entries(hub, watch.followed))
            for author in sorted(changed):
                await stream.send(sse("tray", {"user_id": author}, served_at))
        return response
    except ConnectionResetError:
        return response
    except UNAVAILABLE as e:
        log.info("live feed stream ended: %s", e)
        return response
    finally:
        hub.remove(watch)


# -- OpenAPI ----------------------------------------------------------------------------

EVENTS_DESCRIPTION = (
    "text/event-stream. Each event has `event:`, `id:` (the log position it reflects) and one `data:` "
    "line of JSON. `/stories/{story_id}/live`: `story` (the story as served by GET /stories/{story_id}), "
    "then `end` ({story_id}) when it expires or is deleted or the caller loses access. `/stories/feed/live`: "
    "`tray` ({user_id}) whenever that author's entry in the caller's tray changes. A comment line at least "
    f"every {int(KEEPALIVE_S)} s. Reconnecting with `Last-Event-ID: N` first sends the current state if "
    "anything changed after N."
)


def with_event_streams(document: dict, paths: list[str]) -> dict:
    """The generated document, with the live endpoints' success answers as text/event-stream, and
    their other ways to pass the token and the resume point."""
    for path in paths:
        op = document["paths"][path]["get"]
        op["responses"]["200"] = {
            "description": EVENTS_DESCRIPTION,
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
        op.setdefault("parameters", []).extend(
            [
                {
                    "name": "access_token",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "the bearer token, for clients that cannot set headers (EventSource)",
                },
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "resume after this position",
                },
            ]
        )
        op["security"] = [{"bearer": []}, {"access_token": []}]
    document["components"]["securitySchemes"]["access_token"] = {
        "type": "apiKey",
        "in": "query",
        "name": "access_token",
    }
    return document
