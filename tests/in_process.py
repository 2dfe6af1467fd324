"""The command API served by a thread of the test process, behind the same synchronous client the
end-to-end tests use (``tests/e2e/conftest.py``: ``CommandApi``), for every test that does not
need a process of its own: no interpreter to start, no ``stories export`` to run per check.

The app is ``write_api.app.create_app`` on its own event loop in a daemon thread, on a free
loopback port; the log is the same SQLite file a process would use, read back in process.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from commands.event_store import open_event_store
from stories.settings import Settings
from tests.e2e.conftest import CommandApi, clean_env, free_port
from tests.e2e.read_side import Process, ReadSide, cleanup, new_read_side
from write_api.app import create_app

START_TIMEOUT_S = 15.0


class ServedInThread:
    """An aiohttp app served on ``host:port`` by a thread with its own event loop; quacks like
    the ``Popen`` the client keeps (``poll``, ``terminate``, ``kill``, ``wait``)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app, self.host, self.port = app, host, port
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name=f"command-api-{port}", daemon=True)
        self.thread.start()
        if not self.ready.wait(START_TIMEOUT_S) or self.error is not None:
            raise RuntimeError(f"the command API did not start: {self.error!r}")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        runner = web.AppRunner(self.app)
        try:
            await runner.setup()
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException as e:
            self.error = e
            self.ready.set()
            await runner.cleanup()
            return
        self.ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def poll(self) -> int | None:
        return None if self.thread.is_alive() else 0

    def terminate(self) -> None:
        if self._stop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)

    kill = terminate

    def wait(self, timeout: float | None = None) -> int:
        self.thread.join(timeout)
        return 0


class InProcessCommandApi(CommandApi):
    """``CommandApi`` over an app served in this process; the log is read back in process."""

    settings: Settings

    def export(self) -> list[dict]:
        store = open_event_store(self.settings)
        try:
            platform = self.settings.platform.value
            events = [orjson.loads(orjson.dumps(e.envelope(platform))) for e in store.read(until=store.head())]
        finally:
            store.close()
        self._count = len(events)
        return events

    def log(self) -> str:
        return "(served in the test process: its log is the test's captured output)"


def launch_in_process(data_dir: Path, **settings: Any) -> InProcessCommandApi:
    """``tests.e2e.conftest.launch``'s twin: the same settings (lower-case names), served here."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port, secret = free_port(), secrets.token_urlsafe(32)
    values = {"data_dir": data_dir, "jwt_secret": secret, "command_port": port, "host": "127.0.0.1", **settings}
    config = Settings(**values)
    served = ServedInThread(create_app(config), "127.0.0.1", port)
    env = clean_env({f"STORIES_{k.upper()}": str(v) for k, v in values.items()})
    api = InProcessCommandApi(
        f"http://127.0.0.1:{port}", "127.0.0.1", port, secret, data_dir, env, served, data_dir / "unused.log"
    )  # type: ignore[arg-type]
    api.settings = config
    return api


class ThreadInProcess:
    """A blocking service (the projector) run by a thread until its stop event; Popen's shape."""

    def __init__(self, target: Any, name: str) -> None:
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=target, args=(self.stop_event,), name=name, daemon=True)
        self.thread.start()

    def poll(self) -> int | None:
        return None if self.thread.is_alive() else 0

    def terminate(self) -> None:
        self.stop_event.set()

    kill = terminate

    def wait(self, timeout: float | None = None) -> int:
        self.thread.join(timeout)
        return 0


def launch_read_side_in_process(data_dir: Path, mongodb_url: str, redis_url: str, **settings: Any) -> ReadSide:
    """``tests.e2e.read_side.launch``'s twin: the command API, the projector and the query API on
    one fresh log, database and key prefix, each on a thread of this process."""
    from projections.app import run_projector
    from read_api.app import create_app as create_query_app

    side = new_read_side(data_dir, mongodb_url, redis_url)
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "host": "127.0.0.1",
        "event_store_url": side.event_store_url,
        "mongodb_url": mongodb_url,
        "mongodb_database": side.mongodb_database,
        "redis_url": redis_url,
        "redis_prefix": side.redis_prefix,
        "jwt_secret": side.secret,
        "command_port": side.command_port,
        "query_port": side.query_port,
        "rate_limit_per_s": 0,
        **settings,
    }
    config = Settings(**values)
    side.env = clean_env({f"STORIES_{k.upper()}": str(v) for k, v in values.items()})
    log_path = data_dir / "unused.log"
    try:
        # The command API first: it creates the log the projector follows.
        served = ServedInThread(create_app(config), "127.0.0.1", side.command_port)
        side.processes.append(Process("command-api", served, log_path, side.command_port))  # type: ignore[arg-type]
        projector = ThreadInProcess(lambda stop: run_projector(config, stop), "projector")
        side.processes.append(Process("projector", projector, log_path))  # type: ignore[arg-type]
        served = ServedInThread(create_query_app(config), "127.0.0.1", side.query_port)
        side.processes.append(Process("query-api", served, log_path, side.query_port))  # type: ignore[arg-type]
    except BaseException:
        side.stop()
        cleanup(side)
        raise
    return side
