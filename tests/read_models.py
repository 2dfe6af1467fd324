"""Dump read models to plain data, to compare a live projection with a rebuild."""

from __future__ import annotations

from typing import Any

import redis
from pymongo import MongoClient

from commands.event_store import LoggedEvent
from projections.mongo_schema import POSITIONS
from projections.redis_schema import VIEW_NAME

COLLECTIONS = (
    "stories",
    "story_viewers",
    "question_answers",
    "highlights",
    "highlight_reels",
    "close_friends",
    "owner_viewers",
    "muted",
)


def dump_mongo(client: MongoClient, database: str) -> dict[str, list[dict]]:
    db = client[database]
    # ``_v`` stamps where a write's batch ended: it differs between batchings, by design.
    return {name: sorted(db[name].find({}, {"_v": 0}), key=lambda d: str(d["_id"])) for name in COLLECTIONS}


def dump_redis(client: redis.Redis, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw in client.scan_iter(match=prefix + "*", count=1000):
        key = raw.decode()[len(prefix) :]
        if key.startswith(("position:", "at:", "wait:")):
            continue  # positions and stamps say where batches ended: they differ between batchings
        kind = client.type(raw).decode()
        if kind == "string":
            out[key] = client.get(raw)
        elif kind == "set":
            out[key] = sorted(client.smembers(raw))
        elif kind == "hash":
            out[key] = dict(sorted((f, v) for f, v in client.hgetall(raw).items() if not f.startswith(b"@")))
        elif kind == "zset":
            out[key] = client.zrange(raw, 0, -1, withscores=True)
        elif kind == "list":
            out[key] = client.lrange(raw, 0, -1)
        else:
            out[key] = kind
    return dict(sorted(out.items()))


def positions(client: MongoClient, database: str, rclient: redis.Redis, prefix: str) -> tuple[int, int]:
    doc = client[database][POSITIONS].find_one({"_id": "mongo_views"})
    return (doc["position"] if doc else 0), int(rclient.get(prefix + "position:" + VIEW_NAME) or 0)


def redis_views_counted(client: redis.Redis, prefix: str) -> int:
    """Views counted in Redis: live stories only (a story's counters go when it expires)."""
    return sum(int(client.hget(key, "v") or 0) for key in client.scan_iter(match=prefix + "n:*", count=1000))


def all_docs(client: MongoClient, database: str) -> dict[str, list[dict]]:
    """``dump_mongo``'s collections and ``muted`` (and any other read-model collection), ``_v`` aside."""
    out = dump_mongo(client, database)
    for name in ("muted", *tuple(n for n in COLLECTIONS if n not in out)):
        out[name] = sorted(client[database][name].find({}, {"_v": 0}), key=lambda d: str(d["_id"]))
    return out


def drop_read_models(client: MongoClient, rclient: redis.Redis, database: str, prefix: str) -> None:
    client.drop_database(database)
    for key in rclient.scan_iter(match=prefix + "*"):
        rclient.delete(key)


class MemoryLog:
    """A log in memory, read as the projector reads the event store."""

    def __init__(self, events: list) -> None:
        self.events = [LoggedEvent(i + 1, e) for i, e in enumerate(events)]

    def head(self) -> int:
        return len(self.events)

    def read_batch(self, after: int, limit: int, until: int | None = None) -> tuple[list[LoggedEvent], int]:
        stop = len(self.events) if until is None else min(until, len(self.events))
        chunk = self.events[after : max(after, min(after + limit, stop))]
        return chunk, after + len(chunk)
