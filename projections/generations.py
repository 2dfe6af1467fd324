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
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pymongo import MongoClient

from projections.mongo_schema import POSITIONS
from projections.partitions import Partition
from projections.redis_schema import VIEW_NAME, Keys

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
    docs = {
        d["_id"]: d.get("position", 0)
        for d in mongo[gen.mongodb_database][POSITIONS].find({"_id": {"$in": [p.name("mongo_views") for p in parts]}})
    }
    keys = Keys(gen.redis_prefix)
    found = [docs.get(p.name("mongo_views"), 0) for p in parts]
    found += [int(client.get(keys.position(p.name(VIEW_NAME))) or 0) for p in parts]
    return min(found), max(found)


def register(client: Any, prefix: str, gen: Generation, state: str) -> None:
    client.hset(
        registry_key(prefix),
        gen.name,
        orjson.dumps({**asdict(gen), "state": state, "at": datetime.now(UTC).isoformat()}),
    )


def registered(client: Any, prefix: str) -> dict[str, dict]:
    return {
        (k.decode() if isinstance(k, bytes) else k): orjson.loads(v)
        for k, v in client.hgetall(registry_key(prefix)).items()
    }


def switch(client: Any, prefix: str, gen: Generation, position: int) -> None:
    """Point the query APIs and the projectors at ``gen`` (one SET: atomic)."""
    client.set(
        pointer_key(prefix),
        orjson.dumps(
            {
                "name": gen.name,
                "mongodb_database": gen.mongodb_database,
                "redis_prefix": gen.redis_prefix,
                "position": position,
                "switched_at": datetime.now(UTC).isoformat(),
            }
        ),
    )
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
        out.append(
            {
                "name": gen.name,
                "mongodb_database": gen.mongodb_database,
                "redis_prefix": gen.redis_prefix,
                "position": low,
                "current": gen.where == now.where,
                "state": "current" if gen.where == now.where else ("built" if state == "current" else state),
            }
        )
    return out
