"""Idempotency-Key support: a retry with the same key and body gets the first answer back.

The first answer is stored as an event of a private stream (derived from the user and the key)
in the same transaction as the command's own events, and after them: either both are stored or
neither, and two concurrent requests with one key conflict on the record's first event. These
records are not domain events: the log readers (projector, relay, export) skip them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import orjson

from domain.aggregate import SELF, Aggregate, DomainEvent
from domain.errors import Conflict
from domain.ids import stream_id

MAX_KEY_LENGTH = 255


def request_fingerprint(method: str, path: str, body: Any) -> str:
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS) if body is not None else b""
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


@dataclass(frozen=True, kw_only=True)
class IdempotentRequestRecorded(DomainEvent):
    PERSONAL: ClassVar[dict[str, str]] = {"user_id": SELF, "body": "user_id"}
    user_id: str
    key: str
    fingerprint: str
    status: int
    body: dict[str, Any] | None


class IdempotencyRecord(Aggregate):
    answer: IdempotentRequestRecorded

    @staticmethod
    def stream_for(user_id: str, key: str):
        return stream_id("idempotency", user_id, key)

    def check_same_request(self, fingerprint: str) -> None:
        if self.answer.fingerprint != fingerprint:
            raise Conflict("this Idempotency-Key was used with another request", code="idempotency_key_reused")

    @classmethod
    def record(
        cls, user_id: str, key: str, fingerprint: str, status: int, body: Any, now: datetime
    ) -> IdempotencyRecord:
        record = cls(cls.stream_for(user_id, key))
        record._record(
            IdempotentRequestRecorded, now, user_id=user_id, key=key, fingerprint=fingerprint, status=status, body=body
        )
        return record

    def _apply_IdempotentRequestRecorded(self, event: IdempotentRequestRecorded) -> None:
        self.answer = event
