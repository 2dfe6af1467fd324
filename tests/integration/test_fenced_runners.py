"""Two projectors on one partition: a runner that stalls in the middle of a batch (after recording
its intent) is overtaken by another that re-runs the batch and goes on, deleting what the batch
had added; when the stalled one wakes up, its late writes must change nothing (no deleted entry
comes back, no count moves) and its position must be refused. Runners in threads, the stall an
injected hook that blocks on an Event; on the embedded server (SecantusDB) and the machine's Redis.

On MongoDB the late writes are harmless because every write is guarded by its batch's stamp and a
delete leaves a stamped tombstone (the runner that overtook has met or passed every stamp of the
stalled batch, on every document it could touch); the fencing token then stops the stalled
runner at its next write to the position document. Standard MongoDB 6+ semantics (stamped
upserts failing with 11000, ``find_one_and_update``), nothing SecantusDB-specific.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from uuid import uuid4

import pytest
from pymongo import MongoClient

from commands.event_store import EventStore
from commands.synthetic_load import generate
from domain import engagement as en
from domain import social as so
from domain.platform import Platform
from projections import mongo_views
from projections.mongo_schema import GONE
from projections.mongo_views import MongoViewStore
from projections.runner import ProjectionRunner, StalePosition
from tests.integration.test_mongo_write_shapes import Cut, CutDatabase, MemoryLog, checkpoint, dump

WAIT_S = 30


def _ev(cls, at, **fields):
    return cls(originator_id=uuid4(), originator_version=1, occurred_at=at, **fields)


@pytest.fixture
def race_log(read_side_settings, clock) -> tuple[MemoryLog, int, tuple[str, str]]:
    """A generated log, then a close friend added (the end of the first batch), views, and the
    close friend removed: (log, the first batch's size, the pair)."""
    store = EventStore(read_side_settings.event_store_url)
    asyncio.run(generate(store, Platform.VIGNETTE, users=12, stories=5, engagements=40, clock=clock))
    events = [logged.event for logged in store.read()]
    store.close()
    at = max(e.occurred_at for e in events) + timedelta(seconds=1)
    story = next(e for e in events if type(e).__name__ == "StoryCreated")
    pair = ("racer", "friend")
    added = _ev(so.CloseFriendAdded, at, user_id=pair[0], friend_id=pair[1])
    later = [
        _ev(
            en.StoryViewed,
            at + timedelta(seconds=i),
            story_id=story.story_id,
            owner_id=story.user_id,
            viewer_id=f"late{i % 3}",
            view_number=1 + i // 3,
            life_hour=0,
        )
        for i in range(1, 10)
    ]
    removed = _ev(so.CloseFriendRemoved, at + timedelta(seconds=20), user_id=pair[0], friend_id=pair[1])
    return MemoryLog([*events, added, *later, removed]), len(events) + 1, pair


def _stalled_runner(log, mongo, database, first_batch, lease):
    """Runner A: its store blocks before its first close_friends write until ``resume`` is set."""
    stalled, resume, after = threading.Event(), threading.Event(), []

    def before(name: str, sent: int) -> None:
        if resume.is_set():
            after.append(name)
        elif name == "close_friends":
            stalled.set()
            assert resume.wait(WAIT_S)
            after.append(name)

    store = MongoViewStore(mongo, database, lease=lease)
    store.db = CutDatabase(store.db, Cut(before=before))
    return ProjectionRunner(log, store, first_batch), stalled, resume, after


def _run_overtaken(race_log, mongo, database, lease):
    log, first_batch, pair = race_log
    a, stalled, resume, after = _stalled_runner(log, mongo, database, first_batch, lease)
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(a.run_once()))
    thread.start()
    try:
        assert stalled.wait(WAIT_S), "runner A never reached its close_friends write"
        assert checkpoint(mongo, database)["pending_until"] == first_batch  # A's intent is recorded
        b = ProjectionRunner(log, MongoViewStore(mongo, database, lease=lease), 5)  # B: re-runs A's batch, goes on
        b.catch_up()
        assert b.position == log.head()
        assert mongo[database].close_friends.find_one({"_id": ":".join(pair)})[GONE] is True
    finally:
        resume.set()
        thread.join(WAIT_S)
    return a, outcome, after


@pytest.mark.parametrize("lease_s", [0.2, 60])
def test_a_stalled_runner_overtaken_by_another_resurrects_nothing(race_log, mongodb_url, mongodb_database, lease_s):
    """Whether A's lease ran out while it stalled (0.2 s) or not (60 s: B, a process that starts,
    takes the token at once), B re-runs A's batch and goes on; A's late writes land nowhere."""
    log, _, pair = race_log
    mongo = MongoClient(mongodb_url, tz_aware=True)
    clean = f"{mongodb_database}_clean"
    try:
        ProjectionRunner(log, MongoViewStore(mongo, clean), 1000).catch_up()
        a, outcome, after = _run_overtaken(race_log, mongo, mongodb_database, timedelta(seconds=lease_s))
        assert outcome == [0] and a.position is None  # A's position move was refused (StalePosition)
        assert "close_friends" in after  # A did send its stale writes after it woke up
        assert a.view.fence is None  # and knows it lost the token
        db = mongo[mongodb_database]
        assert db.close_friends.count_documents({"_id": ":".join(pair), GONE: {"$ne": True}}) == 0
        assert dump(mongo, mongodb_database) == dump(mongo, clean)
        views = sum(1 for e in log.events if isinstance(e.event, en.StoryViewed))
        assert sum(d.get("view_count", 0) for d in db.stories.find()) == views
        assert checkpoint(mongo, mongodb_database)["position"] == log.head()
        # A, woken, is a standby now: B's lease is live (60 s), or B's expired and A takes over.
        if lease_s == 60:
            with pytest.raises(StalePosition):
                a.view.apply([], log.head(), log.head())
    finally:
        mongo.drop_database(clean)


def test_without_tombstones_the_same_race_would_resurrect_the_entry(
    race_log, mongodb_url, mongodb_database, monkeypatch
):
    """The scenario above bites: with physical deletes, A's late upsert brings the entry back."""
    monkeypatch.setattr(mongo_views, "TOMBSTONED", frozenset())
    log, first_batch, pair = race_log
    mongo = MongoClient(mongodb_url, tz_aware=True)
    a, stalled, resume, _after = _stalled_runner(log, mongo, mongodb_database, first_batch, timedelta(seconds=60))
    thread = threading.Thread(target=a.run_once)
    thread.start()
    try:
        assert stalled.wait(WAIT_S)
        ProjectionRunner(log, MongoViewStore(mongo, mongodb_database), 5).catch_up()
        assert mongo[mongodb_database].close_friends.count_documents({"_id": ":".join(pair)}) == 0
    finally:
        resume.set()
        thread.join(WAIT_S)
    assert mongo[mongodb_database].close_friends.count_documents({"_id": ":".join(pair)}) == 1  # resurrected


def test_two_runners_racing_through_the_log_land_everything_once(race_log, mongodb_url, mongodb_database):
    """Two live runners (separate stores, a short lease) in two threads from the same start."""
    log, _, _ = race_log
    mongo = MongoClient(mongodb_url, tz_aware=True)
    clean = f"{mongodb_database}_clean"
    try:
        ProjectionRunner(log, MongoViewStore(mongo, clean), 1000).catch_up()
        runners = [
            ProjectionRunner(log, MongoViewStore(mongo, mongodb_database, lease=timedelta(seconds=0.05)), size)
            for size in (4, 7)
        ]
        errors: list[BaseException] = []

        def run(runner):
            try:
                while checkpoint(mongo, mongodb_database).get("position", 0) < log.head():
                    runner.run_once()
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=run, args=(r,)) for r in runners]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert dump(mongo, mongodb_database) == dump(mongo, clean)
        assert checkpoint(mongo, mongodb_database)["position"] == log.head()
    finally:
        mongo.drop_database(clean)


# -- Redis ------------------------------------------------------------------------------------


class StallingRedis:
    """The real client, except that the first pipeline that writes (the batch's APPLY scripts,
    after its read round trip) waits for ``resume`` once ``stalled`` is set."""

    def __init__(self, client) -> None:
        self.client, self.stalled, self.resume, self.writes_after = client, threading.Event(), threading.Event(), 0

    def __getattr__(self, name):
        return getattr(self.client, name)

    def pipeline(self, transaction: bool = False):
        owner, pipe = self, self.client.pipeline(transaction=transaction)

        class Stalling:
            def __init__(self):
                self.commands = []

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pipe.reset()

            def execute_command(self, *args):
                self.commands.append(args)

            def execute(self):
                if any(c[0] == "EVALSHA" for c in self.commands):
                    if not owner.stalled.is_set():
                        owner.stalled.set()
                        assert owner.resume.wait(WAIT_S)
                    owner.writes_after += 1
                for c in self.commands:
                    pipe.execute_command(*c)
                return pipe.execute()

        return Stalling()


@pytest.fixture
def story_log(read_side_settings, clock) -> tuple[MemoryLog, int, str]:
    """A generated log, views of one story (the end of the first batch), then the story deleted."""
    from domain import stories as sto

    store = EventStore(read_side_settings.event_store_url)
    asyncio.run(generate(store, Platform.VIGNETTE, users=12, stories=5, engagements=40, clock=clock))
    events = [logged.event for logged in store.read()]
    store.close()
    at = max(e.occurred_at for e in events) + timedelta(seconds=1)
    deleted = {e.story_id for e in events if isinstance(e, (sto.StoryDeleted, sto.StoryExpired))}
    story = next(e for e in events if type(e).__name__ == "StoryCreated" and e.story_id not in deleted)
    views = [
        _ev(
            en.StoryViewed,
            at + timedelta(seconds=i),
            story_id=story.story_id,
            owner_id=story.user_id,
            viewer_id=f"late{i}",
            view_number=1,
            life_hour=0,
        )
        for i in range(3)
    ]
    gone = _ev(sto.StoryDeleted, at + timedelta(seconds=10), story_id=story.story_id, user_id=story.user_id)
    return MemoryLog(events + views + [gone]), len(events) + len(views), story.story_id


def test_a_stalled_redis_runner_overtaken_by_another_resurrects_nothing(story_log, redis_url, redis_prefix):
    """Redis: runner A reads its batch (the story live), stalls before its writes; B applies the
    batch and the story's deletion (its keys, stamps included, go); A wakes up."""
    from projections.redis_views import RedisViewStore
    from stories.backends import connect_redis
    from tests.read_models import dump_redis

    log, first_batch, _story_id = story_log
    client = connect_redis(redis_url)
    ProjectionRunner(log, RedisViewStore(client, redis_prefix + "clean:"), 1000).catch_up()
    prefix = redis_prefix + "race:"
    stalling = StallingRedis(client)
    a = ProjectionRunner(log, RedisViewStore(stalling, prefix), first_batch)
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(a.run_once()))
    thread.start()
    try:
        assert stalling.stalled.wait(WAIT_S)
        ProjectionRunner(log, RedisViewStore(client, prefix), 5).catch_up()
    finally:
        stalling.resume.set()
        thread.join(WAIT_S)
    assert outcome == [0] and a.position is None  # A's position move was refused
    assert dump_redis(client, prefix) == dump_redis(client, redis_prefix + "clean:")
