"""Erasing an account: destroy the person's key, then tell every reader (``AccountErased``).

In this order, so that a crash anywhere leaves something a re-run finishes: once the key is gone
nothing of theirs can be read again (and their tokens are refused); the event then makes the
projectors purge the read models and the relay tell subscribers. Both steps are idempotent: the
key store keeps the first erasure's time, and the account's stream takes one event at most.
"""

from __future__ import annotations

from datetime import datetime

from commands.event_store import EventStore, StreamConflict
from commands.personal_data import pseudonym
from domain.accounts import Account

ATTEMPTS = 5


def erase_account(store: EventStore, pseudonym_key: bytes, user_id: str, now: datetime) -> int:
    """Erase ``user_id``; the log position of its ``AccountErased``."""
    name = pseudonym(pseudonym_key, user_id)
    store.keys.erase(user_id, name, now)
    return announce_erasure(store, name, now)


def announce_erasure(store: EventStore, name: str, now: datetime) -> int:
    """Append the account's ``AccountErased`` unless it is there; its position either way."""
    stream = Account.stream_for(name)
    for _ in range(ATTEMPTS):
        account = store.load(Account, stream)
        if account is not None and account.erased:
            position = store.position_of(stream, 1) or 0
            break
        try:
            position = store.append(Account.erase(account, name, now).collect_events())[-1]
            break
        except StreamConflict:  # another process announced it first
            continue
    else:
        raise StreamConflict(f"could not announce the erasure of {name}")
    store.keys.mark_announced(name, now)
    return position


def finish_erasures(store: EventStore, now: datetime) -> list[int]:
    """Announce the erasures a crash left unannounced (key gone, no event yet): each command
    API does this when it starts."""
    return [announce_erasure(store, name, now) for name in store.keys.unannounced()]
