"""The processes without an API of their own (projector, expirer, relay), each started alone as a
real ``stories`` process with its port setting: each answers ``GET /health`` (liveness),
``GET /ready`` (every dependency reachable now: names and states, no error text) and
``GET /metrics`` (Prometheus) on that port, and nothing else (a JSON 404 / 405).

Each test runs its own SecantusDB and Valkey (``stories.embedded``) under tmp, so it can stop one
and watch ``/ready`` turn 503 while ``/health`` stays 200.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stories import embedded
from tests.e2e.conftest import STORIES, clean_env, free_port, log_tail, stop_process, wait_healthy

START_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 30.0


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[dict[str, embedded.EmbeddedServer]]:
    """A SecantusDB and a Valkey of this test's own (it may stop them)."""
    started: dict[str, embedded.EmbeddedServer] = {}
    try:
        for name, start in (("mongodb", embedded.start_secantus), ("redis", embedded.start_valkey)):
            data = tmp_path / f"{name}-data"
            data.mkdir()
            started[name] = start(data)
        yield started
    finally:
        for server in started.values():
            server.stop()


class Started:
    def __init__(self, name: str, process: subprocess.Popen, log_path: Path, port: int) -> None:
        self.name, self.process, self.log_path, self.port = name, process, log_path, port

    def log(self) -> str:
        return log_tail(self.log_path)


@pytest.fixture
def start(tmp_path: Path, servers) -> Iterator:
    """``start("projector", STORIES_PROJECTOR_PORT=...)``: a ``stories <name>`` process on this
    test's servers, its own data dir (SQLite log), MongoDB database and Redis prefix; waits for /health."""
    running: list[Started] = []

    def launch(name: str, port_setting: str | None = None, **settings: str) -> Started:
        port = free_port()
        data_dir = tmp_path / "data"
        data_dir.mkdir(exist_ok=True)
        env = clean_env(
            {
                "STORIES_DATA_DIR": str(data_dir),
                "STORIES_HOST": "127.0.0.1",
                "STORIES_MONGODB_URL": servers["mongodb"].url,
                "STORIES_MONGODB_DATABASE": f"t_{uuid.uuid4().hex[:10]}",
                "STORIES_REDIS_URL": servers["redis"].url,
                "STORIES_BROKER_URL": servers["redis"].url,
                "STORIES_REDIS_PREFIX": f"ports-{uuid.uuid4().hex[:8]}:",
                "STORIES_BROKER_PREFIX": f"ports{uuid.uuid4().hex[:8]}",
                port_setting or f"STORIES_{name.upper()}_PORT": str(port),
                **settings,
            }
        )
        log_path = tmp_path / f"{name}-{port}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [STORIES, name], env=env, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        started = Started(name, process, log_path, port)
        running.append(started)
        wait_healthy(name, process, "127.0.0.1", port, started.log, START_TIMEOUT_S)
        return started

    yield launch
    for started in running:
        stop_process(started.process, 10)


def ready_answer(proc: Started, status: int) -> dict:
    """Poll /ready until it answers ``status``; its JSON body."""
    deadline, last = time.monotonic() + READY_TIMEOUT_S, None
    while time.monotonic() < deadline:
        assert proc.process.poll() is None, f"{proc.name} exited:\n{proc.log()}"
        last = get(proc.port, "/ready")
        if last[0] == status:
            assert last[1]["content-type"].startswith("application/json"), last
            return json.loads(last[2])
        time.sleep(0.2)
    raise AssertionError(f"{proc.name} /ready never answered {status}: {last}\n{proc.log()}")


def check_only_its_routes(proc: Started, metric: str, dependencies: set[str]) -> None:
    status, headers, body = get(proc.port, "/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}, (status, body)
    assert headers["content-type"].startswith("application/json")

    ready = ready_answer(proc, 200)
    assert ready == {"status": "ready", "checks": dict.fromkeys(dependencies, "ok")}, ready

    status, headers, body = get(proc.port, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain"), (status, headers)
    assert metric in body.decode(), body.decode()[:2000]

    for path in ("/", "/nope", "/metrics/extra", "/api/v1/stories", "/healthz"):
        status, headers, body = get(proc.port, path)
        assert status == 404, (path, status, body[:300])
        assert headers["content-type"].startswith("application/json"), (path, headers)
        assert json.loads(body)["error"]["code"] == "not_found", body
    status, headers, body = get(proc.port, "/health", method="POST")
    assert status == 405 and json.loads(body)["error"]["code"] == "method_not_allowed", (status, body)


def check_down(proc: Started, down: str, server: embedded.EmbeddedServer) -> None:
    """With ``server`` stopped: /ready 503 naming ``down`` (names and states only), /health 200."""
    server.stop()
    body = ready_answer(proc, 503)
    assert body["error"]["code"] == "not_ready", body
    details = body["error"]["details"]
    assert details[down] == "down", body
    assert set(details.values()) <= {"ok", "down"}, body
    text = json.dumps(body)
    port = server.url.rsplit(":", 1)[1].split("/")[0]
    for leak in ("127.0.0.1", port, "refused", "timed out", "Error", "mongodb://", "redis://"):
        assert leak not in text, f"/ready leaks {leak!r}: {text}"
    status, _, _ = get(proc.port, "/health")
    assert status == 200
    assert proc.process.poll() is None


def test_projector_serves_health_ready_metrics_and_nothing_else(start, servers):
    projector = start("projector")
    check_only_its_routes(projector, "stories_projection_position", {"event_store", "mongodb", "redis"})
    check_down(projector, "mongodb", servers["mongodb"])


def test_projector_metrics_port_setting_is_an_alias(start):
    projector = start("projector", "STORIES_PROJECTOR_METRICS_PORT")
    check_only_its_routes(projector, "stories_projection_lag_events", {"event_store", "mongodb", "redis"})


def test_expirer_serves_health_ready_metrics_and_nothing_else(start, servers):
    expirer = start("expirer")
    check_only_its_routes(expirer, "stories_expirer_schedule_position", {"event_store", "redis"})
    check_down(expirer, "redis", servers["redis"])


def test_relay_serves_health_ready_metrics_and_nothing_else(start, servers):
    relay = start("relay")
    check_only_its_routes(relay, "stories_relay_active", {"event_store", "position_redis", "broker"})
    check_down(relay, "broker", servers["redis"])
