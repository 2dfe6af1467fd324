"""What a reader of the log sees of an erased person's events, without the log: for tests of
the read models' purge (live: named, then purged) against a replay (never named)."""

from __future__ import annotations

from commands.personal_data import owner_of
from domain.aggregate import SELF, DomainEvent


def as_erased(event: DomainEvent, user_id: str) -> DomainEvent:
    """``event`` as a reader finds it once ``user_id``'s key is destroyed: every personal field
    naming or written by ``user_id`` reads None (in a list of ids, that person's entries do),
    and ``erased_fields`` names them. The same object when nothing of it was theirs."""
    state = dict(event.__dict__)
    erased = set(event.erased_fields)
    for field, owner in type(event).PERSONAL.items():
        value = state.get(field)
        if value is None:
            continue
        if owner == SELF:
            if isinstance(value, list):
                if user_id in value:
                    state[field] = [None if v == user_id else v for v in value]
                    erased.add(field)
            elif value == user_id:
                state[field] = None
                erased.add(field)
        elif owner_of(event.__dict__, owner) == user_id:
            state[field] = None
            erased.add(field)
    if erased == set(event.erased_fields):
        return event
    state["_erased"] = frozenset(erased)
    copy = object.__new__(type(event))
    object.__setattr__(copy, "__dict__", state)
    return copy
