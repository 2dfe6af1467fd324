"""The projection runner: follow the log from a view store's own position, in batches.

A view store applies one batch so that re-running it lands nothing twice (MongoDB: inserts
idempotent by their ``_id``, other writes stamped and guarded by version, deletes as stamped
tombstones; Redis: one script per hash tag, stamped with the log position it reached), then
records the batch's end position. Killed at any point, it restarts from the last recorded
position and every effect lands exactly once. Two runners on one view (one stalled, say) are
safe too: the later one re-runs the unfinished batch, the stalled one's late writes meet stamps
they cannot beat, and its position is refused (StalePosition); the MongoDB store also fences
runners with a token and a lease on its position document (``MongoViewStore``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from commands.event_store import EventStore, LoggedEvent
from domain.accounts import AccountErased
from projections.partitions import Partition

log = logging.getLogger(__name__)


class StalePosition(Exception):
    """The view store's recorded position is not where this runner started its batch."""


class ViewStore(Protocol):
    name: str

    def position(self) -> int:
        """The position of the last event applied (0 when none)."""

    def pending_until(self) -> int | None:
        """Where a batch that was started but not finished ends; it must be re-run exactly."""

    def apply(self, events: list[LoggedEvent], start: int, position: int) -> None:
        """Apply ``events`` and move the recorded position from ``start`` to ``position``,
        atomically; StalePosition when the recorded one is not ``start``."""


def erasure_alone(events: list[LoggedEvent], reached: int) -> tuple[list[LoggedEvent], int]:
    """Cut a batch so that an ``AccountErased`` is applied alone, after the events before it
    have landed: its purge then reads the read models as they name the person, with nothing of
    theirs still pending in the same batch. (A re-run of a cut batch reads exactly its range
    again, so it is cut the same way.)"""
    for i, logged in enumerate(events):
        if isinstance(logged.event, AccountErased):
            if i == 0:
                return events[:1], logged.position
            return events[:i], logged.position - 1
    return events, reached


class ProjectionRunner:
    def __init__(
        self,
        store: EventStore,
        view: ViewStore,
        batch_size: int = 1000,
        idle_wait_s: float = 0.05,
        partition: Partition = Partition(),
        keep: Callable[[LoggedEvent], bool] | None = None,
    ) -> None:
        # ``keep``: apply only the events it accepts (``stories replay --until TIME`` keeps those
        # that occurred by then, wherever they sit in the log); the position still moves past the rest.
        self.store, self.view, self.partition, self.keep = store, view, partition, keep
        self.batch_size, self.idle_wait_s = batch_size, idle_wait_s
        self.position: int | None = None
        self.applied = 0

    def run_once(self, until: int | None = None) -> int:
        """Apply one batch; the number of log rows it covered (0 when caught up)."""
        if self.position is None:
            self.position = self.view.position()
            pending = self.view.pending_until()
            if pending is not None and pending > self.position:
                # A batch was cut short: re-run exactly it, so its writes' guards line up.
                events, reached = self.store.read_batch(self.position, pending - self.position, pending)
                return self._apply(events, self.position, reached)
        events, reached = self.store.read_batch(self.position, self.batch_size, until)
        return self._apply(events, self.position, reached)

    def _apply(self, events: list[LoggedEvent], start: int, reached: int) -> int:
        if reached == start:
            return 0
        events, reached = erasure_alone(events, reached)
        if self.partition.count > 1:
            events = [e for e in events if self.partition.owns(e)]
        if self.keep is not None:
            events = [e for e in events if self.keep(e)]
        try:
            self.view.apply(events, start, reached)
        except StalePosition:
            self.position = None  # re-read it and go on from there
            return 0
        covered = reached - start
        self.position = reached
        self.applied += len(events)
        return covered

    def catch_up(self, until: int | None = None) -> None:
        """Apply everything up to ``until`` (default: the head when called)."""
        until = self.store.head() if until is None else until
        while (self.position or self.view.position()) < until and self.run_once(until):
            pass

    def run_forever(self, stop: threading.Event) -> None:
        """Follow the log until ``stop`` is set; back off while a store is unreachable."""
        backoff = 0.1
        while not stop.is_set():
            try:
                if not self.run_once():
                    stop.wait(self.idle_wait_s)
                backoff = 0.1
            except Exception as error:  # a dependency is down: wait, then retry from the recorded position
                log.warning("%s projection paused: %s", self.view.name, error)
                self.position = None
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
