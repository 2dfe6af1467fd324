"""Collects a batch's document updates and merges those aimed at one document.

Many events touch the same document (a hot story's counters); merging their ``$inc``s turns a
batch of thousands of views into one write per document. Updates that cannot merge (a ``$pull``
after a ``$push`` on one field) stay separate, in order.

A write may name its document's shard key values (``shard``: the fields of
``projections.mongo_views.SHARD_KEYS`` other than ``_id``); they go into its filter beside the
``_id``, as a sharded MongoDB (6.0+) requires of an upsert, and so that a mongos sends the write
to one shard. A document's key values never change, so its writes merge as they would without
them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo import DeleteOne, UpdateOne

STAMP_SPAN = 1_000_000  # writes per batch, at most; positions up to 9e12 fit in an int64 stamp

_MERGEABLE = {
    "$inc": lambda old, new: old + new,
    "$set": lambda old, new: new,
    "$setOnInsert": lambda old, new: old,
    "$max": max,
    "$min": min,
}


@dataclass
class _Entry:
    key: Any
    update: dict[str, dict[str, Any]] | None  # None: delete
    upsert: bool = True
    shard: dict[str, Any] = field(default_factory=dict)  # shard key field -> value, beside the _id
    fields: dict[str, str] = field(default_factory=dict)  # field path -> operator


def _clashes(path: str, other: str) -> bool:
    return path == other or path.startswith(other + ".") or other.startswith(path + ".")


class DocumentWrites:
    def __init__(self) -> None:
        self._entries: dict[str, list[_Entry]] = {}
        self._last: dict[tuple[str, Any], _Entry] = {}

    def update(self, collection: str, key: Any, update: dict[str, dict[str, Any]], upsert: bool = True,
               shard: dict[str, Any] | None = None) -> None:
        shard = dict(shard or {})
        last = self._last.get((collection, key))
        # The same key with other shard values would be a handler's bug: kept apart, never merged.
        if (last is not None and last.update is not None and last.upsert == upsert and last.shard == shard
                and self._merge(last, update)):
            return
        entry = _Entry(key, {op: dict(values) for op, values in update.items()}, upsert, shard)
        entry.fields = {path: op for op, values in update.items() for path in values}
        self._add(collection, entry)

    def delete(self, collection: str, key: Any, shard: dict[str, Any] | None = None) -> None:
        self._add(collection, _Entry(key, None, shard=dict(shard or {})))

    def _add(self, collection: str, entry: _Entry) -> None:
        self._entries.setdefault(collection, []).append(entry)
        self._last[(collection, entry.key)] = entry

    @staticmethod
    def _merge(entry: _Entry, update: dict[str, dict[str, Any]]) -> bool:
        # A $setOnInsert after an earlier write to the same document never applies (the
        # document exists by then), so it is dropped rather than merged.
        update = {op: values for op, values in update.items() if op != "$setOnInsert"}
        # Merge only when every field either is new to the entry without overlapping another
        # path, or was set by the same mergeable operator.
        for op, values in update.items():
            for path in values:
                existing = entry.fields.get(path)
                if existing is not None:
                    if existing != op or op not in _MERGEABLE:
                        return False
                elif any(_clashes(path, other) for other in entry.fields):
                    return False
        for op, values in update.items():
            target = entry.update.setdefault(op, {})
            for path, value in values.items():
                target[path] = _MERGEABLE[op](target[path], value) if path in target else value
                entry.fields[path] = op
        return True

    def operations(self, batch_end: int) -> dict[str, list[UpdateOne | DeleteOne]]:
        """The writes, each stamped so that running them twice changes nothing.

        Every write sets ``_v`` = batch_end * STAMP_SPAN + its place in the batch, and only
        applies where ``_v`` is lower: a batch re-run after a crash skips what already landed,
        and two writes to one document within a batch still both apply, in order. The filter
        names the document's shard key values too; they match the document's own, so the guard
        works as on ``_id`` alone.
        """
        out: dict[str, list[UpdateOne | DeleteOne]] = {}
        seq = 0
        for collection, entries in self._entries.items():
            ops = out.setdefault(collection, [])
            for e in entries:
                seq += 1
                stamp = batch_end * STAMP_SPAN + seq
                guard = {"_id": e.key, **e.shard, "_v": {"$lt": stamp}}
                if e.update is None:
                    ops.append(DeleteOne(guard))
                else:
                    update = {op: dict(values) for op, values in e.update.items()}
                    update.setdefault("$set", {})["_v"] = stamp
                    ops.append(UpdateOne(guard, update, upsert=e.upsert))
        if seq >= STAMP_SPAN:
            raise ValueError("batch too large to stamp; lower the projector batch size")
        return out

    def updates(self, collection: str) -> list[tuple[Any, dict | None]]:
        """(key, update) per write to ``collection``, in order; None for a delete."""
        return [(e.key, e.update) for e in self._entries.get(collection, [])]

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._entries.values())
