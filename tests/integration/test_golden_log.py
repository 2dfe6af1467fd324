"""The log's bytes do not change with the code that writes them (issue 12): a history scripted in
``tests/golden_log.py`` was written by the code of commit 4ad57b2 into ``tests/data/golden/``
(``made_by_4ad57b2.py.txt`` is the script), with its ``stories export``.

- The stored log, read by today's code, exports byte for byte what it exported then (the
  envelopes the relay publishes are the same dicts, ``LoggedEvent.envelope``).
- Today's application layer, replaying the same commands with the same seeded ids, keys and
  clock, stores the very same rows (events, keyed stream ids, the key store) and exports the
  same bytes.

Personal data is stored unsealed here (``encrypt=False``): sealed values carry random nonces.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path
from unittest import mock
from uuid import UUID

import orjson

from commands import models
from commands import use_cases as uc
from commands.application import Answer, Idempotency, StoriesApplication
from commands.erasure import erase_account
from commands.event_store import EventStore
from commands.group_commit import GroupCommitter
from commands.idempotency import request_fingerprint
from domain.platform import Platform
from tests import golden_log as g
from write_api.app import answer_body

GOLDEN = Path(__file__).parent.parent / "data" / "golden"
PSEUDONYM_KEY = b"golden-pseudonym-key"

COMMANDS = {
    "follow": uc.Follow,
    "unfollow": uc.Unfollow,
    "mute": uc.Mute,
    "unmute": uc.Unmute,
    "add_close_friend": uc.AddCloseFriend,
    "remove_close_friend": uc.RemoveCloseFriend,
    "create_story": uc.CreateStory,
    "view_story": uc.ViewStory,
    "reply_to_story": uc.ReplyToStory,
    "interact": uc.Interact,
    "navigate": uc.Navigate,
    "share_story": uc.ShareStory,
    "edit_story": uc.EditStory,
    "delete_story": uc.DeleteStory,
    "create_highlight": uc.CreateHighlight,
    "update_highlight": uc.UpdateHighlight,
    "add_highlight_stories": uc.AddHighlightStories,
    "remove_highlight_stories": uc.RemoveHighlightStories,
    "reorder_highlights": uc.ReorderHighlights,
    "delete_highlight": uc.DeleteHighlight,
}
BODIES = {
    "create_story": models.CreateStory,
    "reply_to_story": models.ReplyToStory,
    "interact": models.Interact,
    "navigate": models.Navigate,
    "share_story": models.ShareStory,
    "edit_story": models.EditStory,
    "create_highlight": models.CreateHighlight,
    "update_highlight": models.UpdateHighlight,
    "add_highlight_stories": models.HighlightStories,
    "remove_highlight_stories": models.HighlightStories,
    "reorder_highlights": models.ReorderHighlights,
}


def export(url: str) -> bytes:
    store = EventStore(url, encrypt=False)
    try:
        lines = [orjson.dumps(e.envelope("vignette")) for e in store.read(until=store.head())]
    finally:
        store.close()
    return b"\n".join(lines) + b"\n"


def rows(path: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as db:
        return {
            table: db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
            for table in ("stored_events", "stories_person_keys", "stories_key_meta")
        }


def write_the_history(url: str) -> None:
    gen = g.seeded_uuid4()
    clock = g.Ticking()
    with (
        mock.patch("commands.application.uuid4", gen),
        mock.patch("commands.batch_marker.uuid4", gen),
        mock.patch("os.urandom", g.seeded_urandom()),
        mock.patch("commands.batch_marker.datetime", g.FixedNow),
    ):
        store = EventStore(url, encrypt=False)
        committer = GroupCommitter(store)
        app = StoriesApplication(store, committer, Platform.VIGNETTE, clock=clock, pseudonym_key=PSEUDONYM_KEY)
        try:
            kept: dict[str, str] = {}
            for name, actor, raw, keep in g.STEPS:
                args = g.resolve(raw, kept)
                if name in BODIES and args[-1] is not None:
                    args[-1] = BODIES[name].model_validate(args[-1])
                result, _ = asyncio.run(app.execute(COMMANDS[name](actor, *args)))
                if keep:
                    kept[keep] = str(getattr(result, "story_id", None) or result.highlight_id)
            name, actor, args, key = g.IDEMPOTENT
            fingerprint = request_fingerprint("PUT", f"/api/v1/following/{args[0]}", None)
            for _ in range(2):  # one record: the retry is answered from it
                idem = Idempotency(actor, key, fingerprint, lambda r: Answer(200, answer_body(r)))  # the route's answer
                asyncio.run(app.execute(COMMANDS[name](actor, *args), idem))
            clock.now += timedelta(days=1)
            asyncio.run(app.execute(uc.ExpireStory(UUID(g.resolve(g.EXPIRE, kept)))))
            erase_account(store, PSEUDONYM_KEY, g.ERASE, clock())
        finally:
            committer.close()
            store.close()


def test_the_log_written_before_exports_the_same_bytes(tmp_path):
    shutil.copy(GOLDEN / "events.sqlite3", tmp_path / "events.sqlite3")
    assert export(f"sqlite:///{tmp_path / 'events.sqlite3'}") == (GOLDEN / "export.jsonl").read_bytes()


def test_the_same_history_is_stored_byte_for_byte_as_before(tmp_path):
    path = tmp_path / "events.sqlite3"
    write_the_history(f"sqlite:///{path}")
    assert export(f"sqlite:///{path}") == (GOLDEN / "export.jsonl").read_bytes()
    golden, ours = rows(GOLDEN / "events.sqlite3"), rows(path)
    for table in golden:
        assert ours[table] == golden[table], table
