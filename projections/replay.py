"""Analysts' tools over the log: rebuild read models (``stories replay``), see one story as it
was at a moment (``stories story-at``), find the log position of a moment in time."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, Callable

import redis
from pymongo import MongoClient

from commands.event_store import EventStore
from domain.stickers import parse_timestamp
from projections.document_writes import DocumentWrites
from projections.mongo_views import HANDLERS as MONGO_HANDLERS, MongoViewStore, ensure_indexes
from projections.redis_schema import EXPIRY_TAG, LEGACY_KEYS, Keys
from projections.redis_views import READ_MODEL_KEYS, RedisViewStore
from projections.runner import ProjectionRunner
from read_api import presenter

REPLAY_BATCH = 5000


def position_at(store: EventStore, moment: datetime) -> int:
    """The position of the last event that occurred at or before ``moment`` (0 if none).

    One writer stamps events in commit order, so the scan stops at the first later event."""
    found, after = 0, 0
    while True:
        events, reached = store.read_batch(after, REPLAY_BATCH)
        for logged in events:
            if logged.event.occurred_at > moment:
                return found
            found = logged.position
        if reached == after:
            return found
        after = reached


def parse_until(store: EventStore, value: str | None) -> int:
    """``--until``: a position (digits) or an ISO 8601 timestamp; default: the head now."""
    if value is None:
        return store.head()
    if value.isdigit():
        return int(value)
    return position_at(store, parse_timestamp(value))


def clear_read_models(mongo: MongoClient, database: str, client: redis.Redis, prefix: str) -> None:
    """Drop the read models (not the relay's or the expirer's positions)."""
    mongo.drop_database(database)
    keep = Keys(prefix).stamps(EXPIRY_TAG).encode()  # the expirer's, like its schedule
    for kind in READ_MODEL_KEYS + LEGACY_KEYS:
        batch = [key for key in client.scan_iter(match=f"{prefix}{kind}*", count=5000) if key != keep]
        for i in range(0, len(batch), 5000):
            client.delete(*batch[i:i + 5000])


def rebuild(
    store: EventStore, mongo: MongoClient, database: str, client: redis.Redis, prefix: str, until: int,
    on_progress: Callable[[int], None] = lambda position: None, batch: int = REPLAY_BATCH,
) -> int:
    """Project the log up to ``until`` into (empty) read models; the events applied."""
    mongo_view = MongoViewStore(mongo, database, indexes=False)  # indexes after the load: faster
    runners = [ProjectionRunner(store, mongo_view, batch), ProjectionRunner(store, RedisViewStore(client, prefix), batch)]

    errors: list[BaseException] = []

    def follow(runner: ProjectionRunner) -> None:
        try:
            while runner.run_once(until):
                pass
        except BaseException as error:  # re-raised below, in the caller's thread
            errors.append(error)

    # Both stores at once: each mostly waits on its server, so the waits overlap.
    threads = [threading.Thread(target=follow, args=(r,), daemon=True) for r in runners]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(timeout=0.5)
        on_progress(min(r.position or 0 for r in runners))
    if errors:
        raise errors[0]
    ensure_indexes(mongo[database])
    return runners[0].applied


# -- one story at one moment -----------------------------------------------------------------


def _apply_update(doc: dict[str, Any], update: dict[str, dict[str, Any]]) -> None:
    """The few update operators the story handlers use, on a plain dict."""
    for op, values in update.items():
        for path, value in values.items():
            *parents, leaf = path.split(".")
            target = doc
            for part in parents:
                target = target.setdefault(part, {})
            if op == "$set" or (op == "$setOnInsert" and leaf not in target):
                target[leaf] = value
            elif op == "$inc":
                target[leaf] = target.get(leaf, 0) + value
            elif op == "$max":
                target[leaf] = max(target.get(leaf, value), value)
            elif op == "$min":
                target[leaf] = min(target.get(leaf, value), value)


def story_at(store: EventStore, story_id: str, moment: datetime) -> dict | None:
    """The story, its sticker results and counts as they were at ``moment``, from the log alone."""
    doc: dict[str, Any] | None = None
    after = 0
    while True:
        events, reached = store.read_batch(after, REPLAY_BATCH)
        for logged in events:
            event = logged.event
            if event.occurred_at > moment:
                reached = after = -1
                break
            if getattr(event, "story_id", None) != story_id:
                continue
            writes = DocumentWrites()
            MONGO_HANDLERS[type(event)](writes, event, logged)
            for _key, update in writes.updates("stories"):
                doc = doc if doc is not None else {"_id": story_id}
                if update is not None:
                    _apply_update(doc, update)
        if reached in (after, -1):
            break
        after = reached
    if doc is None or "user_id" not in doc:
        return None
    story = presenter.base_story(doc, doc["user_id"], moment, viewed_by_me=False,
                                 view_count=doc.get("view_count", 0), reply_count=doc.get("reply_count", 0))
    story["stickers"] = [
        presenter.sticker_with_results(i, s, doc.get("results", {}), {}, True, moment, None)
        for i, s in enumerate(doc.get("stickers", []))
    ]
    story.update(as_of=moment.isoformat(), unique_viewers=doc.get("unique_viewers", 0),
                 deleted=bool(doc.get("deleted")), insights=presenter.insights(doc, 0))
    return story
