"""The bulk rebuild (``projections.bulk_load``) writes exactly what the normal projection writes,
and the normal projector continues from where it stopped."""

from __future__ import annotations

import asyncio

import pytest
from pymongo import MongoClient

from commands.event_store import EventStore
from commands.synthetic_load import generate
from domain.platform import Platform
from projections.bulk_load import TargetNotEmpty, bulk_load, target_state
from projections.document_writes import apply_update
from projections.mongo_schema import POSITIONS
from projections.mongo_views import MongoViewStore
from projections.redis_views import RedisViewStore
from projections.runner import ProjectionRunner
from stories.backends import connect_redis
from tests.conftest import on_one_redis_and_a_cluster
from tests.read_models import all_docs as _docs
from tests.read_models import drop_read_models as _drop
from tests.read_models import dump_redis, positions

redis_url = on_one_redis_and_a_cluster  # the bulk load's Redis writes run on one Redis and on a cluster


def _project(store, mongo, database, rclient, prefix, batch, until=None) -> None:
    for view in (MongoViewStore(mongo, database), RedisViewStore(rclient, prefix)):
        ProjectionRunner(store, view, batch).catch_up(until)


@pytest.fixture
def generated_log(read_side_settings, clock):
    store = EventStore(read_side_settings.event_store_url)
    asyncio.run(generate(store, Platform.VIGNETTE, users=40, stories=60, engagements=1500, clock=clock))
    yield store
    store.close()


def test_apply_update_does_what_the_server_does():
    doc = {"_id": 1}
    apply_update(doc, {"$setOnInsert": {"a": 1}, "$inc": {"n.x": 2}, "$push": {"l": {"$each": [1, 2]}}}, inserting=True)
    apply_update(
        doc,
        {
            "$setOnInsert": {"a": 9},
            "$inc": {"n.x": 1},
            "$pull": {"l": {"$in": [1]}},
            "$max": {"m": 3},
            "$min": {"k": 2},
        },
    )
    assert doc == {"_id": 1, "a": 1, "n": {"x": 3}, "l": [2], "m": 3, "k": 2}


@pytest.mark.parametrize(
    "max_docs,stream",
    [(10**9, False), (50, False), (10**9, True)],
    ids=["one-flush", "many-flushes", "write-once-streamed"],
)
def test_bulk_rebuild_equals_the_normal_projection(
    generated_log, read_side_settings, mongodb_url, redis_url, max_docs, stream, monkeypatch
):
    if stream:  # collections that are only ever created (viewers of an owner...) go out chunk by chunk
        monkeypatch.setattr("projections.bulk_load.STREAM_AFTER", 20)
        monkeypatch.setattr("projections.bulk_load.STREAM_BATCH", 5)
    store, s = generated_log, read_side_settings
    mongo, rclient = MongoClient(mongodb_url, tz_aware=True), connect_redis(redis_url)
    head = store.head()
    _project(store, mongo, s.mongodb_database, rclient, s.redis_prefix, batch=37)
    bulk_db, bulk_prefix = s.mongodb_database + "_bulk", s.redis_prefix[:-1] + "-bulk:"
    try:
        # small chunks and (many-flushes) a small memory budget: documents written by an earlier
        # flush take merged updates, deletes and re-creations
        stats = bulk_load(store, mongo, bulk_db, rclient, bulk_prefix, head, chunk=300, max_docs=max_docs)
        assert stats.position == head and stats.applied > 500
        if max_docs == 50 or stream:
            assert stats.mongo_flushes > 3
        if max_docs == 50:
            assert stats.mongo_updated > 0
        assert _docs(mongo, bulk_db) == _docs(mongo, s.mongodb_database)
        assert dump_redis(rclient, bulk_prefix) == dump_redis(rclient, s.redis_prefix)
        assert positions(mongo, bulk_db, rclient, bulk_prefix) == (head, head)
        assert target_state(mongo, bulk_db, rclient, bulk_prefix) == "done"
        # the same indexes as the projector's own
        assert sorted(mongo[bulk_db].story_viewers.index_information()) == sorted(
            mongo[s.mongodb_database].story_viewers.index_information()
        )
    finally:
        _drop(mongo, rclient, bulk_db, bulk_prefix)


def test_the_projector_continues_a_bulk_rebuild(generated_log, read_side_settings, mongodb_url, redis_url):
    store, s = generated_log, read_side_settings
    mongo, rclient = MongoClient(mongodb_url, tz_aware=True), connect_redis(redis_url)
    head = store.head()
    _project(store, mongo, s.mongodb_database, rclient, s.redis_prefix, batch=500)
    bulk_db, bulk_prefix = s.mongodb_database + "_half", s.redis_prefix[:-1] + "-half:"
    try:
        bulk_load(store, mongo, bulk_db, rclient, bulk_prefix, head // 2, chunk=200, max_docs=40)
        assert positions(mongo, bulk_db, rclient, bulk_prefix) == (head // 2, head // 2)
        _project(store, mongo, bulk_db, rclient, bulk_prefix, batch=50)  # the normal runners, from there
        assert _docs(mongo, bulk_db) == _docs(mongo, s.mongodb_database)
        assert dump_redis(rclient, bulk_prefix) == dump_redis(rclient, s.redis_prefix)
        assert positions(mongo, bulk_db, rclient, bulk_prefix) == (head, head)
    finally:
        _drop(mongo, rclient, bulk_db, bulk_prefix)


def test_a_half_built_target_is_dropped_and_a_used_one_refused(
    generated_log, read_side_settings, mongodb_url, redis_url
):
    store, s = generated_log, read_side_settings
    mongo, rclient = MongoClient(mongodb_url, tz_aware=True), connect_redis(redis_url)
    head = store.head()
    bulk_db, bulk_prefix = s.mongodb_database + "_crash", s.redis_prefix[:-1] + "-crash:"

    class Crash(Exception):
        pass

    def crash(position: int) -> None:
        if position < head:
            raise Crash

    try:
        with pytest.raises(Crash):
            bulk_load(store, mongo, bulk_db, rclient, bulk_prefix, head, on_progress=crash, chunk=200)
        assert target_state(mongo, bulk_db, rclient, bulk_prefix) == "building"
        assert mongo[bulk_db][POSITIONS].count_documents({}) == 0  # no position: nothing follows it
        bulk_load(store, mongo, bulk_db, rclient, bulk_prefix, head)  # dropped, then loaded again
        _project(store, mongo, s.mongodb_database, rclient, s.redis_prefix, batch=1000)
        assert _docs(mongo, bulk_db) == _docs(mongo, s.mongodb_database)
        assert dump_redis(rclient, bulk_prefix) == dump_redis(rclient, s.redis_prefix)
        with pytest.raises(TargetNotEmpty):  # a finished one is not loaded over
            bulk_load(store, mongo, bulk_db, rclient, bulk_prefix, head)
        with pytest.raises(TargetNotEmpty):  # nor read models of another origin
            bulk_load(store, mongo, s.mongodb_database, rclient, s.redis_prefix, head)
    finally:
        _drop(mongo, rclient, bulk_db, bulk_prefix)


def test_replay_command_in_place_and_into_a_named_target(
    generated_log, read_side_settings, mongodb_url, redis_url, tmp_path
):
    """``stories replay --yes`` rebuilds the configured read models in place (the expirer's keys
    stay); ``--database/--prefix`` refuses a target that holds read models."""
    from typer.testing import CliRunner

    from projections.redis_schema import EXPIRY_TAG, Keys
    from stories.cli import cli

    store, s = generated_log, read_side_settings
    mongo, rclient = MongoClient(mongodb_url, tz_aware=True), connect_redis(redis_url)
    _project(store, mongo, s.mongodb_database, rclient, s.redis_prefix, batch=37)
    expected_mongo, expected_redis = _docs(mongo, s.mongodb_database), dump_redis(rclient, s.redis_prefix)
    expirer = Keys(s.redis_prefix).stamps(EXPIRY_TAG)
    rclient.hset(expirer, "@expiry_schedule.v2", 7)
    env = {
        "STORIES_EVENT_STORE_URL": s.event_store_url,
        "STORIES_DATA_DIR": str(tmp_path),
        "STORIES_MONGODB_URL": mongodb_url,
        "STORIES_MONGODB_DATABASE": s.mongodb_database,
        "STORIES_REDIS_URL": redis_url,
        "STORIES_REDIS_PREFIX": s.redis_prefix,
    }
    result = CliRunner().invoke(cli, ["replay", "--yes"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert _docs(mongo, s.mongodb_database) == expected_mongo
    assert dump_redis(rclient, s.redis_prefix) == expected_redis
    assert rclient.hget(expirer, "@expiry_schedule.v2") == b"7"
    assert positions(mongo, s.mongodb_database, rclient, s.redis_prefix) == (store.head(), store.head())
    refused = CliRunner().invoke(
        cli, ["replay", "--database", s.mongodb_database, "--prefix", s.redis_prefix], env=env, catch_exceptions=False
    )
    assert refused.exit_code == 2, refused.output
