"""Shared fixtures.

Production backends (PostgreSQL, Redis, NATS) are the machine's services. Each run uses its own
database / key prefix / subject so runs never collide. Without a service the tests that need it
skip with the reason; under CI (CI=true) every skip fails the run unless its reason is on
CI_ALLOWED_SKIPS (reasons that cannot apply to a CI run).
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings

# Property tests check rules, not speed: on a loaded CI machine a slow example or slow data
# generation is not a failure (benchmarks under bench/ measure speed).
settings.register_profile("stories", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("stories")

RUN_ID = uuid.uuid4().hex[:10]
PG_ADMIN_URL = os.environ.get("STORIES_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("STORIES_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_TEST_URL = os.environ.get("STORIES_TEST_NATS_URL", "nats://127.0.0.1:4222")
IN_CI = os.environ.get("CI", "").lower() == "true"  # see in_ci(): skips under CI fail the run
BACKEND_SKIP_PREFIX = "backend unavailable:"


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def skip_backend(name: str, detail: str) -> None:
    pytest.skip(f"{BACKEND_SKIP_PREFIX} {name} ({detail})")


# -- CI: a skip is a failure --------------------------------------------------------------------
#
# Under CI=true every skip (pytest.skip in a test or fixture, a skip/skipif marker, a skipped
# module) fails the run, whatever its reason (a missing service, faketime not installed or not
# working, a prerequisite test that did not run), unless the reason starts with one of these
# prefixes: reasons that cannot apply to a CI run. Strict xfails are not skips and stay as they are.
CI_ALLOWED_SKIPS: dict[str, str] = {
    "opt-in:": "the test runs only when explicitly asked for (the reason names the variable), "
    "e.g. an hours-long soak that the CI job is not meant to run",
}
CI_SKIP_FAILURE = "CI=true: skipping is a failure here"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def ci_allowed_skip(reason: str) -> bool:
    return reason.startswith(tuple(CI_ALLOWED_SKIPS))


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if not ci_allowed_skip(reason):
            report.outcome = "failed"
            report.longrepr = f"{CI_SKIP_FAILURE} (the reason is not on tests/conftest.py's CI_ALLOWED_SKIPS): {reason}"
    return report


_SKIPPED_COLLECTIONS: list[str] = []


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """A module skipped as a whole (pytest.skip(allow_module_level=True)) has no test report to
    turn into a failure: remember it and fail the session at the end."""
    if in_ci() and report.skipped and not ci_allowed_skip(_skip_reason(report)):
        _SKIPPED_COLLECTIONS.append(f"{report.nodeid}: {_skip_reason(report)}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _SKIPPED_COLLECTIONS:
        print(f"\n{CI_SKIP_FAILURE}: {len(_SKIPPED_COLLECTIONS)} module(s) skipped:")
        for line in _SKIPPED_COLLECTIONS[:20]:
            print("  ", line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh PostgreSQL database for this run, dropped at the end."""
    if not reachable("127.0.0.1", 5432):
        skip_backend("postgres", "nothing listens on 127.0.0.1:5432")
    import psycopg

    name = f"stories_test_{RUN_ID}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as e:
        skip_backend("postgres", str(e).strip())
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'events.sqlite3'}"


@pytest.fixture
def postgres_schema_url(postgres_url):
    """A fresh schema in this run's database, per test."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{postgres_url}?schema={schema}"


@pytest.fixture(params=["sqlite", "postgres"])
def event_store_url(request):
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_schema_url")


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def uid() -> Callable[[str], str]:
    """Fresh user ids per test, so tests sharing one server never meet."""
    tag = uuid.uuid4().hex[:8]
    return lambda name: f"{name}-{tag}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# -- read-side backends ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def mongodb_url(tmp_path_factory):
    """An embedded SecantusDB server (MongoDB wire protocol) for the whole run."""
    from stories.embedded import start_secantus

    server = start_secantus(tmp_path_factory.mktemp("secantus"))
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def one_redis_url():
    """The machine's Redis service; each test gets its own key prefix (``redis_prefix``)."""
    if not reachable("127.0.0.1", 6379):
        skip_backend("redis", "nothing listens on 127.0.0.1:6379")
    return REDIS_TEST_URL


@pytest.fixture(scope="session")
def redis_url(one_redis_url, request):
    """Redis for the read models: the machine's server, or with ``STORIES_TEST_REDIS=cluster``
    (``make test-cluster``) a 3-master Redis Cluster for the whole run. Brokers and the relay's
    tests take ``one_redis_url``. A module whose read models run on both in every run overrides
    it: ``redis_url = on_one_redis_and_a_cluster``."""
    if os.environ.get("STORIES_TEST_REDIS") == "cluster":
        return request.getfixturevalue("redis_cluster").url
    return one_redis_url


@pytest.fixture(params=["one-redis", "redis-cluster"])
def on_one_redis_and_a_cluster(request):
    """The read models' Redis: the machine's server, then a 3-master Redis Cluster (the same code
    runs on both; ``redis_cluster``)."""
    return request.getfixturevalue("one_redis_url" if request.param == "one-redis" else "redis_cluster_url")


@pytest.fixture
def redis_prefix(redis_url):
    from stories.backends import connect_redis

    prefix = f"stories-test:{RUN_ID}:{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = connect_redis(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def mongodb_database(mongodb_url):
    import pymongo
    from pymongo import MongoClient

    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with MongoClient(mongodb_url) as client, pymongo.timeout(20):
        client.drop_database(name)


@pytest.fixture
def read_side_settings(tmp_path, mongodb_url, mongodb_database, redis_url, redis_prefix):
    """Settings for a read side on this test's own database and key prefix (SQLite log)."""
    from stories.settings import Settings

    return Settings(
        data_dir=tmp_path,
        mongodb_url=mongodb_url,
        mongodb_database=mongodb_database,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        jwt_secret="test-secret-of-at-least-32-bytes-for-hs256",
    )


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A real Redis Cluster for the whole run (tests/cluster.py): 3 masters with one replica each
    on loopback, from the machine's redis-server. Tests that kill a node restart it (see
    tests/integration/test_redis_cluster_fixture.py) so the next test finds it healthy."""
    from tests.cluster import ClusterError, LocalRedisCluster

    try:
        cluster = LocalRedisCluster.start(tmp_path_factory.mktemp("redis-cluster"))
    except (ClusterError, OSError) as e:
        skip_backend("redis-cluster", str(e).strip()[:4000])
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster):
    """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`` (the cluster's first masters)."""
    return redis_cluster.url


async def drop_broker_stream(url: str, prefix: str) -> None:
    """Delete a test's own broker stream (Redis Streams or JetStream)."""
    from brokers.publishers import nats_stream_name, redis_stream_name

    if url.startswith("redis"):
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(url)
        await client.delete(redis_stream_name(prefix))
        await client.aclose()
    else:
        import nats
        from nats.js.errors import NotFoundError

        connection = await nats.connect(url)
        with contextlib.suppress(NotFoundError):
            await connection.jetstream().delete_stream(nats_stream_name(prefix))
        await connection.close()


@pytest.fixture(scope="module")
def read_side(tmp_path_factory, mongodb_url, redis_url):
    """One vignette read side per test module: the real command API, projector and query API
    processes (``tests/e2e/read_side.py``); ``tests/integration`` serves them in process instead."""
    from tests.e2e.read_side import cleanup, launch

    side = launch(tmp_path_factory.mktemp("read-side"), mongodb_url, redis_url)
    try:
        yield side
    finally:
        side.stop()
        cleanup(side)
