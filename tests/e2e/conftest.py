"""End-to-end fixtures: the real ``stories command-api`` process, driven over loopback HTTP.

``start_command_api(**env)`` starts one process (a fresh data dir, a random JWT secret, a free
port) and waits for ``GET /health``; every process it started is terminated at teardown (and
killed when it does not stop in time). ``api`` is one vignette process per test module with the
rate limit off. The client object is synchronous (``http.client``); concurrency tests bring their
own aiohttp session and use ``client.base_url`` / ``client.token``.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest

BIN = Path(sys.executable).parent
STORIES = str(BIN / "stories")
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 15.0
EXPORT_TIMEOUT_S = 30.0

EXPORT_EACH = os.environ.get("STORIES_E2E_EXPORT_EACH", "") == "1"

_NOT_SET = object()
RUNNING: list[CommandApi] = []  # every client, so each test's pending checks run at its end


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment without any STORIES_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORIES_")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names
    raw: bytes

    @property
    def body(self) -> Any:
        try:
            return json.loads(self.raw) if self.raw else None
        except ValueError:
            return self.raw.decode("utf-8", "replace")

    @property
    def position(self) -> int:
        """The write's log position; checks the body and the header agree."""
        header = int(self.headers["x-stories-position"])
        if self.status != 204:
            assert self.body["position"] == header, (self.body, header)
        return header

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def __repr__(self) -> str:  # shows up in assertion messages
        return f"<Response {self.status} {self.raw[:300]!r}>"


@dataclass
class CommandApi:
    """One running command API process and a small synchronous client for it."""

    base_url: str
    host: str
    port: int
    secret: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen
    log_path: Path
    _count: int | None = field(default=None, repr=False)
    _pending: list[str] = field(default_factory=list, repr=False)
    _pending_base: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        RUNNING.append(self)

    # -- auth ---------------------------------------------------------------------------

    def token(self, user: str, ttl: int = 3600, secret: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {"sub": user, "iat": now, "exp": now + ttl, **claims}
        return jwt.encode(payload, secret or self.secret, algorithm="HS256")

    # -- HTTP ---------------------------------------------------------------------------

    def request(
        self, method: str, path: str, user: str | None = None, json_body: Any = _NOT_SET, **options: Any
    ) -> Response:
        """One request. ``user`` mints a token; ``token`` passes one as is; ``json_body`` is sent
        as application/json; ``data`` + ``content_type`` send raw bytes (every option: ``_send``)."""
        self.check_nothing_stored()
        return self._send(method, path, user, json_body, **options)

    def _send(
        self,
        method: str,
        path: str,
        user: str | None = None,
        json_body: Any = _NOT_SET,
        *,
        data: bytes | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
        chunked: bool = False,
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> Response:
        if method != "GET":
            self._count = None  # it may have written: the next export check re-reads
        hdrs: dict[str, str] = {}
        if user is not None:
            hdrs["Authorization"] = f"Bearer {self.token(user)}"
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        body: Any = None
        if json_body is not _NOT_SET:
            body = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        if data is not None:
            body = data
            if content_type is not None:
                hdrs["Content-Type"] = content_type
        hdrs.update(headers or {})
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            if chunked and body is not None:
                pieces = [body[i : i + 8192] for i in range(0, len(body), 8192)]
                conn.request(method, path, body=iter(pieces), headers=hdrs, encode_chunked=True)
            else:
                conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, raw)
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    # -- the log, as ``stories export`` prints it -----------------------------------------

    def export(self) -> list[dict]:
        out = subprocess.run(
            [STORIES, "export"], env=self.env, capture_output=True, timeout=EXPORT_TIMEOUT_S, cwd=self.data_dir
        )
        assert out.returncode == 0, out.stderr.decode()[-2000:]
        lines = [line for line in out.stdout.decode().splitlines() if line.strip()]
        events = [json.loads(line) for line in lines]
        self._count = len(events)
        return events

    def export_count(self) -> int:
        """Lines ``stories export`` prints (cached until the next request through this client)."""
        if self._count is None:
            self.export()
        assert self._count is not None
        return self._count

    def rejected(
        self, expected_status: int, method: str, path: str, *args: Any, code: str | None = None, **kw: Any
    ) -> Response:
        """Send a request that must fail with ``expected_status`` (and error ``code``), in the
        contract's error shape, and check with ``stories export`` that it stored nothing.

        Runs of consecutive rejections share one export before and one after (the log only
        grows, so an unchanged count over the run means each one stored nothing); the check
        happens before the next request that may write, and at the end of the test.
        STORIES_E2E_EXPORT_EACH=1 exports after every single rejection instead.
        """
        if not self._pending:
            self._pending_base = self.export_count()
        resp = self._send(method, path, *args, **kw)
        if resp.status != expected_status:
            self._pending = []  # the test fails here; no follow-up error about what it stored
            raise AssertionError(f"{method} {path}: expected {expected_status}, got {resp!r}")
        self._pending.append(f"{method} {path} -> {resp.status}")
        assert (resp.header("content-type") or "").startswith("application/json"), resp.headers
        error = resp.body["error"]
        assert isinstance(error["code"], str) and error["code"] and isinstance(error["message"], str), resp
        if code is not None:
            assert error["code"] == code, resp
        if EXPORT_EACH:
            self.check_nothing_stored()
        return resp

    def check_nothing_stored(self) -> None:
        """Compare ``stories export`` with the count before the pending rejections."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        after = len(self.export())
        assert after == self._pending_base, (
            f"{after - self._pending_base} event(s) stored by rejected request(s): {pending}"
        )

    # -- process ------------------------------------------------------------------------

    def log(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> None:
        if self in RUNNING:
            RUNNING.remove(self)
        stop_process(self.process)


def log_tail(path: Path) -> str:
    """The end of a process's log, for assertion messages."""
    try:
        return path.read_text(errors="replace")[-4000:]
    except OSError:
        return ""


def stop_process(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, then SIGKILL if it has not stopped in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


class StartupFailed(Exception):
    pass


def wait_healthy(
    name: str, process: subprocess.Popen, host: str, port: int, log: Callable[[], str], timeout: float
) -> None:
    """Until GET /health answers 200; StartupFailed with the log's tail if the process exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StartupFailed(f"{name} exited with {process.returncode}:\n{log()}")
        try:
            conn = http.client.HTTPConnection(host, port, timeout=1)
            try:
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            finally:
                conn.close()
        except OSError:
            pass
        time.sleep(0.05)
    raise StartupFailed(f"{name} not healthy after {timeout}s:\n{log()}")


def launch(data_dir: Path, start_timeout: float = START_TIMEOUT_S, **settings: Any) -> CommandApi:
    """Start ``stories command-api`` with STORIES_<NAME> settings (lower-case keyword names)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    secret = secrets.token_urlsafe(32)
    env_settings = {
        "STORIES_DATA_DIR": str(data_dir),
        "STORIES_JWT_SECRET": secret,
        "STORIES_COMMAND_PORT": str(port),
        "STORIES_HOST": "127.0.0.1",
    }
    env_settings.update({f"STORIES_{k.upper()}": str(v) for k, v in settings.items()})
    env = clean_env(env_settings)
    log_path = data_dir / f"command-api-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [STORIES, "command-api"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
        )
    api = CommandApi(f"http://127.0.0.1:{port}", "127.0.0.1", port, secret, data_dir, env, process, log_path)
    try:
        wait_healthy("command API", api.process, api.host, api.port, api.log, start_timeout)
    except BaseException:
        api.stop()
        raise
    return api


@pytest.fixture
def start_command_api(tmp_path: Path) -> Iterator[Callable[..., CommandApi]]:
    """A factory: ``start_command_api(rate_limit_per_s=1, ...)``; stops them all at teardown."""
    started: list[CommandApi] = []

    def start(**settings: Any) -> CommandApi:
        data_dir = tmp_path / f"api-{len(started)}"
        api = launch(data_dir, **settings)
        started.append(api)
        return api

    start.StartupFailed = StartupFailed  # type: ignore[attr-defined]
    yield start
    try:
        for api in started:
            if api.process.poll() is None:
                api.check_nothing_stored()
    finally:
        for api in started:
            api.stop()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CommandApi]:
    """One vignette command API per module, rate limit off."""
    instance = launch(tmp_path_factory.mktemp("command-api"), rate_limit_per_s=0)
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def entativa_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CommandApi]:
    instance = launch(tmp_path_factory.mktemp("command-api-entativa"), rate_limit_per_s=0, platform="entativa")
    yield instance
    instance.stop()


@pytest.fixture(autouse=True)
def _check_rejections_stored_nothing() -> Iterator[None]:
    """A test's last rejections are checked against the log when it ends."""
    yield
    for api in list(RUNNING):
        if api.process.poll() is None:
            api.check_nothing_stored()
        else:
            api._pending.clear()
