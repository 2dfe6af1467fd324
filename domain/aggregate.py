"""A minimal event-sourced aggregate base, free of any storage library.

Events are frozen dataclasses carrying ``originator_id`` (the stream), ``originator_version``
(1, 2, ... within the stream) and ``occurred_at``. The storage adapter in ``commands/`` maps
them to and from stored records by these names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self
from uuid import UUID


@dataclass(frozen=True, kw_only=True)
class DomainEvent:
    originator_id: UUID
    originator_version: int
    occurred_at: datetime

    # Bump when a field is added or changed, and add ``upcast_vN_vN+1(state)`` so that
    # events stored in the old shape are read in the new one (see README, "Event versions").
    class_version: ClassVar[int] = 1

    # Which fields hold personal data, and whose: ``{field: owner}``, where ``owner`` is ``SELF``
    # (the value is a person's id, or a list of ids, each that person's) or the name of the field
    # that holds the id of the person who wrote it (dotted for a nested id; ``a|b``: the first of
    # them that holds one). The log stores each
    # such value encrypted with its person's own key (commands/personal_data.py); a reader of an
    # erased person's event finds ``None`` there and the field's name in ``erased_fields``.
    PERSONAL: ClassVar[dict[str, str]] = {}

    @property
    def event_type(self) -> str:
        return type(self).__name__

    @property
    def erased_fields(self) -> frozenset[str]:
        """The fields whose person was erased: their values read ``None`` (in a list of ids,
        that person's entries do). Set by the log's reader, never stored or published."""
        erased: frozenset[str] = self.__dict__.get("_erased", frozenset())
        return erased

    @property
    def erased(self) -> bool:
        return bool(self.erased_fields)

    def data(self) -> dict[str, Any]:
        """The event's own fields, as published in the envelope's ``data``."""
        state = dict(self.__dict__)
        for key in ("originator_id", "originator_version", "occurred_at"):
            state.pop(key, None)
        for key in [key for key in state if key.startswith("_")]:  # what the reader noted, not fields
            del state[key]
        return state


SELF = "."  # in ``DomainEvent.PERSONAL``: the field's value is itself a person's id


class Aggregate:
    """Holds the state of one stream; ``_apply_<EventName>`` methods evolve it."""

    def __init__(self, aggregate_id: UUID) -> None:
        self.id = aggregate_id
        self.version = 0
        self.pending_events: list[DomainEvent] = []

    def _record(self, event_class: type[DomainEvent], now: datetime, **fields: Any) -> None:
        event = event_class(
            originator_id=self.id,
            originator_version=self.version + 1,
            occurred_at=now,
            **fields,
        )
        self.apply(event)
        self.pending_events.append(event)

    def apply(self, event: DomainEvent) -> None:
        getattr(self, "_apply_" + type(event).__name__)(event)
        self.version = event.originator_version

    def collect_events(self) -> list[DomainEvent]:
        events, self.pending_events = self.pending_events, []
        return events

    @classmethod
    def replay(cls, aggregate_id: UUID, events: Iterable[DomainEvent]) -> Self | None:
        """Rebuild from stored events; None when the stream has none."""
        aggregate = None
        for event in events:
            if aggregate is None:
                aggregate = cls(aggregate_id)
            aggregate.apply(event)
        return aggregate
