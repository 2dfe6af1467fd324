"""Analysts' tools over the log: rebuild read models (``stories replay``), see one story as it
was at a moment (``stories story-at``), and where ``--until`` cuts the log (``Cut``)."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from pymongo import MongoClient

from commands.event_store import EventStore, LoggedEvent
from domain.stickers import parse_timestamp
from domain.stories import StoryCreated, StoryEdited
from projections.document_writes import DocumentWrites, apply_update
from projections.generations import (
    DEFAULT,
    Generation,
    GenerationRefused,
    current,
    named,
    positions,
    register,
    registered,
    registry_key,
    switch,
)
from projections.mongo_views import HANDLERS as MONGO_HANDLERS
from projections.mongo_views import MongoViewStore, ensure_indexes
from projections.partitions import Partition
from projections.redis_schema import EXPIRY_TAG, LEGACY_KEYS, VIEW_NAME, Keys
from projections.redis_views import READ_MODEL_KEYS, RedisViewStore
from projections.runner import ProjectionRunner
from read_api import presenter
from stories.backends import SyncRedis

REPLAY_BATCH = 5000


@dataclass(frozen=True)
class Cut:
    """What ``--until`` keeps: the log up to ``position``, and of it, when ``moment`` is given,
    only the events that occurred at or before it.

    A moment is not a position: events are stamped by the clocks of the processes that wrote
    them, so one stamped earlier may sit after one stamped later. A time cut therefore reads the
    log up to its head (when the command starts) and keeps events by their ``occurred_at``."""

    position: int
    moment: datetime | None = None

    def keeps(self, logged: LoggedEvent) -> bool:
        return self.moment is None or logged.event.occurred_at <= self.moment

    @property
    def keep(self) -> Callable[[LoggedEvent], bool] | None:
        """The event filter for ``rebuild`` / ProjectionRunner (None: a position cut keeps all)."""
        return None if self.moment is None else self.keeps


def parse_until(store: EventStore, value: str | None) -> Cut:
    """``--until``: a position (digits), an ISO 8601 time (every event at or before it, up to
    the head now), or by default the head now."""
    if value is None:
        return Cut(store.head())
    if value.isdigit():
        return Cut(int(value))
    return Cut(store.head(), parse_timestamp(value))


def clear_read_models(mongo: MongoClient, database: str, client: SyncRedis, prefix: str) -> None:
    """Drop the read models (not the relay's or the expirer's positions)."""
    mongo.drop_database(database)
    keep = Keys(prefix).stamps(EXPIRY_TAG).encode()  # the expirer's, like its schedule
    for kind in READ_MODEL_KEYS + LEGACY_KEYS:
        batch = [key for key in client.scan_iter(match=f"{prefix}{kind}*", count=5000) if key != keep]
        for i in range(0, len(batch), 5000):
            client.delete(*batch[i : i + 5000])


def rebuild(
    store: EventStore,
    mongo: MongoClient,
    database: str,
    client: redis.Redis,
    prefix: str,
    until: int,
    on_progress: Callable[[int], None] = lambda position: None,
    keep: Callable[[LoggedEvent], bool] | None = None,
    partitions: int = 1,
) -> int:
    """Rebuild the log up to ``until`` into empty read models as a bulk load
    (``projections.bulk_load``); the events applied. With ``keep`` (``Cut.keep``), only the
    events it accepts: a time cut skips later-stamped events and goes on, since an
    earlier-stamped one may follow them."""
    from projections.bulk_load import bulk_load

    return bulk_load(
        store, mongo, database, client, prefix, until, on_progress, keep=keep, partitions=partitions
    ).applied


def rebuild_with_runners(
    store: EventStore,
    mongo: MongoClient,
    database: str,
    client: redis.Redis,
    prefix: str,
    until: int,
    on_progress: Callable[[int], None] = lambda position: None,
    batch: int = REPLAY_BATCH,
    keep: Callable[[LoggedEvent], bool] | None = None,
) -> int:
    """The rebuild before the bulk load: the normal runners (guarded upserts, stamped scripts)
    with large batches. Kept for the benchmark's comparison."""
    mongo_view = MongoViewStore(mongo, database, indexes=False)  # indexes after the load: faster
    runners = [
        ProjectionRunner(store, mongo_view, batch, keep=keep),
        ProjectionRunner(store, RedisViewStore(client, prefix), batch, keep=keep),
    ]

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


CONTENT_FIELDS = ("text_content", "background_color", "background_gradient", "stickers")


def story_at(store: EventStore, story_id: str, moment: datetime) -> dict | None:
    """The story, its sticker results and counts as they were at ``moment``, from the log alone,
    with ``versions``: its content as created and after each edit, oldest first, up to then.

    Every event of the story stamped at or before ``moment`` counts, wherever it sits in the log
    (up to the head now): clocks of different processes may log an earlier event after a later one.
    Versions are numbered in the story's own stream order (1: created, then one per edit), so a
    number names the same content whatever the moment."""
    doc: dict[str, Any] | None = None
    versions: list[dict[str, Any]] = []
    number = 0
    for logged in store.read(0, store.head(), REPLAY_BATCH):
        event = logged.event
        if getattr(event, "story_id", None) != story_id:
            continue
        if isinstance(event, (StoryCreated, StoryEdited)):
            number += 1
            if event.occurred_at <= moment:
                versions.append(
                    {
                        "version": number,
                        "at": event.occurred_at.isoformat(),
                        "changed": list(getattr(event, "changed", [])),
                        **{name: copy.deepcopy(getattr(event, name)) for name in CONTENT_FIELDS},
                    }
                )
        if event.occurred_at > moment:
            continue
        handler = MONGO_HANDLERS.get(type(event))
        if handler is None:  # a type the read models do not project
            continue
        writes = DocumentWrites()
        handler(writes, event, logged)
        for _key, update in writes.updates("stories"):
            doc = doc if doc is not None else {"_id": story_id}
            if update is not None:
                apply_update(doc, update)
    if doc is None or "user_id" not in doc:
        return None
    story = presenter.base_story(
        doc,
        doc["user_id"],
        moment,
        viewed_by_me=False,
        view_count=doc.get("view_count", 0),
        reply_count=doc.get("reply_count", 0),
    )
    story["stickers"] = [
        presenter.sticker_with_results(i, s, doc.get("results", {}), {}, True, moment, None)
        for i, s in enumerate(doc.get("stickers", []))
    ]
    story.update(
        as_of=moment.isoformat(),
        unique_viewers=doc.get("unique_viewers", 0),
        deleted=bool(doc.get("deleted")),
        insights=presenter.insights(doc, 0),
        versions=versions,
    )
    return story


# -- generations (``stories replay --into NAME``, ``stories generations --drop NAME``) --------------


def drop_generation(mongo: MongoClient, client: Any, database: str, prefix: str, name: str) -> Generation:
    """Drop generation ``name`` (never the current one). The default generation's Redis keys go as
    ``stories replay --yes`` clears them (the relay's and the expirer's stay)."""
    from projections.bulk_load import drop_target

    gen = named(database, prefix, name)
    if gen.where == current(client, database, prefix).where:
        raise GenerationRefused(f"generation {name!r} is the one served: switch to another first")
    if gen.name == DEFAULT:
        clear_read_models(mongo, gen.mongodb_database, client, gen.redis_prefix)
    else:
        drop_target(mongo, gen.mongodb_database, client, gen.redis_prefix)
        for key in client.scan_iter(match=f"{gen.redis_prefix}*", count=5000):
            client.delete(key)
    client.hdel(registry_key(prefix), gen.name)
    return gen


def build_generation(
    store: EventStore,
    mongo: MongoClient,
    client: Any,
    database: str,
    prefix: str,
    name: str,
    *,
    partitions: int = 1,
    batch: int = 1000,
    grace_ms: int | None = None,
    on_progress: Callable[[int, int], None] = lambda position, target: None,
    say: Callable[[str], None] = lambda text: None,
    handoff_s: float = 30.0,
) -> Generation:
    """``stories replay --into NAME``: build generation ``name`` while the served one keeps
    serving, follow the log until it has caught up, switch to it. Its position at the switch."""
    from projections.bulk_load import bulk_load, drop_target, target_state
    from projections.redis_views import DEFAULT_GRACE

    say = _timed(say)

    gen = named(database, prefix, name)
    if gen.name == DEFAULT:
        raise GenerationRefused("the default generation is the configured one: name a new generation")
    served = current(client, database, prefix)
    if gen.where == served.where:
        raise GenerationRefused(f"generation {name!r} is the one served")
    state = target_state(mongo, gen.mongodb_database, client, gen.redis_prefix)
    known = registered(client, prefix).get(gen.name)
    if state in ("building",) or (known and known.get("state") in ("building", "following") and state != "empty"):
        say(f"generation {name!r} was left half-built by an earlier run: dropping it")
        drop_target(mongo, gen.mongodb_database, client, gen.redis_prefix)
    elif state != "empty":
        raise GenerationRefused(
            f"generation {name!r} exists ({gen.mongodb_database!r}, {gen.redis_prefix!r}): "
            f"drop it first (stories generations --drop {name})"
        )
    register(client, prefix, gen, "building")
    head = store.head()
    grace = grace_ms if grace_ms is not None else int(DEFAULT_GRACE.total_seconds() * 1000)
    stats = bulk_load(
        store,
        mongo,
        gen.mongodb_database,
        client,
        gen.redis_prefix,
        head,
        lambda p: on_progress(p, head),
        partitions=partitions,
        grace_ms=grace,
    )
    say(f"loaded {stats.applied} events to position {stats.position} in {stats.seconds:.1f} s; following the log")
    register(client, prefix, gen, "following")
    runners = []
    for i in range(partitions):
        part = Partition(i, partitions)
        runners += [
            ProjectionRunner(
                store, MongoViewStore(mongo, gen.mongodb_database, part.name("mongo_views")), batch, partition=part
            ),
            ProjectionRunner(
                store,
                RedisViewStore(client, gen.redis_prefix, part.name(VIEW_NAME), grace=_td(grace)),
                batch,
                partition=part,
            ),
        ]
    while True:
        target = store.head()
        for runner in runners:
            runner.catch_up(target)
        ours = min(r.position or 0 for r in runners)
        on_progress(ours, store.head())
        # Caught up with the head as read above. Under steady writes the served projector is often
        # a little ahead; waiting to pass it could chase it for ever. No need: each query API
        # switches only once the new generation's positions reach what it has served.
        if ours >= target:
            break
        time.sleep(0.05)
    # Stop following before the switch: from the switch on the projector follows it (one writer).
    switch(client, prefix, gen, ours)
    say(f"switched to generation {name!r} at position {ours}")
    deadline = time.monotonic() + handoff_s
    while time.monotonic() < deadline:
        low, _ = positions(mongo, client, gen, partitions)
        if low > ours or low >= store.head():
            return Generation(gen.name, gen.mongodb_database, gen.redis_prefix, ours)
        time.sleep(0.2)
    say(
        "note: no projector has moved the new generation on yet (is one running?); "
        "the query API serves it once its positions reach those it served before"
    )
    return Generation(gen.name, gen.mongodb_database, gen.redis_prefix, ours)


def _timed(say: Callable[[str], None]) -> Callable[[str], None]:
    """``say``, each line stamped with the seconds since this call."""
    t0 = time.monotonic()
    return lambda text: say(f"[{time.monotonic() - t0:6.1f} s] {text}")


def _td(ms: int) -> timedelta:
    return timedelta(milliseconds=ms)
