"""A scripted history that touches every kind of command, for the byte-identity test of the log
(``tests/integration/test_golden_log.py``): the stored events and the exported envelopes must
not change when the code that writes them is refactored.

``tests/data/golden/`` holds the log this history made with the code of commit 4ad57b2 (before
the use-case commands of ``commands/use_cases.py``), and that log's ``stories export``. The
history is data, so the old and the new application layer replay the very same commands; ids
and times come from a seeded generator and a clock that ticks one second per command.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

START = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SEED = 20261130

POLL = {"sticker_type": "poll", "poll": {"question": "Tea?", "options": [{"text": "yes"}, {"text": "no"}]}}
QUIZ = {
    "sticker_type": "quiz",
    "quiz": {"question": "2+2?", "options": [{"text": "3"}, {"text": "4"}], "correct_answer_index": 1},
}
QUESTION = {"sticker_type": "question", "question": {"text": "Ask me anything"}}
SLIDER = {"sticker_type": "slider", "slider": {"question": "How hot?", "emoji": "🔥", "min_value": 0, "max_value": 10}}
COUNTDOWN = {"sticker_type": "countdown", "countdown": {"title": "Launch", "end_time": "2026-12-01T12:00:00+00:00"}}
MENTION = {"sticker_type": "mention", "mention": {"user_id": "bob"}}

# (use case, actor, arguments after the actor, name to keep the new id under). "$name" is an id kept earlier.
STEPS: list[tuple[str, str, list[Any], str | None]] = [
    ("follow", "bob", ["alice"], None),
    ("follow", "carol", ["alice"], None),
    ("follow", "alice", ["bob"], None),
    ("add_close_friend", "alice", ["carol"], None),
    ("mute", "dave", ["alice"], None),
    (
        "create_story",
        "alice",
        [{"story_type": "text", "text_content": "hello", "privacy": "public", "stickers": [POLL, QUIZ, QUESTION]}],
        "s1",
    ),
    (
        "create_story",
        "alice",
        [{"story_type": "text", "text_content": "more", "privacy": "followers", "stickers": [SLIDER, COUNTDOWN]}],
        "s2",
    ),
    (
        "create_story",
        "alice",
        [{"story_type": "image", "media_url": "https://cdn.example.org/a.jpg", "privacy": "close_friends"}],
        "s3",
    ),
    ("create_story", "bob", [{"story_type": "text", "text_content": "bob's", "stickers": [MENTION]}], "s4"),
    ("view_story", "bob", ["$s1"], None),
    ("view_story", "carol", ["$s1"], None),
    ("view_story", "carol", ["$s3"], None),
    ("reply_to_story", "bob", ["$s1", {"text": "nice"}], None),
    ("interact", "bob", ["$s1", {"sticker_index": 0, "option_index": 1}], None),
    ("interact", "carol", ["$s1", {"sticker_index": 1, "option_index": 1}], None),
    ("interact", "bob", ["$s1", {"sticker_index": 2, "text": "why?"}], None),
    ("interact", "bob", ["$s2", {"sticker_index": 0, "value": 0.7}], None),
    ("interact", "carol", ["$s2", {"sticker_index": 1, "action": "follow"}], None),
    ("navigate", "bob", ["$s1", {"action": "tap_forward"}], None),
    ("share_story", "bob", ["$s1", None], "r1"),
    ("edit_story", "alice", ["$s2", {"text_content": "edited", "background_color": "#112233"}], None),
    ("create_highlight", "alice", [{"title": "Best", "story_ids": ["$s1"]}], "h1"),
    ("create_highlight", "alice", [{"title": "More", "story_ids": ["$s2"], "is_pinned": True}], "h2"),
    ("update_highlight", "alice", ["$h1", {"title": "Best of", "description": "the best"}], None),
    ("add_highlight_stories", "alice", ["$h1", {"story_ids": ["$s3"]}], None),
    ("remove_highlight_stories", "alice", ["$h1", {"story_ids": ["$s3"]}], None),
    ("reorder_highlights", "alice", [{"highlight_ids": ["$h2", "$h1"]}], None),
    ("delete_highlight", "alice", ["$h2"], None),
    ("delete_story", "bob", ["$s4"], None),
    ("remove_close_friend", "alice", ["carol"], None),
    ("unmute", "dave", ["alice"], None),
    ("unfollow", "carol", ["alice"], None),
]
IDEMPOTENT = ("follow", "erin", ["alice"], "key-1")  # run twice with one Idempotency-Key: one record
EXPIRE = "$s3"  # a day later, the expirer's command
ERASE = "dave"  # last: the account erasure


def seeded_uuid4() -> Any:
    """``uuid4`` from a seeded generator: the same ids on every run."""
    rng = random.Random(SEED)
    return lambda: uuid.UUID(int=rng.getrandbits(128), version=4)


def seeded_urandom() -> Any:
    """``os.urandom`` from a seeded generator: the same keys, secrets and nonces on every run."""
    rng = random.Random(SEED + 1)
    return lambda n: rng.randbytes(n)


class FixedNow:
    """Stands in for ``datetime`` where the code reads the wall clock (the batch markers)."""

    @staticmethod
    def now(tz: Any = None) -> datetime:
        return START


class Ticking:
    """A clock that moves one second per read."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def resolve(value: Any, kept: dict[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        return kept[value[1:]]
    if isinstance(value, list):
        return [resolve(v, kept) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, kept) for k, v in value.items()}
    return value
