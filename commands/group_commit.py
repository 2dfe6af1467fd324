"""Group commit: one writer thread runs queued commands and appends each batch in one transaction.

Commands are closures ``fn(batch) -> result`` that load aggregates through the batch, call one
domain method and hand back what they changed. Within a batch, commands see each other's changes
(the batch caches what it loaded), so two votes by one user in one batch still conflict. When the
store reports a conflict with another process, each command of the batch is run again on its own,
against fresh state; a command is re-runnable because it only reads through the batch.

A conflict may also be the batch meeting itself: when the connection drops after ``COMMIT`` reached
PostgreSQL, the driver retries the insert, which then fails on the batch's own rows. Every append
carries a private marker record of that attempt (``BatchMarker``, a fresh stream, not a domain
event); before re-running anything, the committer asks whether its marker is stored: if so the
batch was stored, and its commands are answered from it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

from commands.batch_marker import BatchMarker
from commands.event_store import EventStore, Loader, StoreUnavailable, StreamConflict
from domain.aggregate import Aggregate, DomainEvent
from domain.errors import Conflict

log = logging.getLogger(__name__)
A = TypeVar("A", bound=Aggregate)

MAX_BATCH = 256
CONFLICT_RETRIES = 3


class Batch:
    """The aggregates a batch of commands has loaded or created, in the order events happen."""

    def __init__(self, store: EventStore, load: Loader | None = None) -> None:
        self._load: Loader = load or store.load
        self._aggregates: dict[UUID, Aggregate | None] = {}
        self._marks: dict[UUID, int] = {}  # per aggregate: pending events before this command
        self.events: list[DomainEvent] = []  # the batch's events, in command order

    def load(self, cls: type[A], aggregate_id: UUID) -> A | None:
        if aggregate_id not in self._aggregates:
            self._aggregates[aggregate_id] = self._load(cls, aggregate_id)
        aggregate = self._aggregates[aggregate_id]
        self._mark(aggregate_id, aggregate)
        return aggregate  # type: ignore[return-value]  # cached by id: loaded (or added) as this very class

    def load_last(self, cls: type[A], aggregate_id: UUID) -> A | None:
        """Like ``load``, from the stream's newest event only: for streams whose every event
        holds the whole state (the limit tallies), so the cost does not grow with the stream.
        Appending after it still conflicts with a concurrent writer on the next version."""
        if aggregate_id not in self._aggregates:
            self._aggregates[aggregate_id] = self._load(cls, aggregate_id, last=True)
        aggregate = self._aggregates[aggregate_id]
        self._mark(aggregate_id, aggregate)
        return aggregate  # type: ignore[return-value]  # cached by id: loaded (or added) as this very class

    def add(self, *aggregates: Aggregate | None) -> None:
        """Hand over aggregates the command created or changed (None is ignored)."""
        for aggregate in aggregates:
            if aggregate is None:
                continue
            self._mark(aggregate.id, self._aggregates.get(aggregate.id))
            # Events leave in the order aggregates were last handed over, so what a command
            # adds last (its idempotency record) is stored last.
            self._marks[aggregate.id] = self._marks.pop(aggregate.id)
            self._aggregates[aggregate.id] = aggregate

    def _mark(self, aggregate_id: UUID, aggregate: Aggregate | None) -> None:
        if aggregate_id not in self._marks:
            self._marks[aggregate_id] = len(aggregate.pending_events) if aggregate is not None else 0

    def end_command(self) -> list[DomainEvent]:
        """The events the command just run has recorded; starts the next command's account."""
        new: list[DomainEvent] = []
        for aggregate_id, mark in self._marks.items():
            aggregate = self._aggregates.get(aggregate_id)
            if aggregate is not None:
                new.extend(aggregate.pending_events[mark:])
        self._marks.clear()
        self.events.extend(new)
        return new


@dataclass
class _Item:
    fn: Callable[[Batch], Any]
    future: Future = field(default_factory=Future)
    result: Any = None
    events: list[DomainEvent] = field(default_factory=list)


class _RerunAlone(Exception):
    pass


class AfterCommit:
    """A result to finish in the writer thread once the batch is stored (it may read the log)."""

    def __init__(self, finish: Callable[[], Any]) -> None:
        self.finish = finish


@dataclass(frozen=True)
class Outcome:
    result: Any
    position: int  # of the command's last event; the log head when it appended none


class GroupCommitter:
    """Serialises commands through one thread; ``await run(fn)`` from the event loop."""

    def __init__(self, store: EventStore, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="group-commit", daemon=True)
        self.batches = 0
        self.commands = 0
        self.conflicts = 0  # appends refused by the log's uniqueness check (another writer was first)
        self.unacknowledged = 0  # appends whose commit was not acknowledged but had stored them
        self._thread.start()

    async def run(self, fn: Callable[[Batch], Any]) -> Outcome:
        item = _Item(fn)
        self._queue.put(item)
        return await asyncio.wrap_future(item.future)

    def run_sync(self, fn: Callable[[Batch], Any]) -> Outcome:
        item = _Item(fn)
        self._queue.put(item)
        return item.future.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    # -- the writer thread ----------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            items = [item]
            while len(items) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                items.append(nxt)
            try:
                self._commit(items)
            except Exception as error:  # never let the writer thread die
                log.exception("group commit failed")
                for it in items:
                    if not it.future.done():
                        it.future.set_exception(error)

    def _commit(self, items: list[_Item]) -> None:
        self.batches += 1
        self.commands += len(items)
        accepted: list[_Item] = []
        try:
            with self.store.reading() as load:
                batch = Batch(self.store, load)
                self._run_commands(items, batch, accepted)
        except _RerunAlone:
            self._run_each_alone(items)
            return
        except StoreUnavailable as error:
            for it in items:
                if not it.future.done():
                    it.future.set_exception(error)
            return
        try:
            positions = self._append(batch.events)
        except StreamConflict:
            self._run_each_alone(accepted)
            return
        except StoreUnavailable as error:
            for it in accepted:
                it.future.set_exception(error)
            return
        self._resolve(accepted, batch.events, positions)

    def _append(self, events: list[DomainEvent]) -> list[int]:
        """Append, with a private marker record of this very attempt after the batch's events; on
        a uniqueness failure, the batch's positions if the marker is stored (its own earlier,
        unacknowledged commit stored it), else the conflict. The marker tells the two apart: two
        processes may well store byte-identical events (the same vote at the same millisecond)."""
        if not events:
            return self.store.append(events)
        marker = BatchMarker.mark()
        try:
            return self.store.append([*events, *marker.collect_events()])[: len(events)]
        except StreamConflict:
            if self.store.load(BatchMarker, marker.id) is None:
                self.conflicts += 1
                raise
            positions = self.store.stored_positions(events)
            if positions is None:  # cannot be: the marker and the events are stored together
                raise
            self.unacknowledged += 1
            log.warning(
                "a commit was not acknowledged but its %d event(s) are stored: answering from them", len(events)
            )
            return positions

    def _run_commands(self, items: list[_Item], batch: Batch, accepted: list[_Item]) -> None:
        for item in items:
            try:
                item.result = item.fn(batch)
            except Exception as error:
                if isinstance(error, StoreUnavailable):
                    raise
                if batch.end_command():
                    # It failed after recording: the batch's shared state is suspect, so
                    # every command gets a clean run of its own.
                    log.error("command failed after recording events; rerunning batch alone: %r", error)
                    raise _RerunAlone() from error
                item.future.set_exception(error)
                continue
            item.events = batch.end_command()
            accepted.append(item)

    def _resolve(self, items: list[_Item], events: list[DomainEvent], positions: list[int]) -> None:
        by_event = {id(e): p for e, p in zip(events, positions)}
        head = positions[-1] if positions else None
        for it in items:
            if it.events:
                position = max(by_event[id(e)] for e in it.events)
            else:
                if head is None:
                    head = self.store.head()
                position = head
            result = it.result.finish() if isinstance(it.result, AfterCommit) else it.result
            it.future.set_result(Outcome(result, position))

    def _run_each_alone(self, items: list[_Item]) -> None:
        for item in items:
            if item.future.done():
                continue
            for _attempt in range(CONFLICT_RETRIES):
                batch = Batch(self.store)
                try:
                    item.result = item.fn(batch)
                    item.events = batch.end_command()
                    positions = self._append(batch.events)
                except StreamConflict:
                    continue
                except Exception as error:
                    item.future.set_exception(error)
                    break
                self._resolve([item], batch.events, positions)
                break
            else:
                item.future.set_exception(
                    Conflict("the story changed while we wrote; try again", code="concurrent_modification")
                )
