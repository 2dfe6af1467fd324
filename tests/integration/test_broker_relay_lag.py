"""How far the broker is behind the log, against the machine's Redis and NATS: a relay that has
published part of a log reports it on its gauges (``stories_relay_lag_events`` /
``stories_relay_lag_seconds``), ``stories tail --lag`` prints it
from the broker itself, and both drop to 0 once the relay caught up."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from brokers.lag import broker_last_position, lag_report, print_lag
from brokers.publishers import make_publisher
from brokers.relay import MemoryPositionStore, Relay
from commands.event_store import EventStore
from commands.synthetic_load import generate
from domain.platform import Platform
from tests.conftest import NATS_TEST_URL, RUN_ID, drop_broker_stream, one_redis_url, reachable, skip_backend

redis_url = one_redis_url
ROOT = Path(__file__).resolve().parents[2]
STORIES = str(Path(sys.executable).parent / "stories")  # the venv's `stories` command
PLATFORM = Platform.VIGNETTE


@pytest.fixture(params=["redis", "nats"])
def broker(request, redis_url):
    """(broker URL, a prefix of this test's own); the stream is deleted afterwards."""
    if request.param == "nats":
        if not reachable("127.0.0.1", 4222):
            skip_backend("nats", "nothing listens on 127.0.0.1:4222")
        url = NATS_TEST_URL
    else:
        url = redis_url
    prefix = f"lagtest{RUN_ID}{uuid.uuid4().hex[:6]}"
    yield url, prefix
    asyncio.run(drop_broker_stream(url, prefix))


async def test_a_relay_half_way_reports_its_lag_and_tail_lag_prints_it(broker, sqlite_url, clock):
    url, prefix = broker
    store = EventStore(sqlite_url)
    await generate(store, PLATFORM, users=10, stories=5, engagements=60, seed=3, clock=clock)
    clock.advance(minutes=10)  # "now", for the lag in seconds
    head = store.head()
    logged = list(store.read())
    publisher = make_publisher(url, prefix, retention=timedelta(hours=1))
    relay = Relay(store, publisher, MemoryPositionStore(), PLATFORM.value, batch_size=20, now=clock)
    gauge = relay.metrics.registry.get_sample_value
    await publisher.connect()
    try:
        assert await broker_last_position(url, prefix) is None
        empty = await lag_report(sqlite_url, url, prefix, now=clock)  # nothing published yet
        assert (empty.head, empty.position, empty.events) == (head, None, head)
        assert empty.oldest_missing_position == logged[0].position
        assert empty.seconds == (clock() - logged[0].event.occurred_at).total_seconds()

        await relay.run_once()
        await relay.run_once()  # two batches of a log of more than 60 events: part of it
        published = [e for e in logged if e.position <= relay.position]
        missing = [e for e in logged if e.position > relay.position]
        assert published and missing
        expected_seconds = (clock() - missing[0].event.occurred_at).total_seconds()
        assert expected_seconds > 0

        lag = await relay.measure_lag()  # the relay's gauges: from the position the broker confirmed
        assert (lag.head, lag.events, lag.oldest_missing_position) == (head, head - relay.position, missing[0].position)
        assert gauge("stories_relay_lag_events") == head - relay.position
        assert gauge("stories_relay_lag_seconds") == expected_seconds

        # tail --lag: the broker's own last position (the last published event's)
        assert await broker_last_position(url, prefix) == published[-1].position
        report = await lag_report(sqlite_url, url, prefix, now=clock)
        assert (report.head, report.position) == (head, published[-1].position)
        assert report.events == head - published[-1].position
        assert report.oldest_missing == missing[0].event.occurred_at
        assert report.seconds == expected_seconds

        out = io.StringIO()
        assert await print_lag(sqlite_url, url, prefix, out, follow=True, interval_s=0.01, times=2) == 2
        lines = out.getvalue().splitlines()
        assert len(lines) == 2
        assert lines[0].startswith(
            f"head={head} broker={published[-1].position} lag_events={head - published[-1].position} lag_seconds="
        )
        assert lines[0].endswith(f"oldest_missing={missing[0].event.occurred_at.isoformat()}")

        process = subprocess.run(  # the command itself, once; exit code 0
            [
                STORIES,
                "tail",
                "--lag",
                "--event-store-url",
                sqlite_url,
                "--broker-url",
                url,
                "--prefix",
                prefix,
            ],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert process.returncode == 0, process.stderr
        printed = process.stdout.splitlines()
        assert len(printed) == 1 and printed[0].startswith(
            f"head={head} broker={published[-1].position} lag_events={head - published[-1].position} "
        )
        assert float(printed[0].split("lag_seconds=")[1].split()[0]) > 0  # the real clock: after the events

        await relay.catch_up()
        caught_up = await relay.measure_lag()
        assert (caught_up.events, caught_up.seconds) == (0, 0.0)
        assert gauge("stories_relay_lag_events") == 0 and gauge("stories_relay_lag_seconds") == 0
        final = await lag_report(sqlite_url, url, prefix, now=clock)
        assert (final.position, final.events, final.seconds) == (logged[-1].position, 0, 0.0)
    finally:
        relay.close()
        await publisher.close()
        store.close()


async def test_stories_tail_lag_reads_the_settings(broker, sqlite_url, clock, tmp_path):
    """``stories tail --lag`` with STORIES_EVENT_STORE_URL / STORIES_BROKER_URL / STORIES_BROKER_PREFIX."""
    url, prefix = broker
    store = EventStore(sqlite_url)
    await generate(store, PLATFORM, users=10, stories=5, engagements=20, seed=4, clock=clock)
    head = store.head()
    store.close()
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        STORIES_EVENT_STORE_URL=sqlite_url,
        STORIES_BROKER_URL=url,
        STORIES_BROKER_PREFIX=prefix,
        STORIES_DATA_DIR=str(tmp_path / "data"),
    )
    if url.startswith("nats"):
        env["STORIES_REDIS_URL"] = os.environ.get("STORIES_REDIS_URL", "redis://127.0.0.1:6379/0")
    process = subprocess.run(
        [sys.executable, "-m", "stories.cli", "tail", "--lag"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 0, process.stderr
    assert process.stdout.splitlines() == [process.stdout.strip()]
    assert process.stdout.startswith(f"head={head} broker=- lag_events={head} lag_seconds=")
