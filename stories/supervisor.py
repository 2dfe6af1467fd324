"""``stories run``: start the embedded servers a setting leaves unset, then every process as a
child (``stories <name>``) pointed at them, and keep all of them running until Ctrl-C or SIGTERM.

Supervision: a child that exits, for whatever reason, is started again after a back-off
(0.5 s, doubling up to 30 s; back to 0.5 s once it has stayed up 30 s), the embedded SecantusDB
and Valkey too (same port, same data), and each restart is logged. One child's death never
stops another. The supervisor serves ``GET /health``, ``/ready`` (every child running) and
``/metrics`` (``stories_restarts_total{process}``, ``stories_supervised_up{process}``) on
``STORIES_SUPERVISOR_PORT``.

``OpsServer`` is what the processes without an API of their own (projector, expirer, relay, and
this supervisor) serve on their own port: ``GET /health`` (liveness, no dependency),
``GET /ready`` (every dependency reachable now: names and states only, details in the log) and
``GET /metrics`` (Prometheus); any other path is a 404 in the contract's JSON error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from domain.platform import Platform
from stories import embedded
from stories.settings import Settings

log = logging.getLogger("stories.run")
ops_log = logging.getLogger("stories.ops")
PROCESSES = ("command-api", "query-api", "projector", "expirer", "relay")
EMBEDDED_NAMES = {"mongodb": "secantusdb", "redis": "valkey"}  # how the supervisor names the embedded servers

# Ports `stories run` serves the ops endpoints on when their setting is unset (a process started
# alone serves nothing then). Next to the APIs' 8085/8185 (vignette) and 8086/8186 (entativa).
OPS_PORTS = {
    Platform.VIGNETTE: {"projector": 9185, "expirer": 9186, "relay": 9187, "supervisor": 9188},
    Platform.ENTATIVA: {"projector": 9285, "expirer": 9286, "relay": 9287, "supervisor": 9288},
}

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_S = 30.0  # up this long: the next death starts the back-off from BACKOFF_MIN_S again
POLL_S = 0.2


def ops_port(settings: Settings, name: str) -> int | None:
    """The port ``name`` (projector, expirer, relay, supervisor) serves its ops endpoints on, as set."""
    if name == "projector":
        return settings.projector_port or settings.projector_metrics_port
    return getattr(settings, f"{name}_port")


# -- the ops endpoints ------------------------------------------------------------------------


class OpsServer:
    """``/health``, ``/ready``, ``/metrics`` and nothing else, on a thread (and event loop) of its
    own, so a busy or blocked process still answers.

    ``checks``: dependency name -> a blocking callable that raises when it is unreachable; each
    runs in a worker thread, bounded by ``check_timeout_s``."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        registry=None,
        checks: dict[str, Callable[[], object]] | None = None,
        check_timeout_s: float = 2.0,
    ) -> None:
        from prometheus_client import CollectorRegistry

        self.name, self.host, self.port = name, host, port
        self.registry = registry if registry is not None else CollectorRegistry()
        self.checks = dict(checks or {})
        self.check_timeout_s = check_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def app(self):
        from aiohttp import web

        def json_response(body, status: int = 200, headers=None) -> web.Response:
            return web.json_response(body, status=status, headers=headers)

        def error(status: int, code: str, message: str, details=None, headers=None) -> web.Response:
            """The contract's error shape: {"error": {"code", "message", "details"?}}."""
            body: dict = {"code": code, "message": message}
            if details is not None:
                body["details"] = details
            return json_response({"error": body}, status, headers)

        @web.middleware
        async def json_errors(request: web.Request, handler):
            try:
                return await handler(request)
            except web.HTTPException as e:
                if e.status < 400:
                    raise
                codes = {404: ("not_found", "no such endpoint"), 405: ("method_not_allowed", "method not allowed")}
                code, message = codes.get(e.status, ("http_error", e.reason))
                return error(e.status, code, message)
            except Exception:
                ops_log.exception("%s ops endpoint %s failed", self.name, request.path)
                return error(500, "internal_error", "internal error")

        async def health(request: web.Request) -> web.Response:
            return json_response({"status": "ok"})

        async def ready(request: web.Request) -> web.Response:
            states = await self.check_all()
            if all(state == "ok" for state in states.values()):
                return json_response({"status": "ready", "checks": states})
            return error(503, "not_ready", "a dependency is unreachable", states, {"Retry-After": "1"})

        async def metrics(request: web.Request) -> web.Response:
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, self.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application(middlewares=[json_errors])
        app.router.add_get("/health", health)
        app.router.add_get("/ready", ready)
        app.router.add_get("/metrics", metrics)
        return app

    async def check_all(self) -> dict[str, str]:
        """Each dependency's state, ``ok`` or ``down``; why one is down goes to the log only."""
        loop = asyncio.get_running_loop()

        async def one(name: str, check: Callable[[], object]) -> tuple[str, str]:
            try:
                await asyncio.wait_for(loop.run_in_executor(None, check), self.check_timeout_s)
                return name, "ok"
            except Exception as e:  # any failure means "not ready"; the reason is for operators only
                ops_log.warning("%s /ready: %s is unreachable: %s", self.name, name, str(e)[:300] or type(e).__name__)
                return name, "down"

        return dict(await asyncio.gather(*(one(n, c) for n, c in self.checks.items())))

    def start(self) -> OpsServer:
        """Bind (OSError when the port is taken) and serve in a daemon thread."""
        from aiohttp import web

        bound = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
            try:
                loop.run_until_complete(runner.setup())
                loop.run_until_complete(web.TCPSite(runner, self.host, self.port).start())
            except BaseException as e:
                failure.append(e)
                bound.set()
                with contextlib.suppress(Exception):
                    loop.run_until_complete(runner.cleanup())
                loop.close()
                return
            self._loop = loop
            bound.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(runner.cleanup())
                loop.close()

        self._thread = threading.Thread(target=serve, name=f"{self.name}-ops", daemon=True)
        self._thread.start()
        bound.wait(30)
        if failure:
            raise failure[0]
        ops_log.info("%s serves /health /ready /metrics on %s:%s", self.name, self.host, self.port)
        return self

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)


def serve_ops(
    name: str, host: str, port: int | None, registry=None, checks: dict[str, Callable[[], object]] | None = None
) -> OpsServer | None:
    """Start ``name``'s ops server when ``port`` is set; exit with status 2 (a clear message) when the
    port is taken, as the APIs do."""
    if not port:
        return None
    try:
        return OpsServer(name, host, port, registry, checks).start()
    except OSError as e:
        ops_log.error("%s cannot serve /health /ready /metrics on %s:%s: %s", name, host, port, e)
        raise SystemExit(2) from None


def safe(value: Callable[[], float]) -> Callable[[], float]:
    """A gauge function that reports NaN rather than failing the scrape when a store is down."""

    def read() -> float:
        try:
            return value()
        except Exception:
            return float("nan")

    return read


# -- the supervisor ---------------------------------------------------------------------------


class Child:
    """One supervised process: a ``stories <name>`` child or an embedded server."""

    def __init__(
        self, name: str, spawn: Callable[[], subprocess.Popen], on_restart: Callable[[Child], None] | None = None
    ) -> None:
        self.name, self.spawn, self.on_restart = name, spawn, on_restart
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self.backoff = BACKOFF_MIN_S
        self.started_at = 0.0
        self.restart_at: float | None = None

    def start(self, process: subprocess.Popen | None = None) -> subprocess.Popen:
        self.process = started = process or self.spawn()
        self.started_at = time.monotonic()
        self.restart_at = None
        return started

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tend(self, now: float, stop: threading.Event, restarts) -> None:
        """Notice a death and schedule the restart; restart when its time has come."""
        if self.restart_at is None:
            code = self.process.poll() if self.process is not None else -1
            if code is None:
                return
            if now - self.started_at >= STABLE_S:
                self.backoff = BACKOFF_MIN_S
            delay, self.backoff = self.backoff, min(self.backoff * 2, BACKOFF_MAX_S)
            self.restart_at = now + delay
            log.warning("%s exited with code %s; restarting it in %.1f s", self.name, code, delay)
            return
        if now < self.restart_at or stop.is_set():
            return
        try:
            process = self.start()
        except OSError as error:
            delay, self.backoff = self.backoff, min(self.backoff * 2, BACKOFF_MAX_S)
            self.restart_at = now + delay
            log.error("cannot restart %s (%s); trying again in %.1f s", self.name, error, delay)
            return
        self.restarts += 1
        restarts.labels(self.name).inc()
        log.warning("restarted %s (pid %s, restart #%d)", self.name, process.pid, self.restarts)
        if self.on_restart is not None:
            self.on_restart(self)


def _metrics(children: list[Child]):
    from prometheus_client import CollectorRegistry, Counter, Gauge

    registry = CollectorRegistry()
    restarts = Counter(
        "stories_restarts", "times `stories run` restarted a child after it died", ["process"], registry=registry
    )
    up = Gauge(
        "stories_supervised_up",
        "1 while the child runs, 0 while it waits for its restart",
        ["process"],
        registry=registry,
    )
    for child in children:
        restarts.labels(child.name)
        up.labels(child.name).set_function(_up(child))
    return registry, restarts


def _up(child: Child) -> Callable[[], float]:
    """The child's ``stories_supervised_up`` value, read at each scrape."""
    return lambda: 1.0 if child.running else 0.0


def _running_check(child: Child) -> Callable[[], None]:
    def check() -> None:
        if not child.running:
            raise RuntimeError(f"{child.name} is not running (restarting)")

    return check


def run_everything(settings: Settings) -> int:
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if embedded.running_urls(data_dir):
        log.error("another `stories run` is serving %s; stop it first", data_dir)
        return 2
    defaults = OPS_PORTS[settings.platform]
    ports = {name: ops_port(settings, name) or defaults[name] for name in defaults}
    servers: list[embedded.EmbeddedServer] = []
    children: list[Child] = []
    ops: OpsServer | None = None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        env = dict(os.environ, STORIES_DATA_DIR=str(data_dir))
        for name in ("projector", "expirer", "relay"):
            env[f"STORIES_{name.upper()}_PORT"] = str(ports[name])
        if settings.mongodb_url is None:
            servers.append(embedded.start_secantus(data_dir))
            env["STORIES_MONGODB_URL"] = servers[-1].url
        if settings.redis_url is None:
            servers.append(embedded.start_valkey(data_dir))
            env["STORIES_REDIS_URL"] = servers[-1].url
        env.setdefault("STORIES_BROKER_URL", env.get("STORIES_REDIS_URL", ""))
        embedded.write_state(data_dir, servers)
        for server in servers:
            log.info("embedded %s at %s (data in %s)", server.name, server.url, data_dir)

        def server_restarted(child: Child) -> None:
            embedded.write_state(data_dir, servers)  # its new pid, for other `stories` commands

        for server in servers:
            child = Child(EMBEDDED_NAMES.get(server.name, server.name), server.respawn, server_restarted)
            child.start(server.process)
            children.append(child)
        exe = Path(sys.executable).parent / "stories"
        for name in PROCESSES:
            child = Child(
                name,
                functools.partial(subprocess.Popen, [str(exe), name], env=env, preexec_fn=embedded._die_with_parent),
            )
            child.start()
            children.append(child)
        registry, restarts = _metrics(children)
        ops = serve_ops(
            "supervisor",
            settings.host,
            ports["supervisor"],
            registry,
            {child.name: _running_check(child) for child in children},
        )
        log.info(
            "command API http://%s:%s  query API http://%s:%s  (Ctrl-C stops everything)",
            settings.host,
            settings.command_port,
            settings.host,
            settings.query_port,
        )
        log.info(
            "ops ports (/health /ready /metrics): projector %s, expirer %s, relay %s, supervisor %s",
            ports["projector"],
            ports["expirer"],
            ports["relay"],
            ports["supervisor"],
        )
        while not stop.wait(POLL_S):
            now = time.monotonic()
            for child in children:
                child.tend(now, stop, restarts)
        return 0
    finally:
        if ops is not None:
            ops.stop()
        for child in children:
            if child.process is not None and child.process.poll() is None and child.name in PROCESSES:
                child.process.send_signal(signal.SIGTERM)
        for child in children:
            if child.process is not None and child.name in PROCESSES:
                try:
                    child.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.process.kill()
        for server in reversed(servers):
            server.stop()
        embedded.clear_state(data_dir)
        log.info("stopped")
