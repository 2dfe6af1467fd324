"""The projector against the real Mongo wire server (SecantusDB) and the machine's Redis."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path

import pytest
import redis
from pymongo import MongoClient

from commands.event_store import EventStore
from commands.synthetic_load import generate
from domain.platform import Platform
from projections.mongo_schema import POSITIONS
from projections.mongo_views import MongoViewStore
from projections.redis_views import RedisViewStore
from projections.runner import ProjectionRunner
from stories.backends import connect_redis
from tests.conftest import on_one_redis_and_a_cluster
from tests.read_models import dump_mongo, dump_redis, positions, redis_views_counted

redis_url = on_one_redis_and_a_cluster  # these read models run on one Redis and on a Redis Cluster


def _project(
    store: EventStore, mongo: MongoClient, database: str, rclient: redis.Redis, prefix: str, batch: int
) -> None:
    for view in (MongoViewStore(mongo, database), RedisViewStore(rclient, prefix)):
        ProjectionRunner(store, view, batch).catch_up()


def _recorded_views(store: EventStore) -> int:
    """Accepted views less the owners' own (accepted, not recorded)."""
    return sum(1 for logged in store.read() if logged.event.event_type == "StoryViewed")


def _live_views(store: EventStore) -> int:
    """Recorded views of stories that have not expired nor been deleted: what Redis counts."""
    events = [logged.event for logged in store.read()]
    gone = {e.story_id for e in events if e.event_type in ("StoryExpired", "StoryDeleted")}
    return sum(1 for e in events if e.event_type == "StoryViewed" and e.story_id not in gone)


@pytest.fixture
def generated_log(read_side_settings, clock):
    store = EventStore(read_side_settings.event_store_url)
    tally = asyncio.run(generate(store, Platform.VIGNETTE, users=40, stories=60, engagements=1500, clock=clock))
    yield store, tally
    store.close()


def test_projection_in_small_batches_equals_one_rebuild(generated_log, read_side_settings, mongodb_url, redis_url):
    store, _tally = generated_log
    s = read_side_settings
    mongo, rclient = MongoClient(mongodb_url, tz_aware=True), connect_redis(redis_url)
    _project(store, mongo, s.mongodb_database, rclient, s.redis_prefix, batch=37)
    rebuilt_db, rebuilt_prefix = s.mongodb_database + "_rebuilt", s.redis_prefix[:-1] + "-rebuilt:"
    try:
        _project(store, mongo, rebuilt_db, rclient, rebuilt_prefix, batch=5000)
        assert dump_mongo(mongo, s.mongodb_database) == dump_mongo(mongo, rebuilt_db)
        assert dump_redis(rclient, s.redis_prefix) == dump_redis(rclient, rebuilt_prefix)
        # Every recorded view is counted once, in both stores.
        recorded = _recorded_views(store)
        assert sum(d.get("view_count", 0) for d in mongo[s.mongodb_database].stories.find()) == recorded
        assert redis_views_counted(rclient, s.redis_prefix) == _live_views(store)
        assert positions(mongo, s.mongodb_database, rclient, s.redis_prefix) == (store.head(), store.head())
    finally:
        mongo.drop_database(rebuilt_db)
        for key in rclient.scan_iter(match=rebuilt_prefix + "*"):
            rclient.delete(key)


def test_a_second_runner_never_applies_a_batch_twice(generated_log, read_side_settings, mongodb_url, redis_url):
    store, _tally = generated_log
    s = read_side_settings
    mongo, rclient = MongoClient(mongodb_url, tz_aware=True), connect_redis(redis_url)
    views = [MongoViewStore(mongo, s.mongodb_database), RedisViewStore(rclient, s.redis_prefix)]
    for view in views:
        first, second = ProjectionRunner(store, view, 100), ProjectionRunner(store, view, 100)
        while first.run_once() | second.run_once():  # interleaved, both from the same start
            pass
    recorded = _recorded_views(store)
    assert sum(d.get("view_count", 0) for d in mongo[s.mongodb_database].stories.find()) == recorded
    assert redis_views_counted(rclient, s.redis_prefix) == _live_views(store)


def _projector_process(settings, batch: int) -> subprocess.Popen:
    env = dict(
        os.environ,
        STORIES_EVENT_STORE_URL=settings.event_store_url,
        STORIES_MONGODB_URL=settings.mongodb_url,
        STORIES_MONGODB_DATABASE=settings.mongodb_database,
        STORIES_REDIS_URL=settings.redis_url,
        STORIES_REDIS_PREFIX=settings.redis_prefix,
        STORIES_PROJECTOR_BATCH=str(batch),
        STORIES_DATA_DIR=str(settings.data_dir),
    )
    exe = Path(sys.executable).parent / "stories"
    return subprocess.Popen([str(exe), "projector"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture
def long_log(read_side_settings, clock):
    store = EventStore(read_side_settings.event_store_url)
    asyncio.run(generate(store, Platform.VIGNETTE, users=60, stories=120, engagements=15000, clock=clock))
    yield store
    store.close()


def test_sigkill_mid_batch_loses_and_doubles_nothing(long_log, read_side_settings, mongodb_url, redis_url):
    store = long_log
    s = read_side_settings
    mongo, rclient = MongoClient(mongodb_url, tz_aware=True), connect_redis(redis_url)
    head = store.head()
    rng = random.Random(3)
    kills_mid_stream = kills_mid_batch = 0
    deadline = time.monotonic() + 180
    checkpoint = mongo[s.mongodb_database][POSITIONS]
    # Small batches keep the projector busy long enough to be killed several times mid-stream;
    # after start-up, each kill waits (up to 1 s) for a MongoDB batch in flight, and the kills go
    # on until at least one is confirmed to have landed mid-batch (its intent recorded).
    while kills_mid_stream < 4 or not kills_mid_batch:
        assert time.monotonic() < deadline, "could not kill the projector mid-stream and mid-batch"
        proc = _projector_process(s, batch=rng.choice([3, 5, 8]))
        time.sleep(rng.uniform(1.3, 2.0))  # start-up takes ~1.2 s
        aim = time.monotonic() + 1.0
        while time.monotonic() < aim and not (checkpoint.find_one({"_id": "mongo_views"}) or {}).get("pending_until"):
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        mongo_at, redis_at = positions(mongo, s.mongodb_database, rclient, s.redis_prefix)
        assert min(mongo_at, redis_at) < head, "caught up before the kill: make the log longer"
        kills_mid_stream += 1
        kills_mid_batch += bool((checkpoint.find_one({"_id": "mongo_views"}) or {}).get("pending_until"))
    proc = _projector_process(s, batch=50)
    while positions(mongo, s.mongodb_database, rclient, s.redis_prefix) != (head, head):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "projector did not catch up"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    rebuilt_db, rebuilt_prefix = s.mongodb_database + "_rebuilt", s.redis_prefix[:-1] + "-rebuilt:"
    try:
        _project(store, mongo, rebuilt_db, rclient, rebuilt_prefix, batch=1000)
        assert dump_mongo(mongo, s.mongodb_database) == dump_mongo(mongo, rebuilt_db)
        assert dump_redis(rclient, s.redis_prefix) == dump_redis(rclient, rebuilt_prefix)
    finally:
        mongo.drop_database(rebuilt_db)
        for key in rclient.scan_iter(match=rebuilt_prefix + "*"):
            rclient.delete(key)


def test_a_story_whose_safety_net_fired_first_still_leaves_its_authors_live_set(redis_url, redis_prefix):
    """The per-story TTL is a safety net: if it fires before the story's StoryExpired is projected
    (projector down longer than the grace), the late event must still remove the live-set member,
    or an active author's live set would keep it for as long as they post."""
    from datetime import datetime, timedelta
    from uuid import uuid4

    from commands.event_store import LoggedEvent
    from domain import stories as sto
    from projections.redis_schema import Keys

    rclient = connect_redis(redis_url)
    store = RedisViewStore(rclient, redis_prefix, grace=timedelta(milliseconds=200))
    keys = Keys(redis_prefix)
    now = datetime.now(UTC)

    def created(sid: str, life: timedelta) -> sto.StoryCreated:
        return sto.StoryCreated(
            originator_id=uuid4(),
            originator_version=1,
            occurred_at=now,
            story_id=sid,
            user_id="alice",
            story_type="text",
            media_id=None,
            media_url=None,
            thumbnail_url=None,
            text_content="hi",
            background_color=None,
            background_gradient=None,
            duration=5.0,
            stickers=[],
            privacy="followers",
            allowed_viewer_ids=[],
            hidden_from_ids=[],
            allow_replies="everyone",
            expires_at=(now + life).isoformat(),
        )

    short, long_ = str(uuid4()), str(uuid4())
    store.apply(
        [
            LoggedEvent(1, created(short, timedelta(milliseconds=300))),
            LoggedEvent(2, created(long_, timedelta(hours=6))),
        ],
        0,
        2,
    )
    deadline = time.monotonic() + 10
    while rclient.exists(keys.counters(short)):  # the safety net fires (Redis's own clock)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert any(m.startswith(short.encode()) for m in rclient.smembers(keys.live("alice")))  # still listed
    expired = sto.StoryExpired(
        originator_id=uuid4(),
        originator_version=2,
        occurred_at=now + timedelta(seconds=1),
        story_id=short,
        user_id="alice",
        expired_at=(now + timedelta(seconds=1)).isoformat(),
    )
    store.apply([LoggedEvent(3, expired)], 2, 3)
    members = rclient.smembers(keys.live("alice"))
    assert [m.split(b"|")[0].decode() for m in members] == [long_]
