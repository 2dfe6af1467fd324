"""``stories run`` supervises what it started: the projector, the expirer, the relay and the
embedded Valkey, each SIGKILLed in turn under a steady stream of commands, come back (restarted
with back-off, each restart counted on the supervisor's ``/metrics``), the command API keeps
answering throughout, reads recover once Valkey is back, and Ctrl-C still stops everything.

Also here: under ``CI=true`` a skipped test fails the run (``tests/conftest.py``), which is how the
suite itself is supervised in CI.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import jwt
import pytest

from tests.e2e.conftest import STORIES, clean_env, free_port, log_tail

pytestmark = pytest.mark.timeout(280)

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0
BACK_TIMEOUT_S = 60.0


def request(
    port: int,
    method: str,
    path: str,
    token: str | None = None,
    body: dict | None = None,
    headers: dict | None = None,
    timeout: float = 10,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data, hdrs["Content-Type"] = json.dumps(body).encode(), "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def status(port: int, path: str) -> int | None:
    try:
        return request(port, "GET", path, timeout=5)[0]
    except OSError:
        return None


def wait_for(what: str, condition, timeout: float, log) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{log()}")


def children_of(pid: int) -> dict[int, list[str]]:
    """Live child processes of ``pid``: their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) != pid or fields[0] == "Z":
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, ValueError):
            continue
    return found


def child_pid(supervisor: int, name: str) -> int | None:
    for pid, argv in children_of(supervisor).items():
        if name in argv[1:] and any(a.endswith("stories") for a in argv):
            return pid
    return None


def metric(port: int, name: str, process: str) -> float:
    _, body = request(port, "GET", "/metrics")
    prefix = f'{name}{{process="{process}"}} '
    for line in body.decode().splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    raise AssertionError(f"no {prefix!r} in /metrics")


class RequestLoop(threading.Thread):
    """Requests, one after the other, for as long as the test runs: every status it got; anything
    but a 2xx or a 503 (a store briefly down) is a failure."""

    def __init__(self, port: int, token: str, method: str, path: str) -> None:
        super().__init__(daemon=True)
        self.port, self.token, self.method, self.path = port, token, method, path
        self.statuses: Counter = Counter()
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.done.is_set():
            i += 1
            try:
                code, body = request(self.port, self.method, self.path.format(i=i % 500), self.token)
            except OSError as error:
                self.failures.append(f"#{i}: {error!r}")
                code = None
            else:
                if not (200 <= code < 300 or code == 503):
                    self.failures.append(f"#{i}: {code} {body[:200]!r}")
            self.statuses[code] += 1
            time.sleep(0.02)


def story(ports: dict[str, int], token: str, text: str, log, position: bool = False):
    """Post a story and wait until the query API serves it (read-your-writes): its id, or its position."""
    code, body = request(
        ports["command"], "POST", "/api/v1/stories", token, {"story_type": "text", "text_content": text}
    )
    assert code == 201, body
    created = json.loads(body)

    def readable() -> bool:
        code, _ = request(
            ports["query"],
            "GET",
            f"/api/v1/stories/{created['story_id']}",
            token,
            headers={"X-Stories-Min-Position": str(created["position"])},
        )
        return code == 200

    wait_for(f"story {text!r} on the query API", readable, BACK_TIMEOUT_S, log)
    return created["position"] if position else created["story_id"]


def test_stories_run_restarts_what_dies_and_the_command_api_keeps_answering(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    ports = {name: free_port() for name in ("command", "query", "projector", "expirer", "relay", "supervisor")}
    secret = secrets.token_urlsafe(32)
    env = clean_env(
        {
            "STORIES_DATA_DIR": str(data_dir),
            "STORIES_HOST": "127.0.0.1",
            "STORIES_JWT_SECRET": secret,
            "STORIES_RATE_LIMIT_PER_S": "0",
            **{f"STORIES_{name.upper()}_PORT": str(port) for name, port in ports.items()},
        }
    )
    now = int(time.time())
    token = jwt.encode({"sub": "alice", "iat": now, "exp": now + 3600}, secret, algorithm="HS256")
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as out:
        run = subprocess.Popen(
            [STORIES, "run"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    log = lambda: log_tail(log_path)  # noqa: E731
    loops: list[RequestLoop] = []
    seen: set[int] = set()
    try:
        for name in ("command", "query"):
            wait_for(f"{name} /health", lambda n=name: status(ports[n], "/health") == 200, START_TIMEOUT_S, log)
        wait_for("query API ready", lambda: status(ports["query"], "/ready") == 200, START_TIMEOUT_S, log)
        first = story(ports, token, "before the kills", log)
        loops = [
            RequestLoop(ports["command"], token, "PUT", "/api/v1/following/user-{i}"),
            RequestLoop(ports["query"], token, "GET", f"/api/v1/stories/{first}"),
        ]
        for loop in loops:
            loop.start()

        for name in ("projector", "expirer", "relay"):
            wait_for(f"a {name} child", lambda n=name: child_pid(run.pid, n) is not None, START_TIMEOUT_S, log)
            pid = child_pid(run.pid, name)
            seen.add(pid)
            os.kill(pid, signal.SIGKILL)
            wait_for(
                f"{name} restarted", lambda n=name, p=pid: child_pid(run.pid, n) not in (None, p), BACK_TIMEOUT_S, log
            )
            seen.add(child_pid(run.pid, name))
            wait_for(f"{name} /health again", lambda n=name: status(ports[n], "/health") == 200, BACK_TIMEOUT_S, log)
            assert run.poll() is None, log()
            assert metric(ports["supervisor"], "stories_restarts_total", name) == 1.0

        state = json.loads((data_dir / "embedded.json").read_text())
        valkey_pid, valkey_url = state["redis"]["pid"], state["redis"]["url"]
        os.kill(valkey_pid, signal.SIGKILL)

        def valkey_back() -> bool:
            entry = json.loads((data_dir / "embedded.json").read_text())["redis"]
            return entry["pid"] != valkey_pid and entry["url"] == valkey_url

        wait_for("Valkey restarted (same URL, new pid)", valkey_back, BACK_TIMEOUT_S, log)
        wait_for("query API ready again", lambda: status(ports["query"], "/ready") == 200, BACK_TIMEOUT_S, log)
        for name in ("projector", "expirer", "relay"):
            wait_for(f"{name} ready again", lambda n=name: status(ports[n], "/ready") == 200, BACK_TIMEOUT_S, log)
        assert metric(ports["supervisor"], "stories_restarts_total", "valkey") == 1.0
        assert metric(ports["supervisor"], "stories_restarts_total", "command-api") == 0.0
        assert status(ports["supervisor"], "/ready") == 200

        # Writes made now reach the read side (the projector follows the log again) and the broker.
        at = story(ports, token, "after the kills", log, position=True)
        import redis

        client = redis.Redis.from_url(valkey_url)
        try:
            wait_for(
                "the relay past the new story",
                lambda: int(client.get("stories:relay:position:redis") or 0) >= at,
                BACK_TIMEOUT_S,
                log,
            )
        finally:
            client.close()

        for loop in loops:
            loop.done.set()
            loop.join(timeout=15)
            assert not loop.failures, f"{loop.path}: {len(loop.failures)} failed: {loop.failures[:10]} {loop.statuses}"
            assert sum(n for code, n in loop.statuses.items() if code and 200 <= code < 300) > 50, loop.statuses
        assert run.poll() is None, log()

        # Ctrl-C stops all of them.
        seen |= set(children_of(run.pid))
        os.killpg(run.pid, signal.SIGINT)
        assert run.wait(timeout=60) == 0, log()
        wait_for(
            "every child gone",
            lambda: not any(Path(f"/proc/{p}").exists() and "Z" not in _state(p) for p in seen),
            30,
            log,
        )
        assert not (data_dir / "embedded.json").exists()
    finally:
        for loop in loops:
            loop.done.set()
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGTERM)
            try:
                run.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2 :].split()[0]
    except (OSError, ValueError):
        return "Z"


# -- CI: a skip is a failure ------------------------------------------------------------------

SKIPPING_TESTS = """
import pytest

@pytest.fixture
def tool():
    pytest.skip("sometool is not installed (not on PATH)")

def test_skips_in_a_fixture(tool):
    pass

def test_skips_in_the_test():
    pytest.skip("faketime is installed but does not shift Python's clock here")

@pytest.mark.skipif(True, reason="a service is missing")
def test_skipped_by_a_marker():
    pass

def test_opted_out():
    pytest.skip("opt-in: set STORIES_LONG_SOAK=1 to run the hours-long soak")

@pytest.mark.xfail(strict=True, reason="a pinned bug")
def test_pinned_bug():
    assert False

def test_passes():
    pass
"""


def _pytest(args: list[str], ci: bool, cwd: Path, path: str | None = None) -> subprocess.CompletedProcess:
    skip = ("CI", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST", "STORIES_TEST_REDIS")  # (a cluster needs redis-server)
    env = {k: v for k, v in os.environ.items() if k not in skip}
    env["PYTHONPATH"] = str(ROOT)
    if ci:
        env["CI"] = "true"
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEsx", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=120,
    )


def outcomes(text: str) -> dict[str, int]:
    """The counts on pytest's last summary line: {"passed": 1, "skipped": 4, ...} ("errors" as "error")."""
    import re

    last = [line for line in text.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", line)][-1]
    return {
        kind.rstrip("s") if kind.startswith("error") else kind: int(n)
        for n, kind in re.findall(r"(\d+) (failed|passed|skipped|xfailed|xpassed|errors?)", last)
    }


def test_under_ci_every_skip_fails_the_run_unless_its_reason_is_allowed(tmp_path):
    (tmp_path / "test_skipping.py").write_text(SKIPPING_TESTS)
    args = ["-p", "tests.conftest", "--rootdir", str(tmp_path), str(tmp_path / "test_skipping.py")]

    outside = _pytest(args, ci=False, cwd=tmp_path)
    text = outside.stdout.decode()
    assert outside.returncode == 0, text
    assert outcomes(text) == {"passed": 1, "skipped": 4, "xfailed": 1}, text

    inside = _pytest(args, ci=True, cwd=tmp_path)
    text = inside.stdout.decode()
    assert inside.returncode == 1, text
    # A skip in the test fails it; one in a fixture or a marker (the setup) is an error: both fail the run.
    # The opt-in skip stays a skip, the strict xfail an xfail.
    assert outcomes(text) == {"failed": 1, "error": 2, "passed": 1, "skipped": 1, "xfailed": 1}, text
    for reason in ("sometool is not installed", "does not shift Python's clock", "a service is missing"):
        assert reason in text, text
    assert "CI=true" in text


def test_under_ci_the_faketime_expirer_test_fails_without_faketime(tmp_path):
    """The shifted-clock expirer test, with no faketime on PATH: a skip outside CI, a failure in it."""
    path = str(tmp_path)  # an empty directory: no faketime
    target = ["tests/e2e/test_expirer_faketime.py"]
    outside = _pytest(target, ci=False, cwd=ROOT, path=path)
    assert outside.returncode == 0 and "skipped" in outside.stdout.decode(), outside.stdout.decode()[-3000:]
    inside = _pytest(target, ci=True, cwd=ROOT, path=path)
    text = inside.stdout.decode()
    assert inside.returncode == 1, text[-3000:]
    assert "faketime is not installed" in text and "CI=true" in text, text[-3000:]
