"""The query API's aiohttp app: serves read models only; never reads the log or writes events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge
from pymongo import AsyncMongoClient

from domain.errors import DomainError
from projections import generations
from projections.mongo_schema import POSITIONS
from projections.partitions import Partition
from projections.redis_schema import VIEW_NAME, Keys
from read_api import live
from read_api.live_page import add_live_page
from read_api.pages import DEFAULT_LIMIT, MAX_LIMIT, Cursors
from read_api.queries import Queries
from stories.auth import ErasedAccounts, TokenVerifier
from stories.backends import AsyncRedis, async_mongo_client, async_redis_client
from stories.http import (
    MAX_BODY_BYTES,
    REGISTRY,
    UNAVAILABLE,
    USER,
    ApiError,
    Route,
    actor,
    add_routes,
    error_middleware,
    error_response_of,
    json_response,
    metrics_middleware,
    openapi_document,
    ready_handler,
    unavailable_response,
)
from stories.settings import Settings, cursor_secret, pseudonym_key

QUERIES = web.AppKey("queries", Queries)
CLOCK: web.AppKey[Callable[[], datetime]] = web.AppKey("clock")
LIVE = web.AppKey("live_hub", live.LiveHub)
MIN_POSITION_WAIT_S = web.AppKey("min_position_wait_s", float)
MONGO_VIEWS, REDIS_VIEWS = "mongo_views", VIEW_NAME  # the projector's view store names


log = logging.getLogger(__name__)

FOLLOW_INTERVAL_S = 0.05  # how often the process reads the read models' positions
WAITING_INTERVAL_S = 0.01  # ... while some request waits for a position (and the shortest gap between reads)
SHUTDOWN_WAIT_S = 5.0  # longest wait for a background task or a client to close at shutdown


class ProjectionPositions:
    """How far each read model has applied the log; answers are served at the lowest.

    One loop per process (``follow``) reads the positions; a request waiting for
    X-Stories-Min-Position waits on an event that loop sets when the position moves, so any number
    of waiting requests cost the stores nothing more (the loop reads every 10 ms while anyone
    waits, every 50 ms otherwise)."""

    def __init__(
        self,
        mongo: AsyncMongoClient,
        database: str,
        redis: AsyncRedis,
        prefix: str,
        partitions: int,
        log_head_prefix: str | None = None,
    ) -> None:
        self._mongo = mongo[database][POSITIONS]
        self._redis = redis
        parts = [Partition(i, partitions) for i in range(partitions)]
        self._mongo_names = [p.name(MONGO_VIEWS) for p in parts]
        self._redis_keys = [Keys(prefix).position(p.name(REDIS_VIEWS)) for p in parts]
        # the projector publishes the log head under the configured prefix, whatever the generation
        self._log_head_key = Keys(log_head_prefix or prefix).position("log_head")
        self.mongo = self.redis = self.log_head = 0
        self.failing = False  # the last read of the positions failed (a store is down)
        self.waiting = 0  # requests waiting for a position now
        self._moved: asyncio.Event | None = None  # set (and replaced) when the position moves or reading fails
        self._someone_waits: asyncio.Event | None = None

    async def refresh(self) -> int:
        """Each read model is as far as its slowest partition."""
        before = self.current
        try:
            docs = {d["_id"]: d["position"] async for d in self._mongo.find({"_id": {"$in": self._mongo_names}})}
            async with self._redis.pipeline(transaction=False) as p:  # GETs: the keys may sit on several nodes
                for key in (*self._redis_keys, self._log_head_key):
                    p.get(key)
                *redis_positions, head = await p.execute()
        except Exception:
            if not self.failing:
                self.failing = True
                self._wake()
            raise
        self.mongo = min(docs.get(name, 0) for name in self._mongo_names)
        self.redis, self.log_head = min(int(p or 0) for p in redis_positions), int(head or 0)
        if self.failing or self.current != before:
            self.failing = False
            self._wake()
        return self.current

    @property
    def current(self) -> int:
        return min(self.mongo, self.redis)

    def _wake(self) -> None:
        moved, self._moved = self._moved, None
        if moved is not None:
            moved.set()

    async def follow(self) -> None:
        """The process's one reader of the positions (runs until cancelled)."""
        while True:
            try:
                await self.refresh()
            except Exception as e:
                log.debug("reading the projection positions failed: %s", e)  # /ready reports it
            await asyncio.sleep(WAITING_INTERVAL_S)
            if not self.waiting:
                if self._someone_waits is None:
                    self._someone_waits = asyncio.Event()
                self._someone_waits.clear()
                with suppress(TimeoutError):
                    async with asyncio.timeout(FOLLOW_INTERVAL_S - WAITING_INTERVAL_S):
                        await self._someone_waits.wait()

    async def wait_for(self, position: int, timeout_s: float) -> bool:
        """Until the read models reach ``position`` (True), or ``timeout_s`` passes or the stores
        cannot be read (False). Reads no store: ``follow`` does, for every waiting request."""
        if self.current >= position:
            return True
        self.waiting += 1
        if self._someone_waits is not None:
            self._someone_waits.set()
        try:
            async with asyncio.timeout(timeout_s):
                while self.current < position and not self.failing:
                    if self._moved is None:
                        self._moved = asyncio.Event()
                    await self._moved.wait()
        except TimeoutError:
            pass
        finally:
            self.waiting -= 1
        return self.current >= position


class _Served:
    """The generation served now (``projections.generations``), behind the objects the handlers
    hold: ``queries`` and ``positions`` delegate to the current generation's, swapped in one step."""

    def __init__(self, target: object) -> None:
        self.__dict__["target"] = target

    def __getattr__(self, name: str):
        return getattr(self.__dict__["target"], name)


class ServedQueries(_Served):
    pass


class ServedPositions(_Served):
    """A generation's ``ProjectionPositions`` that the watcher can swap for another's. A request
    waiting for a position waits on whichever generation is served, across a switch."""

    async def wait_for(self, position: int, timeout_s: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            target = self.target
            left = deadline - asyncio.get_running_loop().time()
            if await target.wait_for(position, min(max(left, 0.0), GENERATION_WAIT_SLICE_S)):
                return True
            if target is self.target and (target.failing or left <= GENERATION_WAIT_SLICE_S):
                return target.current >= position
            # (the generation changed under us, or more time is left: wait on the one served now)


GENERATION_WAIT_SLICE_S = 0.25  # a waiting request re-checks which generation is served this often


POSITION = web.AppKey("projection_positions", ServedPositions)


class GenerationWatcher:
    """Reads the generation pointer once a second (a plain GET: the same on one Redis and on a
    cluster, no keyspace-notification setting, and a change missed by one read is seen by the
    next). On a change it follows the new generation's positions and switches ``queries``,
    ``positions`` and the live hub only once they are at or past those served from before, so
    the position an answer was served at never goes back."""

    def __init__(
        self,
        settings: Settings,
        mongo: AsyncMongoClient,
        redis: AsyncRedis,
        queries: ServedQueries,
        positions: ServedPositions,
        hub: live.LiveHub,
        cursors: Cursors,
    ) -> None:
        self.settings, self.mongo, self.redis, self.hub, self.cursors = settings, mongo, redis, hub, cursors
        self.queries, self.positions = queries, positions
        self.serving = generations.default_generation(settings.mongodb_database, settings.redis_prefix)
        self.follow_task: asyncio.Task | None = None
        self.switches = 0

    def _for(self, gen: generations.Generation) -> tuple[Queries, ProjectionPositions]:
        s = self.settings
        return (
            Queries(self.mongo, gen.mongodb_database, self.redis, gen.redis_prefix, s.platform, self.cursors),
            ProjectionPositions(
                self.mongo,
                gen.mongodb_database,
                self.redis,
                gen.redis_prefix,
                s.projector_partitions,
                log_head_prefix=s.redis_prefix,
            ),
        )

    async def start(self) -> None:
        """At start-up, before any request: serve the generation the pointer names."""
        try:
            gen = await generations.current_async(
                self.redis, self.settings.mongodb_database, self.settings.redis_prefix
            )
        except Exception as e:  # Redis down: start on the configured one; the watcher corrects it
            log.warning("reading the generation pointer failed: %s", e)
            gen = self.serving
        if gen.where != self.serving.where:
            self._swap(gen, *self._for(gen))
        self.follow_task = asyncio.create_task(self.positions.target.follow())

    def _swap(self, gen: generations.Generation, queries: Queries, positions: ProjectionPositions) -> None:
        self.queries.__dict__["target"] = queries
        self.positions.__dict__["target"] = positions
        self.hub.switch(gen.redis_prefix)
        self.serving = gen

    async def run(self) -> None:
        while True:
            await asyncio.sleep(generations.WATCH_INTERVAL_S)
            try:
                wanted = await generations.current_async(
                    self.redis, self.settings.mongodb_database, self.settings.redis_prefix
                )
            except Exception as e:
                log.debug("reading the generation pointer failed: %s", e)
                continue
            if wanted.where != self.serving.where:
                await self._switch_to(wanted)

    async def _switch_to(self, gen: generations.Generation) -> None:
        queries, positions = self._for(gen)
        checked = asyncio.get_running_loop().time()
        while True:  # until the new generation is at or past what the served one served
            try:
                if await positions.refresh() >= self.positions.target.current:
                    break
            except Exception as e:  # a store down: keep serving the old one meanwhile
                log.debug("reading generation %s's positions failed: %s", gen.name, e)
            await asyncio.sleep(WAITING_INTERVAL_S)
            if asyncio.get_running_loop().time() - checked >= generations.WATCH_INTERVAL_S:
                checked = asyncio.get_running_loop().time()
                try:
                    latest = await generations.current_async(
                        self.redis, self.settings.mongodb_database, self.settings.redis_prefix
                    )
                except Exception:
                    continue
                if latest.where != gen.where:  # switched again (or back) meanwhile
                    return
        old_follow = self.follow_task
        self._swap(gen, queries, positions)
        self.follow_task = asyncio.create_task(positions.follow())
        self.switches += 1
        if old_follow is not None:
            old_follow.cancel()
        log.info(
            "serving generation %s (MongoDB %s, Redis prefix %s) from position %s",
            gen.name,
            gen.mongodb_database,
            gen.redis_prefix,
            positions.current,
        )


GENERATIONS = web.AppKey("generation_watcher", GenerationWatcher)


def _min_position(request: web.Request) -> int | None:
    raw = request.headers.get("X-Stories-Min-Position") or request.query.get("min_position")
    if raw is None:
        return None
    value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 19 else -1
    if not 0 <= value <= MAX_POSITION:
        raise ApiError(
            422,
            "validation_error",
            "min_position must be a whole number from 0 to 2^63-1",
            [{"field": "min_position", "message": "whole number from 0 to 2^63-1"}],
        )
    return value


MAX_POSITION = 2**63 - 1  # log positions are 64-bit in SQLite and PostgreSQL


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(
            422,
            "validation_error",
            f"limit must be 1 to {MAX_LIMIT}",
            [{"field": "limit", "message": f"whole number 1 to {MAX_LIMIT}"}],
        )
    return int(raw)


def _paging(request: web.Request) -> tuple[int, str | None]:
    return _limit(request), request.query.get("cursor")


def _served(handler: Callable) -> Callable:
    """Authenticate, honour read-your-writes, stamp the position served at (on refusals too,
    a 401 included: every answer says where the read models stood)."""

    async def wrapper(request: web.Request) -> web.Response:
        positions = request.app[POSITION]
        try:
            user = actor(request)
            wanted = _min_position(request)
            if wanted is not None and not await positions.wait_for(wanted, request.app[MIN_POSITION_WAIT_S]):
                if positions.failing:
                    raise ApiError(
                        503, "unavailable", "a dependency is unreachable; retry shortly", headers={"Retry-After": "1"}
                    )
                raise ApiError(
                    503,
                    "position_not_reached",
                    f"read models have not reached position {wanted} yet",
                    {"requested": wanted, "current": positions.current},
                    {"Retry-After": "1"},
                )
            served_at = positions.current
            body = await handler(request, request.app[QUERIES], user, request.app[CLOCK]())
        except (ApiError, DomainError) as error:
            response = error_response_of(error)
        except UNAVAILABLE as error:
            response = unavailable_response(request, error)
        else:
            return json_response(body, headers={"X-Stories-Position": str(served_at)})
        response.headers["X-Stories-Position"] = str(positions.current)
        return response

    wrapper.__name__ = handler.__name__
    return wrapper


@_served
async def get_feed(request, q: Queries, user: str, now: datetime):
    return await q.feed(user, now, *_paging(request))


@_served
async def get_story(request, q: Queries, user: str, now: datetime):
    return await q.story(request.match_info["story_id"], user, now)


@_served
async def get_user_stories(request, q: Queries, user: str, now: datetime):
    return await q.user_stories(request.match_info["user_id"], user, now, *_paging(request))


@_served
async def get_archive(request, q: Queries, user: str, now: datetime):
    return await q.archive(user, now, *_paging(request))


@_served
async def get_user_highlights(request, q: Queries, user: str, now: datetime):
    return await q.highlights_of(request.match_info["user_id"], user, now, *_paging(request))


@_served
async def get_highlight(request, q: Queries, user: str, now: datetime):
    return await q.highlight(request.match_info["highlight_id"], user, now, *_paging(request))


@_served
async def get_story_viewers(request, q: Queries, user: str, now: datetime):
    return await q.viewers(request.match_info["story_id"], user, now, *_paging(request))


@_served
async def get_story_answers(request, q: Queries, user: str, now: datetime):
    raw = request.query.get("sticker_index")
    if raw is not None and not (raw.isascii() and raw.isdigit() and int(raw) < 10):
        raise ApiError(
            422,
            "validation_error",
            "sticker_index must be 0 to 9",
            [{"field": "sticker_index", "message": "whole number 0 to 9"}],
        )
    return await q.answers(
        request.match_info["story_id"], user, now, *_paging(request), sticker_index=None if raw is None else int(raw)
    )


@_served
async def get_story_insights(request, q: Queries, user: str, now: datetime):
    return await q.story_insights(request.match_info["story_id"], user, now)


@_served
async def get_user_insights(request, q: Queries, user: str, now: datetime):
    return await q.user_insights(user)


@_served
async def get_close_friends(request, q: Queries, user: str, now: datetime):
    return await q.close_friends(user, *_paging(request))


@_served
async def get_muted(request, q: Queries, user: str, now: datetime):
    return await q.muted(user, *_paging(request))


async def get_story_live(request: web.Request) -> web.StreamResponse:
    app = request.app
    return await live.story_stream(request, app[LIVE], app[QUERIES], app[POSITION], app[CLOCK])


async def get_feed_live(request: web.Request) -> web.StreamResponse:
    return await live.feed_stream(request, request.app[LIVE], request.app[POSITION])


MIN_POSITION: dict[str, dict[str, Any]] = {"min_position": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}}
PAGE: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    "cursor": {"type": "string"},
    **MIN_POSITION,
}
ROUTES = [
    Route(
        "GET",
        "/api/v1/stories/feed",
        get_feed,
        "the tray: a page of authors with live stories",
        errors=(422,),
        query=PAGE,
    ),
    Route(
        "GET", "/api/v1/stories/archive", get_archive, "your expired stories, newest first", errors=(422,), query=PAGE
    ),
    Route(
        "GET",
        "/api/v1/stories/user/{user_id}",
        get_user_stories,
        "a user's live stories you may see, oldest first",
        errors=(422,),
        query=PAGE,
    ),
    # (feed/live before {story_id}/live, which would match it too)
    Route(
        "GET",
        "/api/v1/stories/feed/live",
        get_feed_live,
        "server-sent events: `tray` {user_id} when that author's entry in your tray changes",
    ),
    Route(
        "GET",
        "/api/v1/stories/{story_id}/live",
        get_story_live,
        "server-sent events: `story` (the story as you may see it) when it changes, `end` when it expires, "
        "is deleted or you lose access",
        errors=(404,),
    ),
    Route(
        "GET", "/api/v1/stories/{story_id}", get_story, "one story as you may see it", errors=(404,), query=MIN_POSITION
    ),
    Route(
        "GET",
        "/api/v1/highlights/user/{user_id}",
        get_user_highlights,
        "a user's highlights (no stories)",
        errors=(422,),
        query=PAGE,
    ),
    Route(
        "GET",
        "/api/v1/highlights/{highlight_id}",
        get_highlight,
        "one highlight, its stories a page",
        errors=(404, 422),
        query=PAGE,
    ),
    Route(
        "GET",
        "/api/v1/viewers/story/{story_id}",
        get_story_viewers,
        "your story's viewers, latest first view first",
        errors=(403, 404, 422),
        query=PAGE,
    ),
    Route(
        "GET",
        "/api/v1/viewers/story/{story_id}/answers",
        get_story_answers,
        "your story's question responses, newest first",
        errors=(403, 404, 422),
        query={**PAGE, "sticker_index": {"type": "integer", "minimum": 0, "maximum": 9}},
    ),
    Route(
        "GET",
        "/api/v1/viewers/story/{story_id}/insights",
        get_story_insights,
        "your story's insights",
        errors=(403, 404),
        query=MIN_POSITION,
    ),
    Route("GET", "/api/v1/viewers/user/insights", get_user_insights, "totals over your stories", query=MIN_POSITION),
    Route("GET", "/api/v1/close-friends/", get_close_friends, "your close friends", errors=(422,), query=PAGE),
    Route("GET", "/api/v1/close-friends", get_close_friends, "your close friends", errors=(422,), query=PAGE),
    Route("GET", "/api/v1/muted", get_muted, "the authors you muted, latest first", errors=(422,), query=PAGE),
]


ERASED_REFRESH_S = 1.0
ERASED_LOOKBACK_MS = 60_000


def _erased_accounts(queries: ServedQueries, erased: ErasedAccounts) -> Callable:
    """Every second, learn the accounts erased since the last look (the projector records each
    ``AccountErased`` in the Redis read model: ``P:erased:{~erased}``, pseudonym -> ms), so that
    their tokens are refused here too."""

    async def refresh() -> None:
        # Scores are erasure times by the erasing process's clock: look back a little each time.
        low = int(erased.since) - ERASED_LOOKBACK_MS if erased.since else "-inf"
        found = await queries.redis.zrangebyscore(queries.keys.erased, low, "+inf", withscores=True)
        if found:
            erased.add(name.decode() if isinstance(name, bytes) else name for name, _ in found)
            erased.since = str(max(int(erased.since or 0), int(found[-1][1])))

    async def context(app: web.Application):
        async def follow() -> None:
            while True:
                try:
                    await refresh()
                except Exception as error:  # Redis is down: /ready says so; keep what we know
                    log.debug("erased accounts not refreshed: %s", error)
                await asyncio.sleep(ERASED_REFRESH_S)

        task = asyncio.create_task(follow())
        yield
        task.cancel()
        await asyncio.wait([task], timeout=SHUTDOWN_WAIT_S)

    return context


def create_app(settings: Settings, clock: Callable[[], datetime] | None = None) -> web.Application:
    registry = CollectorRegistry()
    app = web.Application(middlewares=[metrics_middleware(registry), error_middleware])
    app[REGISTRY] = registry
    app[USER] = TokenVerifier(settings, ErasedAccounts(pseudonym_key(settings)))
    app[CLOCK] = clock or (lambda: datetime.now(UTC))
    app[MAX_BODY_BYTES] = settings.max_body_bytes
    app[MIN_POSITION_WAIT_S] = settings.min_position_wait_s
    mongo, redis = async_mongo_client(settings), async_redis_client(settings)
    cursors = Cursors(cursor_secret(settings))
    # The configured stores until the generation pointer says otherwise (GenerationWatcher).
    queries = ServedQueries(
        Queries(mongo, settings.mongodb_database, redis, settings.redis_prefix, settings.platform, cursors)
    )
    app[QUERIES] = cast(Queries, queries)  # a proxy of the served generation's
    positions = ServedPositions(
        ProjectionPositions(
            mongo, settings.mongodb_database, redis, settings.redis_prefix, settings.projector_partitions
        )
    )
    app[POSITION] = positions

    for view in ("mongo", "redis"):
        Gauge(
            f"stories_projection_position_{view}", f"log position applied by the {view} read model", registry=registry
        ).set_function(partial(getattr, positions, view))
    Gauge(
        "stories_projection_lag_events", "events the slowest read model is behind the log head", registry=registry
    ).set_function(lambda: max(0, positions.log_head - positions.current))

    hub = live.LiveHub(redis, settings.redis_prefix, settings.platform)
    app[LIVE] = hub
    watcher = GenerationWatcher(settings, mongo, redis, queries, positions, hub, cursors)
    app[GENERATIONS] = watcher

    async def follow_positions(app: web.Application):
        # The one reader of the positions; answers keep the last known (lower) position while a
        # store is down, and /ready reports it. And the one subscriber to the change notices.
        # Both of the generation served (the watcher moves them when the pointer changes).
        await watcher.start()
        notices = asyncio.create_task(hub.run())
        watching = asyncio.create_task(watcher.run())
        yield
        hub.close()
        tasks = [t for t in (watching, watcher.follow_task, notices) if t is not None]
        for t in tasks:
            t.cancel()
        # Bounded: a client stuck on a dead node must not hold the shutdown (nor a test's teardown).
        await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT_S)
        for close in (mongo.close, redis.aclose):
            with suppress(Exception):
                async with asyncio.timeout(SHUTDOWN_WAIT_S):
                    await close()

    app.cleanup_ctx.append(follow_positions)
    app.cleanup_ctx.append(_erased_accounts(queries, app[USER].erased))

    async def end_streams(app: web.Application) -> None:
        hub.close()  # open event streams end before the server waits for its handlers

    app.on_shutdown.append(end_streams)

    async def mongo_check() -> None:
        await mongo.admin.command("ping")

    async def redis_check() -> None:
        await redis.ping()

    document = live.with_event_streams(
        openapi_document(f"Stories query API ({settings.platform.value})", "1.0.0", ROUTES),
        [r.path for r in ROUTES if r.handler in (get_story_live, get_feed_live)],
    )
    add_routes(app, ROUTES, document)
    from brokers.asyncapi import asyncapi_document

    events_document = asyncapi_document(settings.broker_prefix)

    async def asyncapi(request: web.Request) -> web.Response:
        return json_response(events_document)

    app.router.add_get("/asyncapi.json", asyncapi)
    app.router.add_get("/ready", ready_handler({"mongodb": mongo_check, "redis": redis_check}))
    add_live_page(app, settings)  # GET /live, dev mode only (not in the OpenAPI document): read_api/live_page.py

    async def stamp_position(request: web.Request, response: web.StreamResponse) -> None:
        # Every answer carries X-Stories-Position, those no query handler made too (404, 405, ...).
        if "X-Stories-Position" not in response.headers:
            response.headers["X-Stories-Position"] = str(positions.current)

    app.on_response_prepare.append(stamp_position)
    return app
