"""Generations of the read models, for a zero-downtime rebuild (``stories replay --into NAME``).

A generation is a MongoDB database and a Redis key prefix holding a whole set of read models.
The configured ones (``STORIES_MONGODB_DATABASE``, ``STORIES_REDIS_PREFIX``) are the ``default``
generation; generation ``NAME`` is database ``<configured>_NAME`` and prefix
``<configured prefix>gen-NAME:``. Which one is served is a pointer under the *configured* prefix,
``P:generation`` (JSON: name, mongodb_database, redis_prefix, position, switched_at; absent: the
default generation), and ``P:generations`` (a hash: name -> JSON) lists the built ones.

The query API and the projector read the pointer once a second (a plain GET: it works the same on
one Redis and on a cluster, needs no ``notify-keyspace-events`` setting, and a missed change is
seen at the next read, where a missed keyspace notification would be lost for good). The
expirer's schedule, the relay's position and lease and ``P:position:log_head`` stay under the
configured prefix whatever the generation: they are not read models.

The switch, by ``replay --into``: bulk-load the new generation to the head, follow the log with
the normal runners until it has reached the head as read when it last looked, stop
following, write the pointer. The projector sees it and moves its runners to the new stores
(which continue from the new generation's own positions). Each query API process sees it, follows
the new generation's positions, and serves from it only once they are at or past the positions it
served from before, so ``X-Stories-Position`` never goes back for its clients.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import orjson
from pymongo import MongoClient

from commands.event_store import EventStore
from projections.mongo_views import POSITIONS
from projections.redis_schema import VIEW_NAME, Keys
from projections.runner import Partition

DEFAULT = "default"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
WATCH_INTERVAL_S = 1.0  # how often the query API and the projector read the pointer


class GenerationRefused(Exception):
    """A generation command that cannot be done as asked (the message says why)."""


@dataclass(frozen=True)
class Generation:
    name: str
    mongodb_database: str
    redis_prefix: str
    position: int = 0  # the position it was switched to at (in the pointer)

    @property
    def where(self) -> tuple[str, str]:
        return self.mongodb_database, self.redis_prefix


def pointer_key(configured_prefix: str) -> str:
    return f"{configured_prefix}generation"


def registry_key(configured_prefix: str) -> str:
    return f"{configured_prefix}generations"


def default_generation(database: str, prefix: str) -> Generation:
    return Generation(DEFAULT, database, prefix)


def named(database: str, prefix: str, name: str) -> Generation:
    """Generation ``name`` of the configured database and prefix."""
    if name == DEFAULT:
        return default_generation(database, prefix)
    if not NAME.match(name):
        raise GenerationRefused(f"a generation name is 1 to 32 of a-z 0-9 _ - (not {name!r})")
    return Generation(name, f"{database}_{name}", f"{prefix}gen-{name}:")


def parse_pointer(raw: bytes | str | None, database: str, prefix: str) -> Generation:
    if not raw:
        return default_generation(database, prefix)
    doc = orjson.loads(raw)
    return Generation(doc["name"], doc["mongodb_database"], doc["redis_prefix"], int(doc.get("position", 0)))


def current(client: Any, database: str, prefix: str) -> Generation:
    """The generation served now (blocking client)."""
    return parse_pointer(client.get(pointer_key(prefix)), database, prefix)


async def current_async(client: Any, database: str, prefix: str) -> Generation:
    """The generation served now (asyncio client)."""
    return parse_pointer(await client.get(pointer_key(prefix)), database, prefix)


def positions(mongo: MongoClient, client: Any, gen: Generation, partitions: int = 1) -> tuple[int, int]:
    """(lowest, highest) of the generation's positions, over both stores and every partition."""
    parts = [Partition(i, partitions) for i in range(partitions)]
    docs = {d["_id"]: d.get("position", 0) for d in mongo[gen.mongodb_database][POSITIONS].find(
        {"_id": {"$in": [p.name("mongo_views") for p in parts]}})}
    keys = Keys(gen.redis_prefix)
    found = [docs.get(p.name("mongo_views"), 0) for p in parts]
    found += [int(client.get(keys.position(p.name(VIEW_NAME))) or 0) for p in parts]
    return min(found), max(found)


def register(client: Any, prefix: str, gen: Generation, state: str) -> None:
    client.hset(registry_key(prefix), gen.name, orjson.dumps({
        **asdict(gen), "state": state, "at": datetime.now(timezone.utc).isoformat()}))


def registered(client: Any, prefix: str) -> dict[str, dict]:
    return {(k.decode() if isinstance(k, bytes) else k): orjson.loads(v)
            for k, v in client.hgetall(registry_key(prefix)).items()}


def switch(client: Any, prefix: str, gen: Generation, position: int) -> None:
    """Point the query APIs and the projectors at ``gen`` (one SET: atomic)."""
    client.set(pointer_key(prefix), orjson.dumps({
        "name": gen.name, "mongodb_database": gen.mongodb_database, "redis_prefix": gen.redis_prefix,
        "position": position, "switched_at": datetime.now(timezone.utc).isoformat()}))
    register(client, prefix, Generation(gen.name, gen.mongodb_database, gen.redis_prefix, position), "current")


def listing(mongo: MongoClient, client: Any, database: str, prefix: str, partitions: int = 1) -> list[dict]:
    """Every generation: name, database, prefix, position (the lowest of its stores), current or not."""
    now = current(client, database, prefix)
    known = registered(client, prefix)
    gens = [default_generation(database, prefix)]
    gens += [named(database, prefix, name) for name in sorted(known) if name != DEFAULT]
    out = []
    for gen in gens:
        low, _ = positions(mongo, client, gen, partitions)
        state = known.get(gen.name, {}).get("state", "built")
        out.append({"name": gen.name, "mongodb_database": gen.mongodb_database, "redis_prefix": gen.redis_prefix,
                    "position": low, "current": gen.where == now.where,
                    "state": "current" if gen.where == now.where else ("built" if state == "current" else state)})
    return out


def drop(mongo: MongoClient, client: Any, database: str, prefix: str, name: str) -> Generation:
    """Drop generation ``name`` (never the current one). The default generation's Redis keys go as
    ``stories replay --yes`` clears them (the relay's and the expirer's stay)."""
    from projections.bulk_load import drop_target
    from projections.replay import clear_read_models

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


def build(
    store: EventStore, mongo: MongoClient, client: Any, database: str, prefix: str, name: str, *,
    partitions: int = 1, batch: int = 1000, grace_ms: int | None = None,
    on_progress: Callable[[int, int], None] = lambda position, target: None,
    say: Callable[[str], None] = lambda text: None, handoff_s: float = 30.0,
) -> Generation:
    """``stories replay --into NAME``: build generation ``name`` while the served one keeps
    serving, follow the log until it has caught up, switch to it. Its position at the switch."""
    from projections.bulk_load import bulk_load, drop_target, target_state
    from projections.mongo_views import MongoViewStore
    from projections.redis_views import DEFAULT_GRACE, RedisViewStore
    from projections.runner import ProjectionRunner

    t0 = time.monotonic()
    say = (lambda text, _say=say: _say(f"[{time.monotonic() - t0:6.1f} s] {text}"))
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
        raise GenerationRefused(f"generation {name!r} exists ({gen.mongodb_database!r}, {gen.redis_prefix!r}): "
                                f"drop it first (stories generations --drop {name})")
    register(client, prefix, gen, "building")
    head = store.head()
    grace = grace_ms if grace_ms is not None else int(DEFAULT_GRACE.total_seconds() * 1000)
    stats = bulk_load(store, mongo, gen.mongodb_database, client, gen.redis_prefix, head,
                      lambda p: on_progress(p, head), partitions=partitions, grace_ms=grace)
    say(f"loaded {stats.applied} events to position {stats.position} in {stats.seconds:.1f} s; following the log")
    register(client, prefix, gen, "following")
    runners = []
    for i in range(partitions):
        part = Partition(i, partitions)
        runners += [ProjectionRunner(store, MongoViewStore(mongo, gen.mongodb_database, part.name("mongo_views")),
                                     batch, partition=part),
                    ProjectionRunner(store, RedisViewStore(client, gen.redis_prefix, part.name(VIEW_NAME),
                                                           grace=_td(grace)), batch, partition=part)]
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
    say("note: no projector has moved the new generation on yet (is one running?); "
        "the query API serves it once its positions reach those it served before")
    return Generation(gen.name, gen.mongodb_database, gen.redis_prefix, ours)


def _td(ms: int):
    from datetime import timedelta

    return timedelta(milliseconds=ms)
