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
