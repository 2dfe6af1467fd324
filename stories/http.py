"""HTTP pieces both APIs share: the error shape, body parsing, auth, health, metrics, OpenAPI."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import orjson
import pymongo.errors
import redis.exceptions
from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ValidationError

from domain.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from stories.auth import AuthError, TokenVerifier

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
USER = web.AppKey("user_resolver", TokenVerifier)
REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)
# An app's own "a dependency does not answer" errors (the command API's event store), beside UNAVAILABLE.
UNAVAILABLE_TOO = web.AppKey("unavailable_too", tuple)

# A dependency that does not answer is a 503 with Retry-After, never a 500.
UNAVAILABLE: tuple[type[Exception], ...] = (
    pymongo.errors.ConnectionFailure,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
_STATUS_OF = {InvalidInput: 422, NotFound: 404, Forbidden: 403, Conflict: 409}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details, headers


def json_response(body: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, headers=headers, content_type="application/json")


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict | None = None
) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return json_response({"error": error}, status=status, headers=headers)


def _aiohttp_error(request: web.Request, error: web.HTTPException) -> web.Response:
    codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large", 400: "bad_request"}
    limit = request.app.get(MAX_BODY_BYTES)
    too_large = f"body over the {limit // 1024} KiB limit" if limit else "body too large"
    message = {404: "no such endpoint", 413: too_large}.get(error.status, error.reason)
    return error_response(error.status, codes.get(error.status, "http_error"), message)


def error_response_of(error: ApiError | DomainError) -> web.Response:
    if isinstance(error, ApiError):
        return error_response(error.status, error.code, error.message, error.details, error.headers)
    status = next((s for cls, s in _STATUS_OF.items() if isinstance(error, cls)), 422)
    return error_response(status, error.code, error.message, error.details)


def unavailable_response(request: web.Request, error: Exception) -> web.Response:
    log.warning("dependency unavailable on %s %s: %s", request.method, request.path, error)
    return error_response(
        503, "unavailable", "a dependency is unreachable; retry shortly", headers={"Retry-After": "1"}
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as the contract's JSON shape; a 5xx other than 503 is logged as a bug."""
    try:
        return await handler(request)
    except (ApiError, DomainError) as e:
        return error_response_of(e)
    except (*UNAVAILABLE, *request.app.get(UNAVAILABLE_TOO, ())) as e:
        return unavailable_response(request, e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _aiohttp_error(request, e)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error")


def actor(request: web.Request) -> str:
    """The verified acting user; 401 otherwise."""
    try:
        return request.app[USER].user_of(request.headers.get("Authorization"))
    except AuthError as e:
        raise ApiError(401, "unauthorized", str(e), headers={"WWW-Authenticate": "Bearer"}) from None


def _pydantic_details(error: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
        for e in error.errors(include_url=False, include_input=False)
    ]


async def read_json(request: web.Request, model: type[BaseModel] | None = None, *, required: bool = True) -> Any:
    """The body as a validated model (or a dict), with 400/413/415/422 for bad input."""
    limit = request.app[MAX_BODY_BYTES]
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"body over the {limit // 1024} KiB limit")
    if not request.body_exists:
        if required:
            raise ApiError(400, "body_required", "a JSON object body is required")
        return None
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
    raw = await request.read()
    if len(raw) > limit:
        raise ApiError(413, "body_too_large", f"body over the {limit // 1024} KiB limit")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "not_an_object", "body must be a JSON object")
    if model is None:
        return data
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ApiError(422, "validation_error", "a field fails validation", _pydantic_details(error)) from None


# -- health and metrics --------------------------------------------------------------------


def metrics_middleware(registry: CollectorRegistry) -> Any:
    requests = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram(
        "http_request_duration_seconds",
        "HTTP request latency",
        ["method", "route"],
        registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    )

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        response = await handler(request)
        requests.labels(request.method, route, response.status).inc()
        latency.labels(request.method, route).observe(time.perf_counter() - started)
        return response

    return middleware


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


READY_CHECK_TIMEOUT_S = 5.0


def ready_handler(checks: dict[str, Callable[[], Awaitable[None]]]) -> Handler:
    """/ready: 200 when every dependency answers, else 503 naming those that do not. The answer
    holds names and states only ("ok" / "down"): why a check failed (host names, ports, roles)
    goes to the log, never to an unauthenticated caller."""

    async def probe(name: str, check: Callable[[], Awaitable[None]]) -> str:
        try:
            await asyncio.wait_for(check(), READY_CHECK_TIMEOUT_S)
        except Exception as e:  # any failure means "not ready"
            log.warning("not ready: %s: %s", name, str(e)[:500] or type(e).__name__)
            return "down"
        return "ok"

    async def ready(request: web.Request) -> web.Response:
        states = dict(zip(checks, await asyncio.gather(*(probe(n, c) for n, c in checks.items()))))
        down = {name: state for name, state in states.items() if state != "ok"}
        if down:
            return error_response(503, "not_ready", "a dependency is unreachable", down, {"Retry-After": "1"})
        return json_response({"status": "ready", "checks": states})

    return ready


# -- errors the HTTP layer raises itself ----------------------------------------------------


def _protocol_error(status: int, exc: BaseException | None) -> tuple[str, str]:
    """(code, message) for an error aiohttp answers before any handler runs."""
    if status == 504:
        return "timeout", "the request took too long"
    if status >= 500:
        return "internal_error", "internal error"
    if isinstance(exc, http_exceptions.LineTooLong):
        return "header_too_large", "the request line or a header is over the size limit"
    if isinstance(exc, http_exceptions.BadHttpMethod):
        return "bad_method", "unknown or malformed HTTP method"
    if isinstance(exc, http_exceptions.BadStatusLine):
        return "bad_request_line", "malformed request line"
    if isinstance(exc, http_exceptions.InvalidHeader):
        return "bad_header", "malformed header"
    return "bad_request", "malformed HTTP request"


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering the errors it raises itself (a bad request line,
    an oversized header, an unknown method, a handler timeout) in the contract's JSON shape
    instead of text/plain. ``handle_error`` is the hook aiohttp calls for those."""

    __slots__ = ()

    def handle_error(
        self, request, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        else:
            log.info("refused a malformed request from %s (%s): %s", request.remote, status, message or exc)
        if request.writer.output_size > 0:  # as aiohttp: a response is under way, the connection is lost
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        code, text = _protocol_error(status, exc)
        response = error_response(status, code, text)
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorAppRunner(web.AppRunner):
    """web.AppRunner whose connections are JsonErrorRequestHandler."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer
        return server


def run_app(
    app: web.Application,
    host: str,
    port: int,
    reuse_port: bool = False,
    keepalive_timeout: float = 75.0,
    shutdown_timeout: float = 60.0,
) -> None:
    """What ``web.run_app`` does (serve until SIGINT/SIGTERM, then shut down gracefully), on a
    JsonErrorAppRunner. Blocks."""

    async def serve() -> None:
        runner = JsonErrorAppRunner(
            app,
            handle_signals=True,
            access_log=None,
            keepalive_timeout=keepalive_timeout,
            shutdown_timeout=shutdown_timeout,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(serve())
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            leftover = asyncio.all_tasks(loop)
            for task in leftover:
                task.cancel()
            if leftover:
                loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


# -- routes and OpenAPI --------------------------------------------------------------------


@dataclass
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    auth: bool = True
    query: dict[str, dict] = field(default_factory=dict)
    body_required: bool = True


ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}},
        }
    },
}


def openapi_document(title: str, version: str, routes: list[Route], success_schema: dict | None = None) -> dict:
    """OpenAPI 3.1 from the route table and the pydantic body models."""
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict] = {}
    for route in routes:
        op: dict[str, Any] = {"summary": route.summary, "operationId": route.handler.__name__, "responses": {}}
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for name in _path_params(route.path)
        ] + [{"name": n, "in": "query", "required": False, "schema": s} for n, s in route.query.items()]
        if params:
            op["parameters"] = params
        if route.body is not None:
            schema = route.body.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[route.body.__name__] = schema
            op["requestBody"] = {
                "required": route.body_required,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}}},
            }
        ok: dict[str, Any] = {"description": "success"}
        if route.status != 204:
            ok["content"] = {"application/json": {"schema": success_schema or {"type": "object"}}}
        op["responses"][str(route.status)] = ok
        error_ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        statuses = (
            set(route.errors) | ({401} if route.auth else set()) | ({400, 413, 415, 422} if route.body else set())
        )
        statuses |= {422} if route.query else set()  # a bad query parameter
        statuses |= {429, 503} if route.method != "GET" else {503}
        for status in sorted(statuses):
            op["responses"][str(status)] = {"description": _REASONS.get(status, "error"), **error_ref}
        if route.auth:
            op["security"] = [{"bearer": []}]
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


_REASONS = {
    400: "body is not JSON or not an object",
    401: "no or bad credentials",
    403: "not allowed",
    404: "not found or not visible",
    409: "conflict",
    413: "body over the size limit (STORIES_MAX_BODY_BYTES)",
    415: "not application/json",
    422: "a field fails validation",
    429: "rate limited",
    503: "a dependency is down",
}


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]


DOCS_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
code{{background:#f3f3f3;padding:0 .3rem}} li{{margin:.3rem 0}} pre{{background:#f7f7f7;padding:1rem;overflow:auto}}</style>
</head><body><h1>{title}</h1><p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p>
<ul id="ops"></ul><script>
fetch('/openapi.json').then(r=>r.json()).then(doc=>{{const ul=document.getElementById('ops');
for(const [p,ops] of Object.entries(doc.paths))for(const [m,op] of Object.entries(ops)){{
const li=document.createElement('li');li.innerHTML='<code>'+m.toUpperCase()+' '+p+'</code> '+op.summary+
' &rarr; '+Object.keys(op.responses).join(', ');ul.appendChild(li);}}}});
</script></body></html>"""


def docs_handler(title: str) -> Handler:
    page = DOCS_PAGE.format(title=title)

    async def docs(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    return docs


def add_routes(app: web.Application, routes: list[Route], document: dict) -> None:
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler)

    async def openapi(request: web.Request) -> web.Response:
        return json_response(document)

    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/docs", docs_handler(document["info"]["title"]))
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
