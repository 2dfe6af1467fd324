"""Issue 11 over real processes (items 1, 2, 4, 11 and 13): dev mode stays on loopback with a
secret of its data directory's own, tokens need ``exp``, weak or broken keys refuse to start,
RS256 end to end, /ready without error text, the HTTP layer's own errors as JSON, a 401 from the
query API with X-Stories-Position, and waiting for X-Stories-Min-Position costing the stores no
reads per request.

In-process unit tests of the same rules: tests/unit/test_auth.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import subprocess
import time
import uuid
from pathlib import Path

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.conftest import STORIES, clean_env, free_port, log_tail, stop_process, wait_healthy

pytestmark = pytest.mark.timeout(180)

S = "/api/v1/stories"
TEXT_STORY = {"story_type": "text", "text_content": "hello"}
PUBLISHED_DEV_SECRET = "stories-dev-secret-do-not-use-in-production"  # what the repository used to ship
REFUSE_WITHIN_S = 30.0


def hs256(secret: str, sub: str = "alice", **extra) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 600, **extra}, secret, algorithm="HS256")


def stories(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``stories ARGS`` to completion (a process that should refuse to start: it must exit)."""
    cwd.mkdir(parents=True, exist_ok=True)
    try:
        return subprocess.run(
            [STORIES, *args], env=env, cwd=cwd, capture_output=True, timeout=REFUSE_WITHIN_S, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`stories {' '.join(args)}` was still running after {REFUSE_WITHIN_S}s: it did not refuse")


def assert_refused(out: subprocess.CompletedProcess, *words: str) -> None:
    err = out.stderr.decode()
    assert out.returncode == 2, (out.returncode, err[-2000:])
    for word in words:
        assert word in err, (word, err[-2000:])


class Server:
    """One ``stories command-api`` started here with exactly the given environment."""

    def __init__(self, cwd: Path, env: dict[str, str], port: int) -> None:
        cwd.mkdir(parents=True, exist_ok=True)
        self.port, self.log_path = port, cwd / f"command-api-{port}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [STORIES, "command-api"],
                env=env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_healthy("command API", self.process, "127.0.0.1", port, self.log, 20.0)
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        return log_tail(self.log_path)

    def post_story(self, token: str) -> int:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            conn.request(
                "POST",
                S,
                body=json.dumps(TEXT_STORY),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            return conn.getresponse().status
        finally:
            conn.close()

    def stop(self) -> None:
        stop_process(self.process)


# -- item 1: dev mode ------------------------------------------------------------------------------


@pytest.mark.parametrize("process", ["command-api", "query-api", "run", "projector"])
@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_dev_mode_refuses_to_start_on_a_non_loopback_address(tmp_path, process, host):
    env = clean_env(
        {
            "STORIES_DEV_MODE": "true",
            "STORIES_HOST": host,
            "STORIES_DATA_DIR": str(tmp_path / "data"),
            "STORIES_COMMAND_PORT": str(free_port()),
            "STORIES_QUERY_PORT": str(free_port()),
        }
    )
    assert_refused(stories([process], env, tmp_path), "loopback", "STORIES_HOST")


def test_dev_mode_secret_is_the_data_directorys_own_and_stories_token_works_from_another_shell(tmp_path):
    """`make run` in one shell (dev mode, default data dir ./.data), `stories token alice` in another
    shell of the same project (no STORIES_* set at all): the token works. The published constant
    and another project's dev secret do not."""
    project, other = tmp_path / "project", tmp_path / "other-project"
    port = free_port()
    server = Server(
        project,
        clean_env({"STORIES_DEV_MODE": "true", "STORIES_COMMAND_PORT": str(port), "STORIES_RATE_LIMIT_PER_S": "0"}),
        port,
    )
    try:
        secret_file = project / ".data" / "dev-jwt-secret"
        assert secret_file.exists(), server.log()
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert PUBLISHED_DEV_SECRET not in secret_file.read_text()

        minted = stories(["token", "alice"], clean_env({}), project)  # another shell: nothing set
        assert minted.returncode == 0, minted.stderr.decode()
        assert server.post_story(minted.stdout.decode().strip()) == 201, server.log()

        assert server.post_story(hs256(PUBLISHED_DEV_SECRET)) == 401
        elsewhere = stories(["token", "alice"], clean_env({"STORIES_DEV_MODE": "true"}), other)
        assert elsewhere.returncode == 0, elsewhere.stderr.decode()
        assert (other / ".data" / "dev-jwt-secret").read_text() != secret_file.read_text()
        assert server.post_story(elsewhere.stdout.decode().strip()) == 401
    finally:
        server.stop()
    # A shell whose data directory holds no dev secret (and not in dev mode) is told why.
    out = stories(["token", "alice"], clean_env({}), tmp_path / "nothing-here")
    assert_refused(out, "dev-jwt-secret")


# -- item 2: exp required, weak secrets and bad keys refuse to start, RS256 end to end --------------


@pytest.mark.parametrize("process", ["command-api", "query-api"])
def test_an_hs256_secret_under_32_bytes_refuses_to_start(tmp_path, process):
    env = clean_env(
        {
            "STORIES_JWT_SECRET": "too-short-secret",
            "STORIES_DATA_DIR": str(tmp_path),
            "STORIES_COMMAND_PORT": str(free_port()),
            "STORIES_QUERY_PORT": str(free_port()),
        }
    )
    assert_refused(stories([process], env, tmp_path), "STORIES_JWT_SECRET", "at least 32")


@pytest.mark.parametrize("process", ["command-api", "query-api"])
def test_an_rs256_public_key_that_does_not_parse_refuses_to_start(tmp_path, process):
    env = clean_env(
        {
            "STORIES_JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----",
            "STORIES_DATA_DIR": str(tmp_path),
            "STORIES_COMMAND_PORT": str(free_port()),
            "STORIES_QUERY_PORT": str(free_port()),
        }
    )
    assert_refused(stories([process], env, tmp_path), "STORIES_JWT_PUBLIC_KEY")


def test_a_token_without_exp_is_401(start_command_api):
    api = start_command_api(rate_limit_per_s=0)
    no_exp = jwt.encode({"sub": "alice", "iat": int(time.time())}, api.secret, algorithm="HS256")
    resp = api.rejected(401, "POST", S, None, TEXT_STORY, token=no_exp, code="unauthorized")
    assert "exp" in resp.body["error"]["message"], resp
    assert api.request("POST", S, "alice", TEXT_STORY).status == 201


def test_rs256_end_to_end(start_command_api):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    api = start_command_api(rate_limit_per_s=0, jwt_public_key=pem)
    now = int(time.time())

    def rs256(key=private, **claims) -> str:
        return jwt.encode({"sub": "alice", "iat": now, **claims}, key, algorithm="RS256")

    created = api.request("POST", S, None, TEXT_STORY, token=rs256(exp=now + 600))
    assert created.status == 201 and created.body["story_id"], (created, api.log())
    api.rejected(401, "POST", S, None, TEXT_STORY, token=rs256(), code="unauthorized")  # no exp
    api.rejected(401, "POST", S, None, TEXT_STORY, token=rs256(exp=now - 60), code="unauthorized")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    api.rejected(401, "POST", S, None, TEXT_STORY, token=rs256(other, exp=now + 600), code="unauthorized")
    # HS256 is not accepted once RS256 is configured, neither with the (ignored) secret nor the key
    api.rejected(401, "POST", S, None, TEXT_STORY, token=hs256(api.secret), code="unauthorized")


# -- item 4: /ready --------------------------------------------------------------------------------


def test_ready_names_the_dependency_and_its_state_without_the_error_text(start_command_api):
    role, database = f"role_{uuid.uuid4().hex[:6]}", f"db_{uuid.uuid4().hex[:6]}"
    api = start_command_api(event_store_url=f"postgresql://{role}@127.0.0.1:1/{database}", start_timeout=10)
    ready = api.get("/ready")
    assert ready.status == 503 and ready.header("retry-after"), ready
    assert ready.body == {
        "error": {"code": "not_ready", "message": ready.body["error"]["message"], "details": {"event_store": "down"}}
    }, ready
    raw = ready.raw.decode()
    for leak in ("127.0.0.1", role, database, "port 1", "refused", "postgres"):
        assert leak not in raw, (leak, raw)
    deadline = time.monotonic() + 10
    while "not ready: event_store" not in api.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "not ready: event_store" in api.log(), api.log()  # the details go to the log


# -- item 11: the HTTP layer's own errors, X-Stories-Position on a 401 ------------------------------


def raw_exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; (status, lower-cased headers, body) of the answer."""
    raw = b""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data)
        while True:
            head, sep, body = raw.partition(b"\r\n\r\n")
            if sep:
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")[1:]
                        if line.lower().startswith(b"content-length:")
                    ),
                    None,
                )
                if length is not None and len(body) >= length:
                    break
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), raw[:300]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


MALFORMED = {
    "oversized_header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
    "oversized_request_line": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad_request_line": b"this is not http at all\r\n\r\n",
    "unknown_method": b"BREW /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad_header": b"GET /health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    "bad_version": b"GET /health HTTP/9.9.9\r\nHost: x\r\n\r\n",
}


def check_json_errors(port: int) -> None:
    failures = []
    for name, data in MALFORMED.items():
        status, headers, body = raw_exchange(port, data)
        try:
            assert 400 <= status < 600 and status != 500, status
            assert headers.get("content-type", "").startswith("application/json"), headers
            error = json.loads(body)["error"]
            assert set(error) <= {"code", "message", "details"}, error
            assert error["code"] and error["code"].replace("_", "").isalpha() and error["code"].islower(), error
            assert isinstance(error["message"], str) and error["message"], error
        except (AssertionError, ValueError, KeyError) as e:
            failures.append(f"{name}: {status} {headers.get('content-type')} {body[:120]!r}: {e}")
    assert not failures, "\n".join(failures)


def test_http_layer_errors_are_json_on_the_command_api(start_command_api):
    api = start_command_api()
    check_json_errors(api.port)
    assert api.get("/health").status == 200  # and it still serves


def test_http_layer_errors_are_json_on_the_query_api(read_side):
    check_json_errors(read_side.query_port)


def test_a_401_from_the_query_api_carries_x_stories_position(read_side):
    for resp in (
        read_side.query(f"{S}/feed"),
        read_side.query(f"{S}/feed", token="not.a.jwt"),
        read_side.query(f"{S}/feed", token=hs256(read_side.secret + "-wrong")),
    ):
        assert resp.status == 401 and resp.body["error"]["code"] == "unauthorized", resp
        assert resp.header("x-stories-position") is not None and int(resp.header("x-stories-position")) >= 0, resp
    missing = read_side.query("/api/v1/no-such-endpoint", "alice")  # every query answer, errors included
    assert missing.status == 404 and missing.header("x-stories-position") is not None, missing


# -- item 13: one shared waiter for X-Stories-Min-Position -----------------------------------------


class CountingStores:
    """Stand-ins for the query API's MongoDB and Redis clients that count every positions read."""

    def __init__(self) -> None:
        self.position = 5
        self.reads = 0
        outer = self

        class Collection:
            def find(self, query):
                outer.reads += 1

                async def docs():
                    for name in query["_id"]["$in"]:
                        yield {"_id": name, "position": outer.position}

                return docs()

        from projections.mongo_schema import POSITIONS

        self.mongo = {"db": {POSITIONS: Collection()}}

    def pipeline(self, transaction: bool = False):
        outer = self

        class Pipeline:  # one round trip of GETs counts as one read
            keys = 0

            async def __aenter__(self):
                return self

            async def __aexit__(self, *exc):
                return None

            def get(self, key):
                self.keys += 1

            async def execute(self):
                outer.reads += 1
                return [str(outer.position)] * self.keys

        return Pipeline()


async def test_waiting_requests_cost_the_stores_no_reads_of_their_own():
    """500 requests waiting for a position read nothing themselves: one refresh (the process's own
    loop) wakes every one of them. (Each used to poll both stores every 10 ms.)"""
    from read_api.app import ProjectionPositions

    stores = CountingStores()
    positions = ProjectionPositions(stores.mongo, "db", stores, "p:", 1)  # type: ignore[arg-type]
    assert await positions.refresh() == 5
    reads = stores.reads
    waiting = [asyncio.create_task(positions.wait_for(10, 60)) for _ in range(500)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert not any(t.done() for t in waiting)
    assert stores.reads == reads, f"{stores.reads - reads} reads by 500 waiting requests"
    stores.position = 9
    await positions.refresh()  # moved, but not far enough: they keep waiting
    for _ in range(20):
        await asyncio.sleep(0)
    assert not any(t.done() for t in waiting)
    stores.position = 10
    await positions.refresh()
    assert all(await asyncio.wait_for(asyncio.gather(*waiting), 10))
    assert stores.reads == reads + 4  # the two refreshes above (two reads each: MongoDB, Redis), nothing else
    assert await positions.wait_for(10, 1) and stores.reads == reads + 4  # reached already: no wait, no read


def test_many_waiting_requests_cost_a_real_query_api_no_reads_per_request(tmp_path, mongodb_url):
    """A real query API on a Valkey of its own (so INFO commandstats counts only its reads), no
    projector (positions stay 0): N requests wait for a position it never reaches and all answer
    503 position_not_reached. The process's one loop reads the positions (MGET) every 10 ms while
    they wait, whatever N; each request used to poll on its own every 10 ms (about N x 100 reads)."""
    import redis

    from stories.embedded import start_valkey

    valkey = start_valkey(tmp_path / "valkey")
    port, secret, requests = free_port(), "e2e-secret-" + uuid.uuid4().hex, 400
    env = clean_env(
        {
            "STORIES_HOST": "127.0.0.1",
            "STORIES_QUERY_PORT": str(port),
            "STORIES_JWT_SECRET": secret,
            "STORIES_DATA_DIR": str(tmp_path),
            "STORIES_MONGODB_URL": mongodb_url,
            "STORIES_MONGODB_DATABASE": f"e2e_wait_{uuid.uuid4().hex[:8]}",
            "STORIES_REDIS_URL": valkey.url,
            "STORIES_MIN_POSITION_WAIT_S": "1",
        }
    )
    log_path = tmp_path / "query-api.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [STORIES, "query-api"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    client = redis.Redis.from_url(valkey.url)
    try:
        wait_healthy("query API", process, "127.0.0.1", port, lambda: log_tail(log_path), 30.0)

        def mget_calls() -> int:
            return int(client.info("commandstats").get("cmdstat_mget", {}).get("calls", 0))

        async def wait_all() -> list[tuple[int, str]]:
            headers = {"Authorization": f"Bearer {hs256(secret)}", "X-Stories-Min-Position": "1000000"}
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

                async def one() -> tuple[int, str]:
                    async with session.get(f"http://127.0.0.1:{port}{S}/feed", headers=headers) as resp:
                        return resp.status, (await resp.json())["error"]["code"]

                return await asyncio.gather(*(one() for _ in range(requests)))

        before = mget_calls()
        answers = asyncio.run(wait_all())
        reads = mget_calls() - before
        assert answers == [(503, "position_not_reached")] * requests, set(answers)
        assert reads < requests, f"{reads} position reads for {requests} waiting requests"
    finally:
        client.close()
        stop_process(process)
        valkey.stop()
