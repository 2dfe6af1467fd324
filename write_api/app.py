"""The command API's aiohttp app: thin handlers that turn requests into commands."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge
from pydantic import BaseModel

from commands import models
from commands import use_cases as uc
from commands.application import Answer, Idempotency, StoriesApplication
from commands.erasure import finish_erasures
from commands.event_store import EventStore, StoreUnavailable, open_event_store
from commands.group_commit import GroupCommitter
from commands.idempotency import MAX_KEY_LENGTH, request_fingerprint
from commands.personal_data import CLOCK_SKEW, pseudonym
from domain.limits import Limits
from stories.auth import ErasedAccounts, TokenVerifier
from stories.http import (
    MAX_BODY_BYTES,
    REGISTRY,
    UNAVAILABLE_TOO,
    USER,
    ApiError,
    Route,
    actor,
    add_routes,
    error_middleware,
    json_response,
    metrics_middleware,
    openapi_document,
    read_json,
    ready_handler,
)
from stories.settings import Settings, pseudonym_key
from write_api.rate_limit import RateLimiter

APP = web.AppKey("application", StoriesApplication)
ERASED_REFRESH_S = 1.0
SCRUB_EVERY_S = 3600.0
LIMITER = web.AppKey("rate_limiter", RateLimiter)
log = logging.getLogger(__name__)


def answer_body(result: uc.Result) -> dict[str, Any] | None:
    """A result as the answer's JSON body (``None``: 204); ids as strings."""
    if isinstance(result, uc.Done):
        return None
    body = {}
    for f in fields(result):
        value = getattr(result, f.name)
        if value is None and f.name in result.OPTIONAL:
            continue
        body[f.name] = str(value) if isinstance(value, UUID) else value
    return body


async def _execute(request: web.Request, command: uc.Command, user: str, status: int, raw: Any = None) -> web.Response:
    """Rate-limit, run the command (idempotently when asked), answer with its log position."""
    wait = request.app[LIMITER].retry_after(user)
    if wait:
        raise ApiError(429, "rate_limited", "too many commands; slow down", headers={"Retry-After": str(wait)})

    def answer(result: uc.Result) -> Answer:
        return Answer(status, answer_body(result))

    idempotency = None
    key = request.headers.get("Idempotency-Key")
    if key is not None and request.method == "POST":
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise ApiError(
                422,
                "validation_error",
                "Idempotency-Key must be 1 to 255 characters",
                [{"field": "Idempotency-Key", "message": "1 to 255 characters"}],
            )
        fingerprint = request_fingerprint(request.method, request.path, raw)
        idempotency = Idempotency(user, key, fingerprint, answer)
    outcome, position = await request.app[APP].execute(command, idempotency)
    return _respond(outcome if isinstance(outcome, Answer) else answer(outcome), position)


def _respond(answer: Answer, position: int) -> web.Response:
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


def command(
    method: str,
    path: str,
    build: Callable[..., uc.Command],
    summary: str,
    status: int,
    errors: tuple[int, ...],
    body: type[BaseModel] | None = None,
    *,
    body_required: bool = True,
) -> Route:
    """A command's route: the actor from the token, the path's ids and the validated body build
    the use case's command (``build``, in that order); its result is answered with ``status``."""
    params = PATH_PARAM.findall(path)

    async def handle(request: web.Request) -> web.Response:
        user = actor(request)
        payload = (
            await read_json(request, body, required=body_required) if body else await read_json(request, required=False)
        )
        args = [request.match_info[name] for name in params] + ([payload] if body else [])
        raw = None
        if body is not None:
            raw = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
        return await _execute(request, build(user, *args), user, status, raw)

    handle.__name__ = CAMEL_HUMP.sub("_", build.__name__).lower()  # the OpenAPI operationId: create_story
    return Route(method, path, handle, summary, body, status, errors, body_required=body_required)


PATH_PARAM = re.compile(r"{(\w+)}")
CAMEL_HUMP = re.compile(r"(?<!^)(?=[A-Z])")
S, H = "/api/v1/stories", "/api/v1/highlights"
ROUTES = [
    command("POST", S, uc.CreateStory, "create a story", 201, (409,), models.CreateStory),
    command("POST", S + "/{story_id}/view", uc.ViewStory, "mark a story viewed", 202, (404, 409)),
    command(
        "POST", S + "/{story_id}/reply", uc.ReplyToStory, "reply to a story", 201, (403, 404, 409), models.ReplyToStory
    ),
    command(
        "POST",
        S + "/{story_id}/interact",
        uc.Interact,
        "interact with a sticker",
        200,
        (403, 404, 409),
        models.Interact,
    ),
    command(
        "POST", S + "/{story_id}/navigate", uc.Navigate, "how the viewer left a story", 202, (404, 409), models.Navigate
    ),
    command(
        "POST",
        S + "/{story_id}/share",
        uc.ShareStory,
        "reshare a public story as your own",
        201,
        (403, 404, 409),
        models.ShareStory,
        body_required=False,
    ),
    command("PATCH", S + "/{story_id}", uc.EditStory, "edit your story", 200, (403, 404, 409), models.EditStory),
    command("DELETE", S + "/{story_id}", uc.DeleteStory, "delete your story", 204, (403, 404)),
    command("POST", H, uc.CreateHighlight, "create a highlight", 201, (409,), models.CreateHighlight),
    command(
        "POST", H + "/reorder", uc.ReorderHighlights, "reorder your highlights", 200, (409,), models.ReorderHighlights
    ),
    command(
        "PATCH", H + "/{highlight_id}", uc.UpdateHighlight, "edit a highlight", 200, (403, 404), models.UpdateHighlight
    ),
    command(
        "POST",
        H + "/{highlight_id}/stories",
        uc.AddHighlightStories,
        "add stories to a highlight",
        200,
        (403, 404, 409),
        models.HighlightStories,
    ),
    command(
        "DELETE",
        H + "/{highlight_id}/stories",
        uc.RemoveHighlightStories,
        "remove stories from a highlight",
        200,
        (403, 404),
        models.HighlightStories,
    ),
    command("DELETE", H + "/{highlight_id}", uc.DeleteHighlight, "delete a highlight", 204, (403, 404)),
    command("POST", "/api/v1/close-friends/{user_id}", uc.AddCloseFriend, "add a close friend", 201, (409, 422)),
    command("DELETE", "/api/v1/close-friends/{user_id}", uc.RemoveCloseFriend, "remove a close friend", 204, (404,)),
    command("PUT", "/api/v1/muted/{user_id}", uc.Mute, "mute a user's stories in your tray", 200, (409, 422)),
    command("DELETE", "/api/v1/muted/{user_id}", uc.Unmute, "unmute a user", 204, (404,)),
    command("PUT", "/api/v1/following/{user_id}", uc.Follow, "follow a user", 200, (409, 422)),
    Route(
        "DELETE",
        "/api/v1/account",
        erase_account,
        "erase your account: nothing served, exported, replayed or published from then on names you",
        None,
        202,
        (),
    ),
    command("DELETE", "/api/v1/following/{user_id}", uc.Unfollow, "unfollow a user", 204, (404,)),
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
    app[MAX_BODY_BYTES] = settings.max_body_bytes
    app[UNAVAILABLE_TOO] = (StoreUnavailable,)
    app[USER] = TokenVerifier(settings, ErasedAccounts(pseudonym_key(settings)))
    app[LIMITER] = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    owns_store = store is None
    store = store or open_event_store(settings)
    committer = GroupCommitter(store, settings.group_commit_max)
    kwargs = {"clock": clock} if clock else {}
    app[APP] = StoriesApplication(
        store, committer, settings.platform, limits=limits_of(settings), pseudonym_key=pseudonym_key(settings), **kwargs
    )
    app.cleanup_ctx.append(_erased_accounts(store, app[USER].erased, settings))

    Gauge("stories_log_head", "position of the newest event in the log", registry=registry).set_function(
        lambda: _safe_head(store)
    )
    Gauge("stories_group_commit_batches", "batches committed", registry=registry).set_function(
        lambda: committer.batches
    )
    Gauge("stories_group_commit_commands", "commands committed", registry=registry).set_function(
        lambda: committer.commands
    )
    Gauge(
        "stories_group_commit_conflicts",
        "appends refused because another writer was first (re-run alone)",
        registry=registry,
    ).set_function(lambda: committer.conflicts)
    Gauge(
        "stories_group_commit_unacknowledged",
        "appends stored although their commit was not acknowledged",
        registry=registry,
    ).set_function(lambda: committer.unacknowledged)

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
            now = datetime.now(UTC)
            store.head()  # raises while the store is down: tried again in a second
            finish_erasures(store, now)
            erased.since = (now - settings.erased_tokens_retention).isoformat()
        if time.monotonic() - scrubbed[0] >= SCRUB_EVERY_S:
            store.keys.scrub(datetime.now(UTC))
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
