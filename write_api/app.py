"""The command API's aiohttp app: thin handlers that turn requests into commands."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from commands import models
from commands.application import Answer, Idempotency, StoriesApplication
from commands.event_store import EventStore
from commands.group_commit import GroupCommitter
from commands.idempotency import MAX_KEY_LENGTH, request_fingerprint
from stories.auth import TokenVerifier
from stories.http import (
    REGISTRY, USER, ApiError, Route, actor, add_routes, error_middleware, json_response, metrics_middleware,
    openapi_document, read_json, ready_handler,
)
from stories.settings import Settings
from write_api.rate_limit import RateLimiter

APP = web.AppKey("application", StoriesApplication)
LIMITER = web.AppKey("rate_limiter", RateLimiter)


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


async def create_story(request: web.Request) -> web.Response:
    user = actor(request)
    body = await read_json(request, models.CreateStory)
    return await _execute(request, user, request.app[APP].create_story(user, body), body)


async def view_story(request: web.Request) -> web.Response:
    user = actor(request)
    await read_json(request, required=False)
    story_id = request.match_info["story_id"]
    return await _execute(request, user, request.app[APP].view_story(user, story_id))


async def reply_to_story(request: web.Request) -> web.Response:
    user = actor(request)
    body = await read_json(request, models.ReplyToStory)
    story_id = request.match_info["story_id"]
    return await _execute(request, user, request.app[APP].reply_to_story(user, story_id, body), body)


async def interact_with_story(request: web.Request) -> web.Response:
    user = actor(request)
    body = await read_json(request, models.Interact)
    story_id = request.match_info["story_id"]
    return await _execute(request, user, request.app[APP].interact(user, story_id, body), body)


async def delete_story(request: web.Request) -> web.Response:
    user = actor(request)
    return await _execute(request, user, request.app[APP].delete_story(user, request.match_info["story_id"]))


async def create_highlight(request: web.Request) -> web.Response:
    user = actor(request)
    body = await read_json(request, models.CreateHighlight)
    return await _execute(request, user, request.app[APP].create_highlight(user, body), body)


async def update_highlight(request: web.Request) -> web.Response:
    user = actor(request)
    body = await read_json(request, models.UpdateHighlight)
    highlight_id = request.match_info["highlight_id"]
    return await _execute(request, user, request.app[APP].update_highlight(user, highlight_id, body), body)


async def add_highlight_stories(request: web.Request) -> web.Response:
    user = actor(request)
    body = await read_json(request, models.HighlightStories)
    highlight_id = request.match_info["highlight_id"]
    return await _execute(request, user, request.app[APP].add_highlight_stories(user, highlight_id, body), body)


async def remove_highlight_stories(request: web.Request) -> web.Response:
    user = actor(request)
    body = await read_json(request, models.HighlightStories)
    highlight_id = request.match_info["highlight_id"]
    return await _execute(request, user, request.app[APP].remove_highlight_stories(user, highlight_id, body), body)


async def delete_highlight(request: web.Request) -> web.Response:
    user = actor(request)
    return await _execute(request, user, request.app[APP].delete_highlight(user, request.match_info["highlight_id"]))


async def reorder_highlights(request: web.Request) -> web.Response:
    user = actor(request)
    body = await read_json(request, models.ReorderHighlights)
    return await _execute(request, user, request.app[APP].reorder_highlights(user, body), body)


async def add_close_friend(request: web.Request) -> web.Response:
    user = actor(request)
    return await _execute(request, user, request.app[APP].add_close_friend(user, request.match_info["user_id"]))


async def remove_close_friend(request: web.Request) -> web.Response:
    user = actor(request)
    return await _execute(request, user, request.app[APP].remove_close_friend(user, request.match_info["user_id"]))


async def follow_user(request: web.Request) -> web.Response:
    user = actor(request)
    return await _execute(request, user, request.app[APP].follow(user, request.match_info["user_id"]))


async def unfollow_user(request: web.Request) -> web.Response:
    user = actor(request)
    return await _execute(request, user, request.app[APP].unfollow(user, request.match_info["user_id"]))


S, H = "/api/v1/stories", "/api/v1/highlights"
ROUTES = [
    Route("POST", S, create_story, "create a story", models.CreateStory, 201, (409,)),
    Route("POST", S + "/{story_id}/view", view_story, "mark a story viewed", None, 202, (404, 409)),
    Route("POST", S + "/{story_id}/reply", reply_to_story, "reply to a story", models.ReplyToStory, 201, (403, 404, 409)),
    Route("POST", S + "/{story_id}/interact", interact_with_story, "interact with a sticker", models.Interact, 200, (403, 404, 409)),
    Route("DELETE", S + "/{story_id}", delete_story, "delete your story", None, 204, (403, 404)),
    Route("POST", H, create_highlight, "create a highlight", models.CreateHighlight, 201, (409,)),
    Route("POST", H + "/reorder", reorder_highlights, "reorder your highlights", models.ReorderHighlights, 200, (409,)),
    Route("PATCH", H + "/{highlight_id}", update_highlight, "edit a highlight", models.UpdateHighlight, 200, (403, 404)),
    Route("POST", H + "/{highlight_id}/stories", add_highlight_stories, "add stories to a highlight", models.HighlightStories, 200, (403, 404, 409)),
    Route("DELETE", H + "/{highlight_id}/stories", remove_highlight_stories, "remove stories from a highlight", models.HighlightStories, 200, (403, 404)),
    Route("DELETE", H + "/{highlight_id}", delete_highlight, "delete a highlight", None, 204, (403, 404)),
    Route("POST", "/api/v1/close-friends/{user_id}", add_close_friend, "add a close friend", None, 201, (409,)),
    Route("DELETE", "/api/v1/close-friends/{user_id}", remove_close_friend, "remove a close friend", None, 204, (404,)),
    Route("PUT", "/api/v1/following/{user_id}", follow_user, "follow a user", None, 200, ()),
    Route("DELETE", "/api/v1/following/{user_id}", unfollow_user, "unfollow a user", None, 204, (404,)),
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
    app[USER] = TokenVerifier(settings)
    app[LIMITER] = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    owns_store = store is None
    store = store or EventStore(settings.event_store_url)
    committer = GroupCommitter(store, settings.group_commit_max)
    kwargs = {"clock": clock} if clock else {}
    app[APP] = StoriesApplication(store, committer, settings.platform, **kwargs)

    Gauge("stories_log_head", "position of the newest event in the log", registry=registry).set_function(
        lambda: _safe_head(store)
    )
    Gauge("stories_group_commit_batches", "batches committed", registry=registry).set_function(lambda: committer.batches)
    Gauge("stories_group_commit_commands", "commands committed", registry=registry).set_function(lambda: committer.commands)

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


def _safe_head(store: EventStore) -> float:
    try:
        return float(store.head())
    except Exception:
        return float("nan")
