"""Deterministic stream ids.

Each (story, user, interaction) gets its own small stream whose id is derived from its parts, so a
command finds it without an index and "one vote per user" is a uniqueness check on the stream's
first event, whatever the story's size.
"""

from __future__ import annotations

import re
from functools import lru_cache
from uuid import UUID, uuid5

NAMESPACE = UUID("6f1c7a52-2f0e-5d3e-9a57-4b0c2f5e8d11")

USER_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
_USER_ID = re.compile(USER_ID_PATTERN)


def is_user_id(value: object) -> bool:
    return isinstance(value, str) and _USER_ID.fullmatch(value) is not None


@lru_cache(maxsize=1 << 16)  # the same user's streams come up again and again
def stream_id(kind: str, *parts: object) -> UUID:
    return uuid5(NAMESPACE, "/".join([kind, *map(str, parts)]))


# The spellings of one UUID we accept (RFC 9562 / Python's own forms): 32 hex digits, bare or
# hyphenated 8-4-4-4-12, optionally in braces or after ``urn:uuid:``, any letter case.
_UUID_SPELLING = re.compile(
    r"(?:urn:uuid:)?(\{)?([0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12})(?(1)\})",
    re.IGNORECASE,
)


def canonical_id(value: object) -> str | None:
    """A story or highlight id in its canonical form (lower case, hyphenated), or None when
    ``value`` is not a spelling of a UUID. Every id is canonicalised at the edge, so the log
    and the read models hold one spelling and lookups by any spelling meet."""
    if not isinstance(value, str):
        return None
    match = _UUID_SPELLING.fullmatch(value)
    if match is None:
        return None
    return str(UUID(hex=match.group(2).replace("-", "")))
