"""The command API's aiohttp app: thin handlers that turn requests into commands."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from commands import models
from commands.application import Answer, Idempotency, StoriesApplication
from commands.event_store import EventStore
from commands.group_commit import GroupCommitter
from commands.idempotency import MAX_KEY_LENGTH, request_fingerprint
from commands.personal_data import CLOCK_SKEW, pseudonym
from domain.limits import Limits
from commands.erasure import finish_erasures
from stories.auth import ErasedAccounts, TokenVerifier
from stories.backends import event_store
from stories.http import (
    REGISTRY, USER, ApiError, Route, actor, add_routes, error_middleware, json_response, metrics_middleware,
    openapi_document, read_json, ready_handler,
)
from stories.settings import Settings, pseudonym_key
from write_api.rate_limit import RateLimiter

APP = web.AppKey("application", StoriesApplication)
ERASED_REFRESH_S = 1.0
SCRUB_EVERY_S = 3600.0
LIMITER = web.AppKey("rate_limiter", RateLimiter)
log = logging.getLogger(__name__)


async def _execute(request: web.Request, user: str, command: Callable, body: Any = None) -> web.Response:
    """Rate-limit, run the command (idempotently when asked), answer with its log position."""
    wait = request.app[LIMITER].retry_after(user)
    if wait:
        raise ApiError(429, "rate_limited", "too many commands; slow down", headers={"Retry-After": str(wait)})
    idempotency = None
    key = request.headers.get("Idempotency-Key")
    if key is not None and request.method == "POST":
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise ApiError(422, "validation_error", "Idempotency-Key must be 1 to 255 characters",
                           [{"field": "Idempotency-Key", "message": "1 to 255 characters"}])
        raw = body.model_dump(mode="json") if hasattr(body, "model_dump") else body
        idempotency = Idempotency(key, request_fingerprint(request.method, request.path, raw))
    answer, position = await request.app[APP].execute(user, command, idempotency)
    return _answer(answer, position)


def _answer(answer: Answer, position: int) -> web.Response:
    headers = {"X-Stories-Position": str(position)}
    if answer.status == 204:
        return web.Response(status=204, headers=headers)
    return json_response({**(answer.body or {}), "position": position}, answer.status, headers)


# -- handlers ------------------------------------------------------------------------------


async def erase_account(request: web.Request) -> web.Response:
    """The caller's account is erased (``../shared/CONTRACT.md``, "Erasure"): 202 with the position
    of its ``AccountErased``; from now on its tokens are refused here, and on the query API once
    the projector has applied that position."""
    user = actor(request)
    position = await request.app[APP].erase_account(user)
    request.app[USER].erased.add([pseudonym(request.app[APP].pseudonym_key, user)])
    return json_response({"position": position}, 202, {"X-Stories-Position": str(position)})


def command(method: str, body: type | None = None, *path_params: str, optional: bool = False) -> Callable:
    """A handler: the actor from the token, path ids, the validated body (``optional``: may be
    left out), one application call."""

    async def handle(request: web.Request) -> web.Response:
        user = actor(request)
        payload = await read_json(request, body, required=not optional) if body else await read_json(
            request, required=False)
        args = [request.match_info[name] for name in path_params] + ([payload] if body else [])
        built = getattr(request.app[APP], method)(user, *args)
        return await _execute(request, user, built, payload if body else None)

    handle.__name__ = method
    return handle


S, H = "/api/v1/stories", "/api/v1/highlights"
SID, HID, UID = "story_id", "highlight_id", "user_id"
ROUTES = [
    Route("POST", S, command("create_story", models.CreateStory), "create a story", models.CreateStory, 201, (409,)),
    Route("POST", S + "/{story_id}/view", command("view_story", None, SID), "mark a story viewed", None, 202,
          (404, 409)),
    Route("POST", S + "/{story_id}/reply", command("reply_to_story", models.ReplyToStory, SID), "reply to a story",
          models.ReplyToStory, 201, (403, 404, 409)),
    Route("POST", S + "/{story_id}/interact", command("interact", models.Interact, SID), "interact with a sticker",
          models.Interact, 200, (403, 404, 409)),
    Route("POST", S + "/{story_id}/navigate", command("navigate", models.Navigate, SID),
          "how the viewer left a story", models.Navigate, 202, (404, 409)),
    Route("POST", S + "/{story_id}/share", command("share_story", models.ShareStory, SID, optional=True),
          "reshare a public story as your own", models.ShareStory, 201, (403, 404, 409), body_required=False),
    Route("PATCH", S + "/{story_id}", command("edit_story", models.EditStory, SID), "edit your story",
          models.EditStory, 200, (403, 404, 409)),
    Route("DELETE", S + "/{story_id}", command("delete_story", None, SID), "delete your story", None, 204, (403, 404)),
    Route("POST", H, command("create_highlight", models.CreateHighlight), "create a highlight",
          models.CreateHighlight, 201, (409,)),
    Route("POST", H + "/reorder", command("reorder_highlights", models.ReorderHighlights), "reorder your highlights",
          models.ReorderHighlights, 200, (409,)),
    Route("PATCH", H + "/{highlight_id}", command("update_highlight", models.UpdateHighlight, HID),
          "edit a highlight", models.UpdateHighlight, 200, (403, 404)),
    Route("POST", H + "/{highlight_id}/stories", command("add_highlight_stories", models.HighlightStories, HID),
          "add stories to a highlight", models.HighlightStories, 200, (403, 404, 409)),
    Route("DELETE", H + "/{highlight_id}/stories", command("remove_highlight_stories", models.HighlightStories, HID),
          "remove stories from a highlight", models.HighlightStories, 200, (403, 404)),
    Route("DELETE", H + "/{highlight_id}", command("delete_highlight", None, HID), "delete a highlight", None, 204,
          (403, 404)),
    Route("POST", "/api/v1/close-friends/{user_id}", command("add_close_friend", None, UID), "add a close friend",
          None, 201, (409, 422)),
    Route("DELETE", "/api/v1/close-friends/{user_id}", command("remove_close_friend", None, UID),
          "remove a close friend", None, 204, (404,)),
    Route("PUT", "/api/v1/muted/{user_id}", command("mute", None, UID), "mute a user's stories in your tray", None,
          200, (409, 422)),
    Route("DELETE", "/api/v1/muted/{user_id}", command("unmute", None, UID), "unmute a user", None, 204, (404,)),
    Route("PUT", "/api/v1/following/{user_id}", command("follow", None, UID), "follow a user", None, 200, (409, 422)),
    Route("DELETE", "/api/v1/account", erase_account, "erase your account: nothing served, exported, replayed or "
          "published from then on names you", None, 202, ()),
    Route("DELETE", "/api/v1/following/{user_id}", command("unfollow", None, UID), "unfollow a user", None, 204,
          (404,)),
]

SUCCESS_SCHEMA = {
    "type": "object",
    "required": ["position"],
    "properties": {"position": {"type": "integer", "minimum": 0}},
}


def create_app(settings: Settings, store: EventStore | None = None, clock: Callable | None = None) -> web.Application:
    """The command API. ``store`` and ``clock`` may be passed in (tests); else built from settings."""
    registry = CollectorRegistry()
    app = web.Application(
        middlewares=[metrics_middleware(registry), error_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[REGISTRY] = registry
    app["max_body_bytes"] = settings.max_body_bytes
    app[USER] = TokenVerifier(settings, ErasedAccounts(pseudonym_key(settings)))
    app[LIMITER] = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    owns_store = store is None
    store = store or event_store(settings)
    committer = GroupCommitter(store, settings.group_commit_max)
    kwargs = {"clock": clock} if clock else {}
    app[APP] = StoriesApplication(store, committer, settings.platform, limits=limits_of(settings),
                                  pseudonym_key=pseudonym_key(settings), **kwargs)
    app.cleanup_ctx.append(_erased_accounts(store, app[USER].erased, settings))

    Gauge("stories_log_head", "position of the newest event in the log", registry=registry).set_function(
        lambda: _safe_head(store)
    )
    Gauge("stories_group_commit_batches", "batches committed", registry=registry).set_function(lambda: committer.batches)
    Gauge("stories_group_commit_commands", "commands committed", registry=registry).set_function(lambda: committer.commands)
    Gauge("stories_group_commit_conflicts", "appends refused because another writer was first (re-run alone)",
          registry=registry).set_function(lambda: committer.conflicts)
    Gauge("stories_group_commit_unacknowledged", "appends stored although their commit was not acknowledged",
          registry=registry).set_function(lambda: committer.unacknowledged)

    async def event_store_check() -> None:
        await asyncio.get_running_loop().run_in_executor(None, store.head)

    document = openapi_document(f"Stories command API ({settings.platform.value})", "1.0.0", ROUTES, SUCCESS_SCHEMA)
    add_routes(app, ROUTES, document)
    app.router.add_get("/ready", ready_handler({"event_store": event_store_check}))

    async def close(app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, committer.close)
        if owns_store:
            store.close()

    app.on_cleanup.append(close)
    return app


def _erased_accounts(store: EventStore, erased: ErasedAccounts, settings: Settings) -> Callable:
    """At start, finish any erasure a crash left unannounced; then, every second, learn the
    accounts erased (by any command API process) so that their tokens are refused; every hour,
    drop the ids kept for the projectors' purge once the purge window has passed."""
    scrubbed = [0.0]  # when, by the monotonic clock

    def refresh() -> None:
        if not erased.since:  # the first time: whatever is still within the retention
            now = datetime.now(timezone.utc)
            store.head()  # raises while the store is down: tried again in a second
            finish_erasures(store, now)
            erased.since = (now - settings.erased_tokens_retention).isoformat()
        if time.monotonic() - scrubbed[0] >= SCRUB_EVERY_S:
            store.keys.scrub(datetime.now(timezone.utc))
            scrubbed[0] = time.monotonic()
        # Each process stamps erasures by its own clock: look back a little (CLOCK_SKEW) each time.
        found = store.keys.erased_since((datetime.fromisoformat(erased.since) - CLOCK_SKEW).isoformat())
        if found:
            erased.add(name for name, _ in found)
            erased.since = max(erased.since, found[-1][1])

    async def context(app: web.Application) -> Any:
        loop = asyncio.get_running_loop()

        async def follow() -> None:
            while True:
                try:
                    await loop.run_in_executor(None, refresh)
                except Exception as error:  # the store is down: the circuit breaker answers 503 meanwhile
                    log.debug("erased accounts not refreshed: %s", error)
                await asyncio.sleep(ERASED_REFRESH_S)

        task = asyncio.create_task(follow())
        yield
        task.cancel()

    return context


def limits_of(settings: Settings) -> Limits:
    """The contract's limits as configured (STORIES_LIMIT_*)."""
    return Limits(
        live_stories=settings.limit_live_stories,
        follows=settings.limit_follows,
        close_friends=settings.limit_close_friends,
        highlight_stories=settings.limit_highlight_stories,
        highlights=settings.limit_highlights,
        muted=settings.limit_muted,
    )


def _safe_head(store: EventStore) -> float:
    try:
        return float(store.head())
    except Exception:
        return float("nan")
