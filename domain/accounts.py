"""Erasure: a person's account is forgotten (``../shared/CONTRACT.md``, "Erasure").

The log never changes, so forgetting works by destroying the person's key (their personal data
in every event is encrypted with it: ``DomainEvent.PERSONAL``) and by telling every reader with
``AccountErased``. The event names the account by a keyed pseudonym, never by its id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar
from uuid import UUID

from domain.aggregate import Aggregate, DomainEvent
from domain.ids import stream_id


@dataclass(frozen=True, kw_only=True)
class AccountErased(DomainEvent):
    """``pseudonym``: HMAC-SHA256 of the account id with the pseudonym key (hex), so trusted
    subscribers can match the ids they hold."""

    pseudonym: str

    PERSONAL: ClassVar[dict[str, str]] = {}

    @property
    def user_id(self) -> str | None:
        """The erased account's id, when the reader could still resolve it (the live projector,
        within the purge window), else None. A reader's note: never stored or published."""
        return self.__dict__.get("_user_id")


class Account(Aggregate):
    """One stream per erased account, at most one event: erasing twice appends nothing."""

    erased = False

    @staticmethod
    def stream_for(pseudonym: str) -> UUID:
        return stream_id("account", pseudonym)

    @classmethod
    def erase(cls, current: Account | None, pseudonym: str, now: datetime) -> Account:
        account = current or cls(cls.stream_for(pseudonym))
        if not account.erased:
            account._record(AccountErased, now, pseudonym=pseudonym)
        return account

    def _apply_AccountErased(self, event: AccountErased) -> None:
        self.erased = True
