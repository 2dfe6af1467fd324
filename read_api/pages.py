"""Pages and their cursors.

Every list answer is ``{"items": [...], "next_cursor": "<opaque>" | null}``. A cursor is the
position after the last item served (a sort key), signed with HMAC-SHA256 and bound to the list
it came from and to the caller, so a client can neither craft one nor use another list's or
another user's: any such cursor is a 422, never a 5xx.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson

from domain.errors import InvalidInput

DEFAULT_LIMIT, MAX_LIMIT = 20, 100
_TAG_BYTES = 16


def page(items: list, next_cursor: str | None) -> dict[str, Any]:
    return {"items": items, "next_cursor": next_cursor}


def invalid_cursor() -> InvalidInput:
    return InvalidInput(
        "cursor is not one this API gave out for this list", details=[{"field": "cursor", "message": "invalid"}]
    )


class Cursors:
    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"stories page cursors\0" + secret).digest()

    def _tag(self, scope: bytes, payload: bytes) -> bytes:
        return hmac.new(self._key, scope + b"\0" + payload, hashlib.sha256).digest()[:_TAG_BYTES]

    def encode(self, scope: str, *position: Any) -> str:
        """``scope`` names the list and the caller (for example ``"viewers:<story>:<user>"``)."""
        payload = orjson.dumps(position)
        raw = self._tag(scope.encode(), payload) + payload
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def decode(self, scope: str, cursor: str) -> list[Any]:
        try:
            raw = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4))
        except (ValueError, UnicodeEncodeError):
            raise invalid_cursor() from None
        tag, payload = raw[:_TAG_BYTES], raw[_TAG_BYTES:]
        if len(tag) != _TAG_BYTES or not hmac.compare_digest(tag, self._tag(scope.encode(), payload)):
            raise invalid_cursor()
        return orjson.loads(payload)
