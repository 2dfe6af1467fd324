"""A launcher for read-side end-to-end tests: the real ``stories command-api``, ``stories query-api``
and ``stories projector`` processes on one SQLite log, the session's SecantusDB (own database) and
the machine's Redis (own key prefix), driven over loopback HTTP.

``read_side`` is one stack per test module (vignette, rate limit off). Every process it started is
terminated at teardown (killed when it does not stop in time); the database and the keys go too.

``ReadSide.backdated_story`` appends a story with a clock in the past straight to the log (the
processes run on the real clock), which is how tests get expired stories into the archive.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import secrets
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt

from stories.backends import connect_redis
from tests.e2e.conftest import (
    Response as CommandResponse,
)
from tests.e2e.conftest import (
    clean_env,
    free_port,
    log_tail,
    stop_process,
    wait_healthy,
)

BIN = Path(sys.executable).parent
STORIES = str(BIN / "stories")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 15.0
_NOT_SET = object()


class Response(CommandResponse):
    @property
    def position(self) -> int:
        """X-Stories-Position (a write's log position, or the position a query was served at)."""
        return int(self.headers["x-stories-position"])


@dataclass
class Process:
    name: str
    process: subprocess.Popen
    log_path: Path
    port: int | None = None

    def log(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> None:
        stop_process(self.process, STOP_TIMEOUT_S)


def http_request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = REQUEST_TIMEOUT_S,
) -> Response:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, raw)
    finally:
        conn.close()


def _wait_healthy(proc: Process, timeout: float) -> None:
    wait_healthy(proc.name, proc.process, "127.0.0.1", proc.port, proc.log, timeout)


@dataclass
class ReadSide:
    """The three processes and a small synchronous client for both APIs."""

    data_dir: Path
    env: dict[str, str]
    secret: str
    command_port: int
    query_port: int
    event_store_url: str
    mongodb_url: str
    mongodb_database: str
    redis_url: str
    redis_prefix: str
    processes: list[Process] = field(default_factory=list)

    # -- auth -------------------------------------------------------------------------------

    def token(self, user: str, ttl: int = 3600, secret: str | None = None) -> str:
        now = int(time.time())
        return jwt.encode({"sub": user, "iat": now, "exp": now + ttl}, secret or self.secret, algorithm="HS256")

    # -- HTTP -------------------------------------------------------------------------------

    def _call(
        self,
        port: int,
        method: str,
        path: str,
        user: str | None,
        json_body: Any,
        headers: dict[str, str] | None,
        token: str | None,
    ) -> Response:
        hdrs: dict[str, str] = {}
        if user is not None:
            hdrs["Authorization"] = f"Bearer {self.token(user)}"
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        body = None
        if json_body is not _NOT_SET:
            body = json.dumps(json_body).encode()
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        return http_request("127.0.0.1", port, method, path, body, hdrs)

    def command(
        self,
        method: str,
        path: str,
        user: str | None = None,
        json_body: Any = _NOT_SET,
        *,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Response:
        return self._call(self.command_port, method, path, user, json_body, headers, token)

    def query(
        self,
        path: str,
        user: str | None = None,
        *,
        at: int | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Response:
        """GET on the query API; ``at`` sends X-Stories-Min-Position."""
        hdrs = dict(headers or {})
        if at is not None:
            hdrs["X-Stories-Min-Position"] = str(at)
        return self._call(self.query_port, "GET", path, user, _NOT_SET, hdrs, token)

    def write(
        self, method: str, path: str, user: str, json_body: Any = _NOT_SET, expect: int | None = None
    ) -> Response:
        """A command that must succeed; its answer (``.position`` is the log position)."""
        resp = self.command(method, path, user, json_body)
        if expect is not None:
            assert resp.status == expect, resp
        else:
            assert 200 <= resp.status < 300, resp
        return resp

    def read(self, path: str, user: str, at: int, expect: int = 200) -> Response:
        """A query that must reflect position ``at``."""
        resp = self.query(path, user, at=at)
        assert resp.status == expect, resp
        assert resp.position >= at, (resp.position, at)
        return resp

    # -- pages ------------------------------------------------------------------------------

    def pages(
        self,
        path: str,
        user: str,
        at: int | None = None,
        *,
        limit: int | None = None,
        key: str | None = None,
        max_pages: int = 1000,
    ) -> list[dict]:
        """Every page of a paged list (``{"items", "next_cursor"}``), following the cursors from
        the first page; ``key`` names where the page sits in the answer (a highlight's
        ``stories``). Each answer must be 200 (and reflect ``at`` when given)."""
        answers: list[dict] = []
        cursor: str | None = None
        while True:
            params = [f"limit={limit}"] if limit is not None else []
            if cursor is not None:
                params.append(f"cursor={quote(cursor, safe='')}")
            sep = "&" if "?" in path else "?"
            url = path + (sep + "&".join(params) if params else "")
            resp = self.read(url, user, at) if at is not None else self.query(url, user)
            assert resp.status == 200, (url, resp)
            body = resp.body[key] if key else resp.body
            assert set(body) >= {"items", "next_cursor"}, body
            if limit is not None:
                assert len(body["items"]) <= limit, (url, len(body["items"]))
            answers.append(body)
            cursor = body["next_cursor"]
            if cursor is None:
                return answers
            assert isinstance(cursor, str) and cursor, body
            assert len(answers) < max_pages, f"{path}: more than {max_pages} pages"

    def items(
        self, path: str, user: str, at: int | None = None, *, limit: int | None = None, key: str | None = None
    ) -> list:
        """Every item of a paged list, in order, following the cursors."""
        return [item for answer in self.pages(path, user, at, limit=limit, key=key) for item in answer["items"]]

    # -- helpers for common writes -----------------------------------------------------------

    def follow(self, follower: str, followee: str) -> int:
        return self.write("PUT", f"/api/v1/following/{followee}", follower).position

    def story(self, owner: str, **body: Any) -> tuple[str, int]:
        body.setdefault("story_type", "text")
        body.setdefault("text_content", "hello")
        resp = self.write("POST", "/api/v1/stories", owner, body, expect=201)
        return resp.body["story_id"], resp.position

    def view(self, viewer: str, story_id: str) -> int:
        return self.write("POST", f"/api/v1/stories/{story_id}/view", viewer, expect=202).position

    def interact(self, user: str, story_id: str, **body: Any) -> Response:
        return self.write("POST", f"/api/v1/stories/{story_id}/interact", user, body, expect=200)

    def backdated_story(self, owner: str, hours_ago: float, **body: Any) -> tuple[str, int]:
        """Append a story created ``hours_ago`` (its clock, not the processes') to the shared log,
        through the real write path; (story id, log position)."""
        from commands import models
        from commands import use_cases as uc
        from commands.application import StoriesApplication
        from commands.event_store import EventStore
        from commands.group_commit import GroupCommitter
        from domain.platform import Platform

        body.setdefault("story_type", "text")
        body.setdefault("text_content", "from the past")
        at = datetime.now(UTC) - timedelta(hours=hours_ago)
        at = at.replace(microsecond=at.microsecond // 1000 * 1000)
        store = EventStore(self.event_store_url)
        committer = GroupCommitter(store)
        try:
            app = StoriesApplication(
                store, committer, Platform(self.env.get("STORIES_PLATFORM", "vignette")), clock=lambda: at
            )
            created, position = asyncio.run(app.execute(uc.CreateStory(owner, models.CreateStory(**body))))
        finally:
            committer.close()
            store.close()
        return str(created.story_id), position

    # -- processes --------------------------------------------------------------------------

    def start(self, name: str, *args: str, port: int | None = None) -> Process:
        log_path = self.data_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [STORIES, *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
            )
        started = Process(name, proc, log_path, port)
        self.processes.append(started)
        return started

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()}" for p in self.processes)


def new_read_side(data_dir: Path, mongodb_url: str, redis_url: str) -> ReadSide:
    """A read side's own log, database, key prefix, ports and secret (nothing started yet)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:10]
    return ReadSide(
        data_dir=data_dir,
        env={},
        secret=secrets.token_urlsafe(32),
        command_port=free_port(),
        query_port=free_port(),
        event_store_url=f"sqlite:///{data_dir / 'events.sqlite3'}",
        mongodb_url=mongodb_url,
        mongodb_database=f"e2e_{tag}",
        redis_url=redis_url,
        redis_prefix=f"stories-e2e:{tag}:",
    )


def launch(data_dir: Path, mongodb_url: str, redis_url: str, **settings: Any) -> ReadSide:
    """Start the command API, the projector and the query API on one fresh log, database and prefix."""
    side = new_read_side(data_dir, mongodb_url, redis_url)
    env = {
        "STORIES_DATA_DIR": str(data_dir),
        "STORIES_HOST": "127.0.0.1",
        "STORIES_EVENT_STORE_URL": side.event_store_url,
        "STORIES_MONGODB_URL": mongodb_url,
        "STORIES_MONGODB_DATABASE": side.mongodb_database,
        "STORIES_REDIS_URL": redis_url,
        "STORIES_REDIS_PREFIX": side.redis_prefix,
        "STORIES_JWT_SECRET": side.secret,
        "STORIES_COMMAND_PORT": side.command_port,
        "STORIES_QUERY_PORT": side.query_port,
        "STORIES_RATE_LIMIT_PER_S": 0,
    }
    env.update({f"STORIES_{k.upper()}": v for k, v in settings.items()})
    side.env = clean_env(env)
    try:
        # The command API first: it creates the log the projector follows.
        command = side.start("command-api", "command-api", port=side.command_port)
        _wait_healthy(command, START_TIMEOUT_S)
        side.start("projector", "projector")
        query = side.start("query-api", "query-api", port=side.query_port)
        _wait_healthy(query, START_TIMEOUT_S)
    except BaseException:
        side.stop()
        cleanup(side)
        raise
    return side


def cleanup(side: ReadSide) -> None:
    from pymongo import MongoClient

    try:
        with MongoClient(side.mongodb_url, serverSelectionTimeoutMS=3000) as client:
            client.drop_database(side.mongodb_database)
    except Exception:
        pass
    try:
        client = connect_redis(side.redis_url)
        keys = list(client.scan_iter(match=side.redis_prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    except Exception:
        pass
