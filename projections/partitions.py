"""Partitions of the log, for projectors that scale out (``STORIES_PROJECTOR_PARTITIONS``).

Shared by the runners (which events a partition applies) and the query API (which position
documents to read: ``Partition.name``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from domain.accounts import AccountErased

if TYPE_CHECKING:
    from commands.event_store import LoggedEvent


@dataclass(frozen=True)
class Partition:
    """One of ``count`` shares of the log, by story (or by stream for events of no story).

    Every read-model document is written by events of one partition only, and the few Redis
    keys shared across partitions take commutative updates (set adds, counter increments), so
    partitions can be projected by separate processes, each with its own positions.
    """

    index: int = 0
    count: int = 1

    def owns(self, logged: LoggedEvent) -> bool:
        if self.count == 1:
            return True
        event = logged.event
        if isinstance(event, AccountErased):  # a person's documents are in every partition
            return True
        key = getattr(event, "story_id", None) or str(event.originator_id)
        return zlib.crc32(key.encode()) % self.count == self.index

    def name(self, base: str) -> str:
        return base if self.count == 1 else f"{base}.p{self.index}of{self.count}"
