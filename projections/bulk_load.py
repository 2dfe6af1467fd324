"""A rebuild that is a bulk load: the log folded in memory, final documents written in bulk.

``stories replay`` (and ``replay --into``) rebuild into a *fresh* target. There nothing needs to
be exactly-once (a crashed bulk load is started again from scratch: the target is marked
``building`` until it is done, and the command drops a half-built target before loading it again),
so the normal projector's guarded upserts, stamps and scripts are not needed:

* MongoDB: the events go through the projector's own handlers (``mongo_views.HANDLERS``) into
  ``MongoFold``, which applies their updates to plain dicts in memory (``apply_update``). A
  document first seen in this load is inserted whole (``insert_many``, unordered) by a writer
  thread, so that the database works while the fold goes on: documents of collections that are
  only ever created (so far in this load: an owner's viewers, question answers) as they come;
  the rest when the fold ends, or, past ``max_docs`` held, the least recently touched half. A
  write to a document already inserted is merged (``DocumentWrites``) and sent at the end: one
  ``update_one`` per document (``delete_one`` first where one was deleted and created again).
  Memory: ``max_docs`` documents plus the ids already written (~100 bytes each); a
  1,000,000-event log's documents (1.4 million) fit under the default 1.5 million, so there the
  only documents written before the end are the created-once ones. Indexes are built after the
  load (on SecantusDB, inserting into indexed collections is ~7x slower than building after).
* Redis: the projector's own handlers (``redis_views.apply_event``: ``HANDLERS``, then the
  erasure indexes) record their calls on a
  ``BatchWrites`` per chunk; the live-story entries they consult are kept in memory for the
  whole load (instead of being read back from Redis per batch), and the calls go out as plain
  pipelines (no stamps, no scripts), with the seen-set reclaim after each chunk as the projector
  does it after each batch.
* Positions: at the end each store gets its normal position (every partition's) set to the
  rebuilt position, so the normal projector continues from there, and every document carries a
  ``_v`` stamp below any stamp the projector will write next.

What it relies on from the handlers (kept by ``projections.mongo_views`` / ``redis_views``): a
MongoDB handler calls ``w.update(collection, key, update, upsert=True, shard=None)``,
``w.delete(collection, key, shard=None)``, and (an erasure's purge) ``w.delete_many(collection,
filter)`` / ``w.update_many(collection, filter, update)`` with filters of plain equalities, only,
with the update operators ``apply_update`` knows; a Redis handler records calls on a ``BatchWrites`` and reads ``w.live`` / ``w.members``.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo import DeleteMany, DeleteOne, MongoClient, UpdateMany, UpdateOne

from commands.event_store import EventStore, LoggedEvent
from projections.document_writes import GONE, STAMP_SPAN, DocumentWrites, apply_update, matches
from projections.mongo_views import HANDLERS as MONGO_HANDLERS
from projections.mongo_views import POSITIONS, TOMBSTONED, ensure_indexes
from projections.redis_schema import EXPIRY_TAG, READ_MODEL_KEYS, SEEN_DUE, VIEW_NAME, Keys, LiveEntry
from projections.redis_views import (
    DEFAULT_GRACE,
    RECLAIM_SEEN,
    UNDUE,
    BatchWrites,
    apply_event,
    redis_command,
)
from projections.runner import Partition
from stories.backends import run_pipeline

READ_CHUNK = 20_000  # log rows read (and folded, and sent to Redis) at a time
MAX_DOCS = 1_500_000  # documents held in memory; past it the least recently touched half is written
STREAM_AFTER, STREAM_TOUCH_RATIO, STREAM_BATCH = 10_000, 0.0, 5000  # see MongoFold.write_once
INSERT_BATCH = 5_000  # documents per insert_many / operations per bulk_write
# Collections whose deleted entries the projector keeps as tombstones ({_id, shard key, _gone}).
STATE = "bulk_load"  # the marker: collection (MongoDB), ``P:position:bulk_load`` (Redis): building / done


class TargetNotEmpty(Exception):
    """The target of a bulk load holds read models already (and is not a half-built one)."""


# -- MongoDB -------------------------------------------------------------------------------


class MongoFold:
    """What the MongoDB handlers write to during a bulk load (the ``DocumentWrites`` calls they
    make: ``update`` and ``delete``), folded into final documents.

    Documents are held in memory in least-recently-touched order. When more than ``max_docs``
    are held, the least recently touched half is cut into a write job (``cut``): inserted whole,
    while the fold goes on (a writer thread runs the jobs in order, so the database's work
    overlaps the fold's). A later write to a document already cut is kept, merged
    (``DocumentWrites``), for the next job: one update per document and job, before its inserts.
    Hot documents (a story's counters) are touched all the time and so stay in memory to the end.
    """

    def __init__(self, db, max_docs: int = MAX_DOCS) -> None:
        self.db = db
        self.max_docs = max_docs
        self.docs: dict[str, dict[Any, dict]] = {}  # not cut yet, least recently touched first
        self.written: dict[str, set] = {}  # ids cut into a job (and not deleted since)
        self.gone_written: dict[str, set] = {}  # of those, the tombstones (TOMBSTONED collections)
        self.later = DocumentWrites()  # writes to documents already cut, since the last cut
        # Writes of ``later`` fixed in order before a write by filter (which follows them), as
        # (collection, key or filter, update or None, by filter?): sent before ``later``'s own.
        self.later_fixed: list[tuple[str, Any, dict | None, bool]] = []
        self.held = 0
        self.flushes = 0
        self.inserted = self.updated = 0
        self.created: dict[str, int] = {}  # documents created, per collection
        self.touched: dict[str, int] = {}  # writes to documents that existed already (that can change them)
        self.later_deletes = False

    def fold(self, events: list[LoggedEvent]) -> None:
        for logged in events:
            handler = MONGO_HANDLERS.get(type(logged.event))
            if handler is not None:
                handler(self, logged.event, logged)

    # the DocumentWrites surface the handlers use
    def update(
        self,
        collection: str,
        key: Any,
        update: dict[str, dict[str, Any]],
        upsert: bool = True,
        shard: dict[str, Any] | None = None,
        insert: str | None = None,
    ) -> None:
        # ``insert`` (the projector's hint that this write creates the document) changes nothing
        # here: a document first seen in the load is inserted whole whatever created it.
        docs = self.docs.get(collection)
        if docs is None:
            docs = self.docs[collection] = {}
        doc = docs.pop(key, None)
        # (a lone $setOnInsert never changes an existing document)
        if (doc is not None or key in self.written.get(collection, ())) and (
            len(update) != 1 or "$setOnInsert" not in update
        ):
            self.touched[collection] = self.touched.get(collection, 0) + 1
        if doc is not None:
            docs[key] = doc  # now the most recently touched
            if doc.get(GONE):  # a tombstone: an upsert brings the document back, an update does not
                if not upsert:
                    return
                del doc[GONE]
            apply_update(doc, update)
        elif key in self.gone_written.get(collection, ()):
            # A tombstone written out: an update leaves it alone, an upsert brings the document
            # back (as the projector's does: on the tombstone's shard key values, nothing
            # inserted). Sent as the tombstone's delete, then the document's insert.
            if upsert:
                self.gone_written[collection].discard(key)
                self.written[collection].discard(key)
                self.later.delete(collection, key)
                self.later_deletes = True
                doc = {"_id": key, **(shard or {})}
                apply_update(doc, update)
                docs[key] = doc
                self.held += 1
        elif key in self.written.get(collection, ()):
            if set(update) != {"$setOnInsert"}:  # (that one never applies to an existing document)
                self.later.update(collection, key, update, upsert=False)
        elif upsert:
            # An upsert creates the document from its filter's equalities (_id and shard key) first.
            doc = {"_id": key, **(shard or {})}
            apply_update(doc, update, inserting=True)
            docs[key] = doc
            self.held += 1
            self.created[collection] = self.created.get(collection, 0) + 1
        # else: an update of a document that does not exist changes nothing (upsert=False)

    def delete(self, collection: str, key: Any, shard: dict[str, Any] | None = None) -> None:
        self.touched[collection] = self.touched.get(collection, 0) + 1
        docs = self.docs.setdefault(collection, {})
        if key in docs:
            del docs[key]
            self.held -= 1
        elif key in self.written.get(collection, ()):
            self.written[collection].discard(key)
            self.gone_written.get(collection, set()).discard(key)
            self.later.delete(collection, key)
            self.later_deletes = True
        if collection in TOMBSTONED:  # what the projector leaves of a deleted entry there
            docs[key] = {"_id": key, **(shard or {}), GONE: True}
            self.held += 1

    def delete_many(self, collection: str, filter: dict[str, Any]) -> None:
        """An erasure's purge: the matching documents held go (tombstones too: a delete by filter
        leaves none, as in the projector), and those cut already are deleted by the next job."""
        self._by_filter(collection, filter, None)

    def update_many(self, collection: str, filter: dict[str, Any], update: dict[str, dict[str, Any]]) -> None:
        self._by_filter(collection, filter, update)

    def _by_filter(self, collection: str, filter: dict[str, Any], update: dict | None) -> None:
        self.touched[collection] = self.touched.get(collection, 0) + 1
        docs = self.docs.setdefault(collection, {})
        for key in [key for key, doc in docs.items() if matches(doc, filter)]:
            if update is None:
                del docs[key]
                self.held -= 1
            else:
                apply_update(docs[key], update)
        if self.written.get(collection):
            # Documents cut already: the job after this write runs it, in order after the
            # writes to them recorded before it (those are fixed now, so that later ones cannot
            # merge into them across it). Where it deletes, which ids it removes is not known
            # here: they stay in ``written``, so a later write to one is an update of nothing,
            # where the projector would upsert it (only a write naming the erased person, which
            # no event read after the erasure does).
            for name in set(self.docs) | set(self.written):
                self.later_fixed += [(name, key, upd, False) for key, upd in self.later.updates(name)]
            self.later = DocumentWrites()
            self.later_fixed.append((collection, filter, update, True))
            self.later_deletes = True  # sent with the next job, before any document it inserts

    def full(self) -> bool:
        return self.held > self.max_docs

    def write_once(self) -> set[str]:
        """Collections whose documents, once created, have (almost) never been written to again
        in this load so far (a viewer of an owner, a question answer): written out as they come,
        since holding them saves nothing."""
        return {
            c
            for c, n in self.created.items()
            if n >= STREAM_AFTER
            and self.touched.get(c, 0) <= n * STREAM_TOUCH_RATIO
            and len(self.docs.get(c, ())) >= STREAM_BATCH
        }

    def cut(
        self,
        position: int,
        everything: bool = False,
        collections: set[str] | None = None,
    ) -> dict[str, tuple[list, list]]:
        """A write job: per collection, the merged writes to documents cut before (in order), then
        the documents to insert: all those of ``collections`` if given, else the least recently
        touched half of those held, or ``everything``."""
        stamp = position * STAMP_SPAN  # below any stamp the projector writes after ``position``
        job: dict[str, tuple[list, list]] = {}
        # Writes to documents written before wait, merged, for the last job (one update per
        # document, however many jobs it spans), unless a delete is among them: a document deleted
        # and created again must be deleted before it is inserted again.
        defer = not everything and not self.later_deletes
        for collection in () if defer else set(self.docs) | set(self.written):
            ops: list[Any] = []
            fixed = [
                (key, update, by_filter) for name, key, update, by_filter in self.later_fixed if name == collection
            ]
            for key, update, by_filter in fixed + [
                (key, update, False) for key, update in self.later.updates(collection)
            ]:
                if by_filter:  # unstamped, as the projector sends it
                    ops.append(DeleteMany(key) if update is None else UpdateMany(key, update))
                elif update is None:
                    ops.append(DeleteOne({"_id": key}))
                else:
                    update = {op: dict(values) for op, values in update.items() if op != "$setOnInsert"}
                    update.setdefault("$set", {})["_v"] = stamp
                    ops.append(UpdateOne({"_id": key}, update))
            job[collection] = (ops, [])
        if not defer:
            self.later = DocumentWrites()
            self.later_fixed = []
            self.later_deletes = False
        keep = 0 if everything else self.max_docs // 2
        evict = self.held - keep
        # the oldest first, spread over the collections in proportion to what each holds
        for collection, docs in self.docs.items():
            if collections is not None:
                share = len(docs) if collection in collections else 0
            else:
                share = len(docs) if everything else min(len(docs), -(-evict * len(docs) // max(self.held, 1)))
            written = self.written.setdefault(collection, set())
            inserts = job.setdefault(collection, ([], []))[1]
            for key in list(docs)[:share] if share < len(docs) else list(docs):
                doc = docs.pop(key)
                doc["_v"] = stamp
                inserts.append(doc)
                written.add(key)
                if doc.get(GONE):
                    self.gone_written.setdefault(collection, set()).add(key)
        self.held = sum(len(docs) for docs in self.docs.values())
        self.flushes += 1
        return job

    def write(self, job: dict[str, tuple[list, list]]) -> None:
        """Run a job (the writer thread: jobs in the order they were cut)."""
        for collection, (ops, inserts) in job.items():
            for i in range(0, len(ops), INSERT_BATCH):  # in order: a document's writes follow each other
                self.db[collection].bulk_write(ops[i : i + INSERT_BATCH], ordered=True)
            self.updated += len(ops)
            for i in range(0, len(inserts), INSERT_BATCH):
                self.db[collection].insert_many(inserts[i : i + INSERT_BATCH], ordered=False)
            self.inserted += len(inserts)

    def flush(self, position: int) -> None:
        """Everything held and pending, now (one job, in this thread)."""
        self.write(self.cut(position, everything=True))


class _Commands(BatchWrites):
    """``BatchWrites`` that records the final Redis commands directly (a bulk load needs neither
    the per-call positions nor the per-tag grouping the stamped scripts do): the hot calls are
    written out here, any other call goes through ``redis_command`` as the view store does it."""

    def __init__(self, grace_ms: int, live: dict) -> None:
        super().__init__(grace_ms, live, {})
        self.out: list[tuple] = []

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        call = (name, args, kwargs) if kwargs else (name, args)
        self.out.extend((command, key, *rest) for command, key, rest in redis_command(call))

    def hincrby(self, key: str, name: str, by: int) -> None:
        self.out.append(("HINCRBY", key, name, by))

    def hset(self, key: str, name: str, value: Any) -> None:
        self.out.append(("HSET", key, name, repr(value) if isinstance(value, float) else value))

    def sadd(self, key: str, *members: Any) -> None:
        self.out.append(("SADD", key, *members))

    def zremrangebyscore(self, key: str, low: Any, high: Any) -> None:
        self.out.append(("ZREMRANGEBYSCORE", key, low, high))

    def zadd(self, key: str, mapping: dict, **flags: bool) -> None:
        if len(mapping) == 1 and all(type(v) is int for v in mapping.values()):
            ((member, score),) = mapping.items()
            self.out.append(("ZADD", key, *[n.upper() for n, on in flags.items() if on], score, member))
        else:
            self._call("zadd", key, mapping, **flags)


class RedisFold:
    """The Redis handlers' calls, per chunk, sent as plain pipelines into a fresh prefix."""

    def __init__(self, client: Any, prefix: str, grace_ms: int) -> None:
        self.client, self.keys, self.grace_ms = client, Keys(prefix), grace_ms
        self.live: dict[str, LiveEntry | None] = {}  # every live story's entry, for the whole load
        self.commands = 0

    def fold(self, events: list[LoggedEvent]) -> tuple[list[tuple], int]:
        """The chunk's commands, and its last event time (ms) for the seen-set reclaim."""
        w = _Commands(self.grace_ms, self.live)
        keys = self.keys
        for logged in events:
            apply_event(w, keys, logged.event)  # the handler's writes, then the erasure index's
        last_ms = int(max(e.event.occurred_at for e in events).timestamp() * 1000) if events else 0
        w.set_expiries()
        commands = w.out
        # A story that is gone stays None in ``live`` only to say so: absent says the same.
        for story_id in [s for s, entry in self.live.items() if entry is None]:
            del self.live[story_id]
        return commands, last_ms

    def write(self, commands: list[tuple], last_ms: int) -> None:
        """One chunk: the viewers whose seen sets may be due (read first, as the projector does
        before a batch), the chunk's writes, then their reclaim."""
        due = self.client.zrangebyscore(self.keys.seen_due, "-inf", last_ms) if last_ms else []
        for i in range(0, len(commands), 50_000):
            run_pipeline(self.client, commands[i : i + 50_000])
        self.commands += len(commands)
        if due:
            reclaim = [("EVAL", RECLAIM_SEEN, 1, self.keys.seen(v.decode()), last_ms, SEEN_DUE) for v in due]
            reclaim += [
                ("EVAL", UNDUE, 1, self.keys.seen_due, last_ms, *due[i : i + 1000]) for i in range(0, len(due), 1000)
            ]
            run_pipeline(self.client, reclaim)


# -- the target ----------------------------------------------------------------------------


def target_state(mongo: MongoClient, database: str, client: Any, prefix: str) -> str:
    """``empty``, ``building`` (a bulk load started and did not finish), ``done`` (a finished
    bulk load) or ``used`` (read models of another origin)."""
    db = mongo[database]
    marker = db[STATE].find_one({"_id": STATE})
    if marker is not None:
        return marker.get("state", "building")
    flag = client.get(Keys(prefix).position(STATE))
    if flag is not None:
        return flag.decode() if isinstance(flag, bytes) else str(flag)
    if any(name != STATE for name in db.list_collection_names()):
        return "used"
    keep = Keys(prefix).stamps(EXPIRY_TAG).encode()  # the expirer's (replay --yes keeps it)
    for kind in READ_MODEL_KEYS:
        for key in client.scan_iter(match=f"{prefix}{kind}*", count=1000):
            if key != keep:
                return "used"
    return "empty"


def drop_target(mongo: MongoClient, database: str, client: Any, prefix: str) -> None:
    """Drop a (half-built) target: the database and every read-model key under the prefix."""
    mongo.drop_database(database)
    keys = Keys(prefix)
    keep = keys.stamps(EXPIRY_TAG).encode()
    for kind in READ_MODEL_KEYS:
        batch = [k for k in client.scan_iter(match=f"{prefix}{kind}*", count=5000) if k != keep]
        for i in range(0, len(batch), 1000):
            for key in batch[i : i + 1000]:
                client.delete(key)  # one by one: keys of many slots on a cluster
    client.delete(keys.seen_due)
    client.delete(keys.position(STATE))


def _mark(mongo: MongoClient, database: str, client: Any, prefix: str, state: str, position: int) -> None:
    now = datetime.now(UTC)
    mongo[database][STATE].update_one(
        {"_id": STATE}, {"$set": {"state": state, "position": position, "at": now}}, upsert=True
    )
    client.set(Keys(prefix).position(STATE), state)


def set_positions(
    mongo: MongoClient, database: str, client: Any, prefix: str, position: int, partitions: int = 1
) -> None:
    """Every partition's normal position, in both stores, at ``position``."""
    keys = Keys(prefix)
    for i in range(partitions):
        part = Partition(i, partitions)
        mongo[database][POSITIONS].update_one(
            {"_id": part.name("mongo_views")}, {"$set": {"position": position, "pending_until": None}}, upsert=True
        )
        client.set(keys.position(part.name(VIEW_NAME)), position)


# -- the load ------------------------------------------------------------------------------


@dataclass
class LoadStats:
    applied: int = 0  # events folded
    position: int = 0
    read_s: float = 0.0  # reading and decoding the log (the reader thread's own time)
    seconds: float = 0.0
    mongo_inserted: int = 0
    mongo_updated: int = 0
    mongo_flushes: int = 0
    redis_commands: int = 0
    phases: dict[str, float] = field(default_factory=dict)


_DONE = object()


def bulk_load(
    store: EventStore,
    mongo: MongoClient,
    database: str,
    client: Any,
    prefix: str,
    until: int,
    on_progress: Callable[[int], None] = lambda position: None,
    keep: Callable[[LoggedEvent], bool] | None = None,
    partitions: int = 1,
    grace_ms: int = int(DEFAULT_GRACE.total_seconds() * 1000),
    max_docs: int = MAX_DOCS,
    chunk: int = READ_CHUNK,
    after: int = 0,
) -> LoadStats:
    """Fold the log from ``after`` to ``until`` into an empty target; the load's figures.
    Raises TargetNotEmpty when the target holds anything but a half-built load (which it drops)."""
    state = target_state(mongo, database, client, prefix)
    if state == "building":
        drop_target(mongo, database, client, prefix)
    elif state != "empty":
        raise TargetNotEmpty(f"MongoDB database {database!r} / Redis prefix {prefix!r} is not empty ({state})")
    _mark(mongo, database, client, prefix, "building", 0)
    started = time.perf_counter()
    stats = LoadStats(position=after)
    db = mongo[database]
    mongo_fold = MongoFold(db, max_docs)
    redis_fold = RedisFold(client, prefix, grace_ms)
    chunks: queue.Queue = queue.Queue(maxsize=3)
    writes: queue.Queue = queue.Queue(maxsize=2)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        position = after
        try:
            while position < until and not stop.is_set():
                t0 = time.perf_counter()
                events, reached = store.read_batch(position, chunk, until)
                stats.read_s += time.perf_counter() - t0
                if reached == position:
                    break
                if keep is not None:
                    events = [e for e in events if keep(e)]
                chunks.put((events, reached))
                position = reached
        except BaseException as error:
            errors.append(error)
        finally:
            chunks.put(_DONE)

    def redis_writer() -> None:
        try:
            while True:
                item = writes.get()
                if item is _DONE:
                    return
                if not errors:
                    redis_fold.write(*item)
        except BaseException as error:
            errors.append(error)
            stop.set()
            while writes.get() is not _DONE:  # let the folding thread finish putting
                pass

    jobs: queue.Queue = queue.Queue(maxsize=2)

    def mongo_writer() -> None:
        try:
            while True:
                job = jobs.get()
                if job is _DONE:
                    return
                if not errors:
                    mongo_fold.write(job)
        except BaseException as error:
            errors.append(error)
            stop.set()
            while jobs.get() is not _DONE:
                pass

    threads = [
        threading.Thread(target=reader, daemon=True, name="bulk-read"),
        threading.Thread(target=redis_writer, daemon=True, name="bulk-redis"),
        threading.Thread(target=mongo_writer, daemon=True, name="bulk-mongo"),
    ]
    for t in threads:
        t.start()
    fold_s = 0.0
    try:
        while True:
            item = chunks.get()
            if item is _DONE:
                break
            if errors:
                continue
            events, reached = item
            t0 = time.perf_counter()
            mongo_fold.fold(events)
            commands, last_ms = redis_fold.fold(events)
            fold_s += time.perf_counter() - t0
            writes.put((commands, last_ms))
            stats.applied += len(events)
            stats.position = reached
            if mongo_fold.full():
                jobs.put(mongo_fold.cut(reached))
            elif once := mongo_fold.write_once():
                jobs.put(mongo_fold.cut(reached, collections=once))
            on_progress(reached)
        if not errors:
            t0 = time.perf_counter()
            jobs.put(mongo_fold.cut(max(stats.position, until), everything=True))
            stats.phases["mongo_last_cut_s"] = time.perf_counter() - t0
    finally:
        stop.set()
        writes.put(_DONE)
        jobs.put(_DONE)
        while threads[0].is_alive():  # unblock a reader waiting to put
            with contextlib.suppress(queue.Empty):
                chunks.get(timeout=0.1)
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        stats.phases["writers_after_fold_s"] = time.perf_counter() - t0
    if errors:
        raise errors[0]
    stats.position = max(stats.position, until)
    t0 = time.perf_counter()
    ensure_indexes(db)
    stats.phases["indexes_s"] = time.perf_counter() - t0
    stats.phases["fold_s"] = fold_s
    set_positions(mongo, database, client, prefix, stats.position, partitions)
    _mark(mongo, database, client, prefix, "done", stats.position)
    on_progress(stats.position)
    stats.seconds = time.perf_counter() - started
    stats.mongo_inserted, stats.mongo_updated = mongo_fold.inserted, mongo_fold.updated
    stats.mongo_flushes, stats.redis_commands = mongo_fold.flushes, redis_fold.commands
    return stats


def read_ceiling(store: EventStore, until: int, chunk: int = READ_CHUNK) -> tuple[int, float]:
    """Read and decode the log to ``until`` and nothing else: (events, seconds), the ceiling of
    any rebuild from this log."""
    t0 = time.perf_counter()
    position, count = 0, 0
    while position < until:
        events, reached = store.read_batch(position, chunk, until)
        if reached == position:
            break
        count += len(events)
        position = reached
    return count, time.perf_counter() - t0


__all__ = [
    "LoadStats",
    "MongoFold",
    "RedisFold",
    "TargetNotEmpty",
    "bulk_load",
    "drop_target",
    "read_ceiling",
    "set_positions",
    "target_state",
]
