"""A private record appended after every group-commit batch, in a fresh stream of its own.

When PostgreSQL's connection drops after ``COMMIT`` reached the server, the driver retries the
insert and the retry fails on the batch's own rows: the marker, found stored, says the batch is
this attempt's, where the events' content alone could not (two processes may store the same vote
at the same millisecond). Like idempotency records, markers are not domain events: the log's
readers (projector, relay, export) skip them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import uuid4

from domain.aggregate import Aggregate, DomainEvent


@dataclass(frozen=True, kw_only=True)
class BatchAppended(DomainEvent):
    pass


class BatchMarker(Aggregate):
    @classmethod
    def mark(cls) -> BatchMarker:
        marker = cls(uuid4())
        marker._record(BatchAppended, datetime.now(UTC))
        return marker

    def _apply_BatchAppended(self, event: BatchAppended) -> None:
        pass
