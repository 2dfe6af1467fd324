"""Erasure through the whole read side (issue 15): a generated workload projected live, people
erased mid-way through the log, then the live read models (named, then purged) against a
rebuild of the same log (never named): the incremental runners and the bulk load. Nothing of
the erased may remain anywhere, and the rebuilds must equal the live read models exactly."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from pymongo import MongoClient

from commands import models
from commands import use_cases as uc
from commands.application import StoriesApplication
from commands.erasure import erase_account
from commands.event_store import EventStore
from commands.group_commit import GroupCommitter
from commands.synthetic_load import generate
from domain.platform import Platform
from projections.bulk_load import bulk_load
from projections.mongo_views import MongoViewStore
from projections.redis_views import RedisViewStore
from projections.runner import ProjectionRunner
from stories.backends import connect_redis
from tests.conftest import on_one_redis_and_a_cluster
from tests.read_models import all_docs as _docs
from tests.read_models import drop_read_models as _drop
from tests.read_models import dump_redis

redis_url = on_one_redis_and_a_cluster  # the purge runs per hash tag: on one Redis and on a cluster

KEY = b"pseudonym key of the tests"
ERASED = ("user3", "user7")


def _project(store, mongo, database, rclient, prefix, batch) -> None:
    for view in (MongoViewStore(mongo, database), RedisViewStore(rclient, prefix)):
        ProjectionRunner(store, view, batch).catch_up()


def _reshare(store: EventStore, clock, author: str, resharer: str, viewer: str) -> None:
    """``resharer`` reshares a public story of ``author`` (its content is ``author``'s), and
    ``viewer`` views both: the reshare must lose that content when ``author`` is erased."""
    committer = GroupCommitter(store)
    app = StoriesApplication(store, committer, Platform.VIGNETTE, clock=clock)

    async def run() -> None:
        body = models.CreateStory.model_validate(
            {"story_type": "text", "text_content": f"words of {author}", "privacy": "public"}
        )
        (created, _) = await app.execute(uc.CreateStory(author, body))
        original = str(created.story_id)
        (shared, _) = await app.execute(uc.ShareStory(resharer, original, None))
        for story in (original, str(shared.story_id)):
            await app.execute(uc.ViewStory(viewer, story))

    try:
        asyncio.run(run())
    finally:
        committer.close()


def _names(dump: object, user: str) -> bool:
    """Does any id, key, member or value of the dump name ``user`` (a whole id, not a prefix)?"""
    text = repr(dump)
    return any(f"{quote}{user}{end}" in text for quote in ("'", '"', ":", "b'") for end in ("'", '"', ":", "}"))


@pytest.fixture
def erased_log(read_side_settings, mongodb_url, redis_url, clock):
    """A log with two people erased part-way, projected live in small batches throughout."""
    s = read_side_settings
    store = EventStore(s.event_store_url)
    mongo, rclient = MongoClient(mongodb_url, tz_aware=True), connect_redis(redis_url)
    asyncio.run(generate(store, Platform.VIGNETTE, users=12, stories=30, engagements=800, clock=clock))
    _reshare(store, clock, ERASED[0], "user1", "user2")
    _project(store, mongo, s.mongodb_database, rclient, s.redis_prefix, batch=23)
    assert _names(_docs(mongo, s.mongodb_database), ERASED[0])  # they were there to forget
    erase_account(store, KEY, ERASED[0], clock())
    # more of everyone's (the erased person's too: a write racing the erasure) after it
    asyncio.run(generate(store, Platform.VIGNETTE, users=12, stories=10, engagements=300, clock=clock, seed=2))
    _project(store, mongo, s.mongodb_database, rclient, s.redis_prefix, batch=17)
    erase_account(store, KEY, ERASED[1], clock() + timedelta(seconds=1))
    erase_account(store, KEY, ERASED[1], clock() + timedelta(seconds=2))  # idempotent: nothing new
    _project(store, mongo, s.mongodb_database, rclient, s.redis_prefix, batch=29)
    yield store, mongo, rclient
    store.close()


def test_live_read_models_forget_the_erased(erased_log, read_side_settings):
    store, mongo, rclient = erased_log
    s = read_side_settings
    docs, keys = _docs(mongo, s.mongodb_database), dump_redis(rclient, s.redis_prefix)
    for user in ERASED:
        assert not _names(docs, user), f"MongoDB still names {user}"
        assert not _names(keys, user), f"Redis still names {user}"
        assert f"words of {user}" not in repr(docs) + repr(keys)  # the reshare lost its copy too
    assert _names(docs, "user1")  # the others are still there
    assert sum(1 for e in store.read() if e.event.event_type == "AccountErased") == 2


def test_a_replay_after_erasure_equals_the_live_read_models(erased_log, read_side_settings):
    store, mongo, rclient = erased_log
    s = read_side_settings
    rebuilt_db, rebuilt_prefix = s.mongodb_database + "_erased_rebuilt", s.redis_prefix[:-1] + "-erased-rebuilt:"
    bulk_db, bulk_prefix = s.mongodb_database + "_erased_bulk", s.redis_prefix[:-1] + "-erased-bulk:"
    try:
        _project(store, mongo, rebuilt_db, rclient, rebuilt_prefix, batch=5000)
        live_docs, live_keys = _docs(mongo, s.mongodb_database), dump_redis(rclient, s.redis_prefix)
        assert _docs(mongo, rebuilt_db) == live_docs
        assert dump_redis(rclient, rebuilt_prefix) == live_keys
        bulk_load(store, mongo, bulk_db, rclient, bulk_prefix, store.head(), chunk=200)
        assert _docs(mongo, bulk_db) == live_docs
        assert dump_redis(rclient, bulk_prefix) == live_keys
    finally:
        _drop(mongo, rclient, rebuilt_db, rebuilt_prefix)
        _drop(mongo, rclient, bulk_db, bulk_prefix)


def test_export_names_the_erased_nowhere(erased_log):
    store, _, _ = erased_log
    text = "\n".join(repr(logged.envelope("vignette")) for logged in store.read())
    for user in ERASED:
        assert f"'{user}'" not in text
    assert "'erased': True" in text and "'user1'" in text
