"""Creating tables "if not exists" while other processes do the same.

PostgreSQL's "if not exists" is not atomic against a concurrent creator: processes that start
together (compose, scale-out) race on its catalogue, and a loser gets "tuple concurrently
updated", a duplicate key in ``pg_type`` or "relation already exists". Once the winner has
committed, a retry finds everything in place. SQLite never races this way.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from eventsourcing.persistence import IntegrityError, InternalError, ProgrammingError

T = TypeVar("T")
ATTEMPTS = 8
_ALREADY_EXISTS = frozenset({"42P07", "42710"})  # duplicate_table, duplicate_object


def lost_the_race(error: Exception) -> bool:
    """The error another process's concurrent create gives; any other programming error is a bug."""
    if isinstance(error, IntegrityError | InternalError):
        return True
    return isinstance(error, ProgrammingError) and getattr(error.__cause__, "sqlstate", None) in _ALREADY_EXISTS


def create_racing(create: Callable[[], T], *, attempts: int = ATTEMPTS) -> T:
    """``create()``, retried with a growing random pause while it loses the race to another process."""
    attempt = 1
    while True:
        try:
            return create()
        except (IntegrityError, InternalError, ProgrammingError) as error:
            if attempt >= attempts or not lost_the_race(error):
                raise
            time.sleep(random.uniform(0.05, 0.2) * attempt)
            attempt += 1
