"""Collects a batch's document updates and merges those aimed at one document.

Many events touch the same document (a hot story's counters); merging their ``$inc``s turns a
batch of thousands of views into one write per document. Updates that cannot merge (a ``$pull``
after a ``$push`` on one field) stay separate, in order.

A write may name its document's shard key values (``shard``: the fields of
``projections.mongo_views.SHARD_KEYS`` other than ``_id``); they go into its filter beside the
``_id``, as a sharded MongoDB (6.0+) requires of an upsert, and so that a mongos sends the write
to one shard. A document's key values never change, so its writes merge as they would without
them.

A write that creates its document (``insert=``: a viewer's first view, a question answer, a
close-friend entry...) is, when it is the batch's first write to that document, sent as a plain
insert of the document as the batch leaves it (``plan``): cheap, and idempotent by its
deterministic ``_id``. Its stamp is the one the upsert would have set, so later guarded updates
line up with it. A delete is sent as a stamped tombstone (``plan``), so that a stale write can
never bring the document back: the guard has a stamp to compare against.

A write by filter (``delete_many`` / ``update_many``: an erased person's documents, wherever
they are) is sent as one ``DeleteMany`` / ``UpdateMany`` in its place among the collection's
writes. It is neither stamped nor guarded: what it does (remove the documents that name a
person, pull an id out of lists) is idempotent by nature, so a batch re-run after a crash simply
does it again; and it must not stamp, since it reaches documents of every partition, whose own
runners' stamps it would otherwise overtake. A delete by filter leaves no tombstone (a tombstone
holds the shard key values, which would name the person): see ``mongo_views.on_account_erased``
for what that leaves to a stalled runner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymongo import DeleteMany, DeleteOne, ReplaceOne, UpdateMany, UpdateOne

from projections.mongo_schema import GONE

STAMP_SPAN = 1_000_000  # writes per batch, at most; positions up to 9e12 fit in an int64 stamp

# ``insert=`` kinds: what a duplicate ``_id`` (error 11000) of the insert means.
INSERT_ONCE = "once"  # the document never changes after: it is there already, skip it
INSERT_FIRST = "first"  # later events update it, or it may be a tombstone: apply the stamped upsert instead
_MATERIALIZABLE = {"$set", "$setOnInsert", "$inc", "$min", "$max"}

_MERGEABLE: dict[str, Callable[[Any, Any], Any]] = {
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
    insert: str | None = None  # INSERT_ONCE / INSERT_FIRST: the batch's first write, creating the document
    filter: dict[str, Any] | None = None  # a write by filter (DeleteMany / UpdateMany): ``key`` is None


def _clashes(path: str, other: str) -> bool:
    return path == other or path.startswith(other + ".") or other.startswith(path + ".")


class DocumentWrites:
    def __init__(self) -> None:
        self._entries: dict[str, list[_Entry]] = {}
        self._last: dict[tuple[str, Any], _Entry] = {}
        self._filtered: set[str] = set()  # collections the batch wrote to by filter

    def update(
        self,
        collection: str,
        key: Any,
        update: dict[str, dict[str, Any]],
        upsert: bool = True,
        shard: dict[str, Any] | None = None,
        insert: str | None = None,
    ) -> None:
        """``insert``: this write creates the document (INSERT_ONCE or INSERT_FIRST); it is sent as
        an insert when no earlier write of the batch touches the document (``plan``)."""
        shard = dict(shard or {})
        last = self._last.get((collection, key))
        # The same key with other shard values would be a handler's bug: kept apart, never merged.
        # An update without upsert merges into a write that inserts the document: it exists by then.
        if (
            last is not None
            and last.update is not None
            and last.shard == shard
            and (last.upsert == upsert or (last.insert is not None and not upsert))
            and self._merge(last, update)
        ):
            return
        entry = _Entry(key, {op: dict(values) for op, values in update.items()}, upsert, shard)
        entry.fields = {path: op for op, values in update.items() for path in values}
        # Not as an insert after a write by filter: inserts go out before the other writes.
        if (
            insert is not None
            and last is None
            and upsert
            and set(update) <= _MATERIALIZABLE
            and collection not in self._filtered
        ):
            entry.insert = insert
        self._add(collection, entry)

    def delete(self, collection: str, key: Any, shard: dict[str, Any] | None = None) -> None:
        self._add(collection, _Entry(key, None, shard=dict(shard or {})))

    def delete_many(self, collection: str, filter: dict[str, Any]) -> None:
        """Delete every document ``filter`` (equalities) matches, tombstones included."""
        self._add_filtered(collection, _Entry(None, None, upsert=False, filter=dict(filter)))

    def update_many(self, collection: str, filter: dict[str, Any], update: dict[str, dict[str, Any]]) -> None:
        """Update every document ``filter`` (equalities) matches; never upserts. The update must be
        idempotent (``$pull``, ``$set``): it is not guarded by stamp."""
        entry = _Entry(None, {op: dict(values) for op, values in update.items()}, upsert=False, filter=dict(filter))
        self._add_filtered(collection, entry)

    def _add_filtered(self, collection: str, entry: _Entry) -> None:
        # Writes after it to one document must not merge into writes before it (they would move
        # to its other side), nor be sent as inserts (those go first).
        self._entries.setdefault(collection, []).append(entry)
        self._last = {k: v for k, v in self._last.items() if k[0] != collection}
        self._filtered.add(collection)

    def _add(self, collection: str, entry: _Entry) -> None:
        self._entries.setdefault(collection, []).append(entry)
        self._last[(collection, entry.key)] = entry

    @staticmethod
    def _merge(entry: _Entry, update: dict[str, dict[str, Any]]) -> bool:
        merged = entry.update
        assert merged is not None, "only an update merges (``update`` checks it)"
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
            target = merged.setdefault(op, {})
            for path, value in values.items():
                target[path] = _MERGEABLE[op](target[path], value) if path in target else value
                entry.fields[path] = op
        return True

    def operations(self, batch_end: int) -> dict[str, list[UpdateOne | DeleteOne | DeleteMany | UpdateMany]]:
        """The writes, each stamped so that running them twice changes nothing.

        Every write sets ``_v`` = batch_end * STAMP_SPAN + its place in the batch, and only
        applies where ``_v`` is lower: a batch re-run after a crash skips what already landed,
        and two writes to one document within a batch still both apply, in order. The filter
        names the document's shard key values too; they match the document's own, so the guard
        works as on ``_id`` alone.
        """
        out: dict[str, list[UpdateOne | DeleteOne | DeleteMany | UpdateMany]] = {}
        seq = 0
        for collection, entries in self._entries.items():
            ops = out.setdefault(collection, [])
            for e in entries:
                seq += 1
                if e.filter is not None:
                    ops.append(_filtered_op(e.filter, e.update))
                    continue
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

    def plan(self, batch_end: int, tombstoned: frozenset[str] | set[str] = frozenset()) -> dict[str, CollectionPlan]:
        """The writes as the view store sends them, per collection, stamped as ``operations``
        stamps them: ``inserts``, the documents created by the batch's first write to them (as
        the batch leaves them, if later writes merged into it), each with what to do when its
        ``_id`` is taken (``on_duplicate[i]``: None to skip it, else the stamped upsert); then
        ``updates``, the other writes in order, guarded by stamp. In a ``tombstoned``
        collection a delete becomes a stamped tombstone (the shard key values and ``_gone``), an
        upsert clears ``_gone``, and an update without upsert leaves tombstones alone.
        """
        out: dict[str, CollectionPlan] = {}
        seq = 0
        for collection, entries in self._entries.items():
            plan = out.setdefault(collection, CollectionPlan())
            tomb = collection in tombstoned
            for e in entries:
                seq += 1
                if e.filter is not None:  # tombstones included: a delete by filter removes them too
                    plan.updates.append(_filtered_op(e.filter, e.update))
                    continue
                stamp = batch_end * STAMP_SPAN + seq
                guard = {"_id": e.key, **e.shard, "_v": {"$lt": stamp}}
                if e.update is None:
                    plan.updates.append(
                        ReplaceOne(guard, {**e.shard, GONE: True, "_v": stamp}, upsert=True)
                        if tomb
                        else DeleteOne(guard)
                    )
                    continue
                update = {op: dict(values) for op, values in e.update.items()}
                update.setdefault("$set", {})["_v"] = stamp
                if tomb and e.upsert:
                    update.setdefault("$unset", {})[GONE] = ""
                elif tomb:
                    guard[GONE] = {"$ne": True}
                op = UpdateOne(guard, update, upsert=e.upsert)
                if e.insert is None:
                    plan.updates.append(op)
                else:
                    plan.inserts.append(_materialize(e, e.update, stamp))
                    plan.on_duplicate.append(op if e.insert == INSERT_FIRST else None)
        if seq >= STAMP_SPAN:
            raise ValueError("batch too large to stamp; lower the projector batch size")
        return out

    def updates(self, collection: str) -> list[tuple[Any, dict | None]]:
        """(key, update) per write to ``collection``, in order; None for a delete. Writes by
        filter are left out (``filtered``)."""
        return [(e.key, e.update) for e in self._entries.get(collection, []) if e.filter is None]

    def filtered(self, collection: str) -> list[tuple[dict, dict | None]]:
        """(filter, update) per write by filter to ``collection``, in order; None for a delete."""
        return [(e.filter, e.update) for e in self._entries.get(collection, []) if e.filter is not None]

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._entries.values())


@dataclass
class CollectionPlan:
    inserts: list[dict] = field(default_factory=list)
    on_duplicate: list[UpdateOne | None] = field(default_factory=list)
    updates: list[UpdateOne | ReplaceOne | DeleteOne | DeleteMany | UpdateMany] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.inserts) + len(self.updates)


def apply_update(doc: dict[str, Any], update: dict[str, dict[str, Any]], inserting: bool = False) -> None:
    """Apply MongoDB update operators to a plain dict as the server would. ``inserting``: the
    update is the one that creates the document (``$setOnInsert`` applies only then). Values are
    never mutated in place (a ``$push`` makes a new list), so event data is never changed."""
    for op, values in update.items():
        for path, value in values.items():
            *parents, leaf = path.split(".")
            target = doc
            for part in parents:
                nxt = target.get(part)
                if not isinstance(nxt, dict):
                    nxt = target[part] = {}
                target = nxt
            if op == "$set":
                target[leaf] = value
            elif op == "$setOnInsert":
                if inserting:
                    target[leaf] = value
            elif op == "$inc":
                target[leaf] = target[leaf] + value if leaf in target else value
            elif op == "$max":
                target[leaf] = max(target[leaf], value) if leaf in target else value
            elif op == "$min":
                target[leaf] = min(target[leaf], value) if leaf in target else value
            elif op == "$unset":
                target.pop(leaf, None)
            elif op in ("$push", "$addToSet"):
                items = value["$each"] if isinstance(value, dict) and "$each" in value else [value]
                current = list(target.get(leaf) or [])
                for item in items:
                    if op == "$push" or item not in current:
                        current.append(item)
                target[leaf] = current
            elif op in ("$pull", "$pullAll"):
                if leaf in target:
                    drop = (
                        value
                        if op == "$pullAll"
                        else (value["$in"] if isinstance(value, dict) and "$in" in value else [value])
                    )
                    target[leaf] = [item for item in target[leaf] if item not in drop]
            else:
                raise ValueError(f"update operator {op} is not supported")


def _filtered_op(filter: dict[str, Any], update: dict[str, dict[str, Any]] | None) -> DeleteMany | UpdateMany:
    """A write by filter, unstamped (see the module's docstring); ``update`` None: a delete."""
    if update is None:
        return DeleteMany(filter)
    return UpdateMany(filter, update)


def matches(doc: dict[str, Any], filter: dict[str, Any]) -> bool:
    """Whether ``doc`` matches ``filter`` as MongoDB matches a filter of plain equalities (a
    dotted path; a list holding the value matches it)."""
    for path, wanted in filter.items():
        value: Any = doc
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not (value == wanted or (isinstance(value, list) and wanted in value)):
            return False
    return True


def _materialize(entry: _Entry, update: dict[str, dict[str, Any]], stamp: int) -> dict:
    """The document an upsert of ``entry`` (its ``update``) inserts when no document has its
    ``_id``: the filter's equality fields (``_id``, shard key), then each operator applied to nothing."""
    doc: dict[str, Any] = {"_id": entry.key, **entry.shard}
    apply_update(doc, update, inserting=True)
    doc["_v"] = stamp
    return doc
