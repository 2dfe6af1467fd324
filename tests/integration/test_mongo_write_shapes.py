"""The MongoDB view store's write shapes (inserts for documents a batch creates, stamped updates
for the rest, tombstones for deletes) and exactly-once with a crash injected between every pair
of its writes, on the embedded server (SecantusDB, MongoDB wire protocol).

A "write" here is one document write as the server applies it (one document of an
``insert_many``, one operation of a ``bulk_write``) or one write to the position document. The
crash lands exactly the writes before it (a prefix, in the order the store sends them) and
nothing after, as a process killed there would leave them; a new store (a restarted process) then
catches up with other batch bounds, and the read models must equal a clean projection.

What this relies on is MongoDB 6+ behaviour, not SecantusDB's alone: an unordered
``insert_many`` reports every duplicate ``_id`` (11000) with its index and inserts the rest; an
upsert whose filter (``_id`` and a ``_v`` range) misses an existing document fails with 11000
rather than matching it (the server retries such an upsert only when the filter is equality on
the unique index's fields alone); updates are atomic per document. A server that landed any
subset of an unordered insert_many before dying (not only a prefix) is the same case for the
re-run: each document that landed is a duplicate, each one that did not is inserted.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from uuid import uuid4

import pytest
from pymongo import MongoClient
from pymongo.errors import BulkWriteError

from commands.event_store import EventStore
from commands.synthetic_load import generate
from domain import engagement as en
from domain import social as so
from domain.platform import Platform
from projections.document_writes import DocumentWrites
from projections.mongo_schema import GONE
from projections.mongo_views import HANDLERS, POSITIONS, MongoViewStore, _write_skipping_landed
from projections.runner import ProjectionRunner
from tests.read_models import COLLECTIONS, MemoryLog

ALL = tuple(dict.fromkeys((*COLLECTIONS, "muted")))


class Crash(Exception):
    """The process died here."""


class Cut:
    """Counts document writes; lets ``allow`` of them land, then raises Crash. ``before(name, n)``
    runs before each call that writes (its collection, the writes sent so far)."""

    def __init__(self, allow: int | None = None, before=None) -> None:
        self.allow, self.sent, self.before, self.kinds = allow, 0, before, []

    def take(self, name: str, n: int, kinds: list[str]) -> int:
        """How many of the call's ``n`` writes land; Crash (after landing them) when fewer."""
        if self.before is not None:
            self.before(name, self.sent)
        room = n if self.allow is None else max(0, min(n, self.allow - self.sent))
        self.sent += room
        self.kinds += kinds[:room]
        return room


class CutCollection:
    def __init__(self, collection, cut: Cut) -> None:
        self.collection, self.cut, self.name = collection, cut, collection.name

    def __getattr__(self, name):
        return getattr(self.collection, name)

    def _position_kind(self, filter_: dict, update: dict | None) -> str:
        # "pending": a crash on this write leaves a batch's intent recorded (mid-batch).
        return "pending" if isinstance(filter_.get("pending_until"), int) else "position"

    def update_one(self, filter_, update, *args, **kwargs):
        if self.cut.take(self.name, 1, [self._position_kind(filter_, update)]) < 1:
            raise Crash
        return self.collection.update_one(filter_, update, *args, **kwargs)

    def find_one_and_update(self, filter_, update, *args, **kwargs):
        if self.cut.take(self.name, 1, ["position"]) < 1:
            raise Crash
        return self.collection.find_one_and_update(filter_, update, *args, **kwargs)

    def insert_many(self, documents, ordered=True, **kwargs):
        documents = list(documents)
        room = self.cut.take(self.name, len(documents), ["document"] * len(documents))
        if room < len(documents):
            if room:
                with contextlib.suppress(BulkWriteError):  # duplicates: as they would have been
                    self.collection.insert_many(documents[:room], ordered=ordered, **kwargs)
            raise Crash
        return self.collection.insert_many(documents, ordered=ordered, **kwargs)

    def bulk_write(self, requests, ordered=True, **kwargs):
        room = self.cut.take(self.name, len(requests), ["document"] * len(requests))
        if room < len(requests):
            _write_skipping_landed(self.collection, requests[:room])
            raise Crash
        return self.collection.bulk_write(requests, ordered=ordered, **kwargs)


class CutDatabase:
    def __init__(self, db, cut: Cut) -> None:
        self.db, self.cut = db, cut

    def __getitem__(self, name):
        return CutCollection(self.db[name], self.cut)

    def __getattr__(self, name):
        return getattr(self.db, name)


def cut_store(mongo: MongoClient, database: str, cut: Cut, **kwargs) -> MongoViewStore:
    store = MongoViewStore(mongo, database, **kwargs)
    store.db = CutDatabase(store.db, cut)
    return store


def _ev(cls, at, **fields):
    return cls(originator_id=uuid4(), originator_version=1, occurred_at=at, **fields)


def social_and_viewer_edges(events: list) -> list:
    """Events a generated log lacks: close friends removed and added again, mutes and unmutes, a
    navigation from someone who never viewed, a first view and its navigation and a second view
    (each in one batch or across batches, depending on the bounds)."""
    at = max(e.occurred_at for e in events) + timedelta(seconds=1)
    pairs = [(e.user_id, e.friend_id) for e in events if isinstance(e, so.CloseFriendAdded)]
    assert len(pairs) >= 3, "the generated log has too few close friends"
    (u1, f1), (u2, f2), (u3, f3) = pairs[:3]
    story = next(e for e in events if type(e).__name__ == "StoryCreated")
    viewed = next(e for e in events if isinstance(e, en.StoryViewed) and e.story_id == story.story_id)
    sid, owner = story.story_id, story.user_id

    def t(n: int):
        return at + timedelta(seconds=n)

    return [
        _ev(so.CloseFriendRemoved, t(0), user_id=u1, friend_id=f1),  # stays removed
        _ev(so.CloseFriendRemoved, t(1), user_id=u2, friend_id=f2),
        _ev(so.CloseFriendAdded, t(2), user_id=u2, friend_id=f2),  # back again
        _ev(so.UserMuted, t(3), user_id=u3, muted_id=f3),
        _ev(so.UserMuted, t(4), user_id=u3, muted_id=u1),
        _ev(so.UserUnmuted, t(5), user_id=u3, muted_id=f3),  # unmuted
        _ev(en.StoryNavigated, t(6), story_id=sid, owner_id=owner, viewer_id="never-viewed", action="exit"),
        # "late": a navigation before its first view (counts nowhere), the view, one after it, a second view
        _ev(en.StoryNavigated, t(7), story_id=sid, owner_id=owner, viewer_id="late", action="tap_back"),
        _ev(en.StoryViewed, t(8), story_id=sid, owner_id=owner, viewer_id="late", view_number=1, life_hour=0),
        _ev(en.StoryNavigated, t(9), story_id=sid, owner_id=owner, viewer_id="late", action="tap_forward"),
        _ev(en.StoryViewed, t(10), story_id=sid, owner_id=owner, viewer_id="late", view_number=2, life_hour=0),
        _ev(en.StoryNavigated, t(11), story_id=sid, owner_id=owner, viewer_id=viewed.viewer_id, action="swipe_forward"),
        _ev(so.CloseFriendRemoved, t(12), user_id=u3, friend_id=f3),
        _ev(so.CloseFriendAdded, t(13), user_id=u1, friend_id=f1),
        _ev(so.CloseFriendRemoved, t(14), user_id=u1, friend_id=f1),  # removed again: a tombstone twice
        _ev(so.UserMuted, t(15), user_id=u3, muted_id=f3),  # muted again
    ]


@pytest.fixture
def memory_log(read_side_settings, clock) -> MemoryLog:
    store = EventStore(read_side_settings.event_store_url)
    asyncio.run(generate(store, Platform.VIGNETTE, users=12, stories=5, engagements=45, clock=clock))
    events = [logged.event for logged in store.read()]
    store.close()
    return MemoryLog(events + social_and_viewer_edges(events))


def dump(mongo: MongoClient, database: str) -> dict[str, list[dict]]:
    db = mongo[database]
    return {name: sorted(db[name].find({}, {"_v": 0}), key=lambda d: str(d["_id"])) for name in ALL}


def project(log, mongo: MongoClient, database: str, batch: int, indexes: bool = True) -> None:
    ProjectionRunner(log, MongoViewStore(mongo, database, indexes=indexes), batch).catch_up()


def checkpoint(mongo: MongoClient, database: str) -> dict:
    return mongo[database][POSITIONS].find_one({"_id": "mongo_views"}) or {}


def test_documents_a_batch_creates_are_inserted_and_the_rest_merged(memory_log, mongodb_url, mongodb_database):
    mongo = MongoClient(mongodb_url, tz_aware=True)
    head = memory_log.head()
    calls: list[tuple[str, str, int]] = []

    class Spy(Cut):
        def take(self, name, n, kinds):
            calls.append((name, kinds[0], n))
            return super().take(name, n, kinds)

    store = MongoViewStore(mongo, mongodb_database)
    store.db = CutDatabase(store.db, Spy())
    ProjectionRunner(memory_log, store, head).catch_up()
    db = mongo[mongodb_database]
    # One batch: per collection at most one insert_many and one bulk_write, plus the position's.
    per_collection: dict[str, int] = {}
    for name, _, _ in calls:
        per_collection[name] = per_collection.get(name, 0) + 1
    assert all(n <= 2 for name, n in per_collection.items() if name != POSITIONS), per_collection
    writes = sum(n for name, _, n in calls if name != POSITIONS)
    documents = sum(db[name].count_documents({}) for name in ALL)
    assert writes <= documents + 20, "a batch writes each document about once"  # a few stay apart (tombstone, re-add)
    # The navigation from someone who never viewed counts nowhere; the late viewer's entry holds
    # the whole batch: two views, the navigation after the first view.
    sid = next(e.event.story_id for e in memory_log.events if isinstance(e.event, en.StoryNavigated))
    assert db.story_viewers.count_documents({"_id": f"{sid}:never-viewed"}) == 0
    late = db.story_viewers.find_one({"_id": f"{sid}:late"})
    assert late["view_count"] == 2 and late["navigation"] == "tap_forward"
    assert late["first_viewed_at"] < late["last_viewed_at"]
    # Removed entries are tombstones, not documents readers see.
    gone = list(db.close_friends.find({GONE: True}))
    assert len(gone) == 2 and all(set(d) == {"_id", "user_id", "friend_id", GONE, "_v"} for d in gone)
    assert db.muted.count_documents({GONE: True}) == 0 and db.muted.count_documents({}) == 2
    assert checkpoint(mongo, mongodb_database)["position"] == head


def project_as_upserts(log, mongo: MongoClient, database: str, batch: int) -> None:
    """The former write shape, as the reference: every write a stamped upsert or update in order
    (``DocumentWrites.operations``), deletes physical."""
    after = 0
    while after < log.head():
        events, reached = log.read_batch(after, batch)
        writes = DocumentWrites()
        for logged in events:
            HANDLERS[type(logged.event)](writes, logged.event, logged)
        for collection, ops in writes.operations(reached).items():
            _write_skipping_landed(mongo[database][collection], ops)
        after = reached


@pytest.mark.parametrize("batch", [1000, 9])
def test_inserts_and_tombstones_leave_what_stamped_upserts_and_deletes_left(
    memory_log, mongodb_url, mongodb_database, batch
):
    """Each inserted document is what the upserts it replaces would have made of nothing (merged
    views, a navigation after the first view, a re-added close friend), and apart from the
    tombstones the read models are those of the former write shape."""
    mongo = MongoClient(mongodb_url, tz_aware=True)
    reference = f"{mongodb_database}_upserts"
    try:
        project(memory_log, mongo, mongodb_database, batch)
        project_as_upserts(memory_log, mongo, reference, batch)
        live = {name: [d for d in docs if not d.get(GONE)] for name, docs in dump(mongo, mongodb_database).items()}
        assert live == dump(mongo, reference)
    finally:
        mongo.drop_database(reference)


@pytest.mark.parametrize("batch", [1000, 9])
def test_a_crash_between_any_two_writes_then_a_rerun_lands_everything_exactly_once(
    memory_log, mongodb_url, mongodb_database, batch
):
    """The whole log as one batch (every write kind in one batch), and in batches of 9 (updates of
    documents earlier batches created, tombstones of earlier entries): for every N, a crash after
    the N-th write, then a restarted projector with other batch bounds."""
    mongo = MongoClient(mongodb_url, tz_aware=True)
    head = memory_log.head()
    clean = f"{mongodb_database}_clean"
    try:
        project(memory_log, mongo, clean, batch=1000)
        expected = dump(mongo, clean)
        counter = Cut()
        ProjectionRunner(memory_log, cut_store(mongo, f"{mongodb_database}_count", counter), batch).catch_up()
        assert dump(mongo, f"{mongodb_database}_count") == expected
        writes, kinds = counter.sent, counter.kinds
        assert writes > 50 and kinds.count("document") > 40
        mid_batch = 0
        database = f"{mongodb_database}_cut"
        for n in range(writes):
            try:
                with pytest.raises(Crash):
                    # (secondary indexes change no result: left out to keep the loop fast)
                    ProjectionRunner(memory_log, cut_store(mongo, database, Cut(n), indexes=False), batch).catch_up()
                pending = checkpoint(mongo, database).get("pending_until")
                assert (pending is not None) == (kinds[n] in ("document", "pending")), f"write {n}: {kinds[n]}"
                mid_batch += pending is not None
                project(memory_log, mongo, database, batch=7, indexes=False)  # the restarted projector, other bounds
                assert dump(mongo, database) == expected, f"crash after {n} of {writes} writes ({kinds[n]} next)"
                assert checkpoint(mongo, database)["position"] == head
            finally:
                for name in (*ALL, POSITIONS):
                    mongo[database][name].delete_many({})
        print(f"batch {batch}: a crash after each of {writes} writes")
        assert mid_batch == kinds.count("document") + kinds.count("pending") > 40
    finally:
        mongo.drop_database(clean)
        mongo.drop_database(f"{mongodb_database}_count")
        mongo.drop_database(f"{mongodb_database}_cut")
