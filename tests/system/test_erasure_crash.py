"""Erasure survives a crash at any point (``../shared/CONTRACT.md``, "Erasure").

A real process (the repo's Python) runs ``erase_account`` on a SQLite log this test prepared,
with one step of the erasure patched to kill the process there (``os._exit(9)``): inside the
key store's transaction before it commits, after the key is destroyed, after ``AccountErased``
is appended, after the erasure is marked announced. The test checks that the process died at that
point and what the log and the key store hold then, recovers (``stories erase USER --yes`` as a
new process, or ``finish_erasures`` as a restarted command API does) and checks that the end state
is the same whatever the kill point, and the same as an erasure that never crashed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import orjson
import pytest

from commands.erasure import finish_erasures
from commands.event_store import EventStore
from commands.personal_data import pseudonym
from domain.engagement import StoryReplies, StoryView
from domain.limits import FOLLOWS, Tally
from domain.platform import Platform
from domain.social import Follow
from domain.stories import Story
from domain.visibility import Relationship

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STORIES = str(BIN / "stories")
KEY = "crash-test pseudonym key"
ALICE, BOB = "alice.erased", "bob.stays"
ALICE_TEXT, ALICE_REPLY, BOB_TEXT = "txt:alice's lake photo", "txt:alice: lovely", "txt:bob's own story"
NAME = pseudonym(KEY.encode(), ALICE)
KILLED = 9
NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)

# The child: patch one step of the erasure to kill the process right there, then erase.
CHILD = textwrap.dedent("""
    import os, sys
    from contextlib import contextmanager
    from datetime import datetime, timezone

    from commands import erasure, event_store, personal_data
    from domain.accounts import AccountErased

    point, url, user, key = sys.argv[1:5]

    def die():
        sys.stdout.write(f"killed at {point}\\n")
        sys.stdout.flush()
        os._exit(9)

    if point == "inside-erase-transaction":
        # the key's UPDATE has run in the erase's transaction, which has not committed
        original_transaction = personal_data._Sql.transaction

        @contextmanager
        def transaction(self, commit):
            with original_transaction(self, commit) as cursor:
                class Cursor:
                    def __getattr__(self, name):
                        return getattr(cursor, name)

                    def execute(self, sql, *args):
                        result = cursor.execute(sql, *args)
                        if sql.lstrip().startswith("UPDATE") and "wrapped = NULL" in sql:
                            die()
                        return result

                yield Cursor()

        personal_data._Sql.transaction = transaction
    elif point == "after-key-erased":
        original_erase = personal_data.KeyStore.erase

        def erase(self, *args, **kwargs):
            original_erase(self, *args, **kwargs)
            die()

        personal_data.KeyStore.erase = erase
    elif point == "after-account-erased-appended":
        original_append = event_store.EventStore.append

        def append(self, events):
            positions = original_append(self, events)
            if any(isinstance(e, AccountErased) for e in events):
                die()
            return positions

        event_store.EventStore.append = append
    elif point == "after-announced":
        original_mark = personal_data.KeyStore.mark_announced

        def mark_announced(self, *args, **kwargs):
            original_mark(self, *args, **kwargs)
            die()

        personal_data.KeyStore.mark_announced = mark_announced
    elif point != "none":
        raise SystemExit(f"unknown kill point {point}")

    store = event_store.EventStore(url)
    position = erasure.erase_account(store, key.encode(), user, datetime.now(timezone.utc))
    store.close()
    print(f"erased at {position}")
""")


def prepare_log(path: Path) -> str:
    """A log where Alice and Bob write, view, reply and follow each other."""
    url = f"sqlite:///{path}"
    store = EventStore(url)
    friends = Relationship(follows_owner=True, followed_by_owner=True)
    alice_story = Story.create(
        uuid4(), ALICE, {"story_type": "text", "text_content": ALICE_TEXT, "privacy": "public"}, Platform.VIGNETTE, NOW
    )
    bob_story = Story.create(
        uuid4(),
        BOB,
        {"story_type": "text", "text_content": BOB_TEXT, "privacy": "custom", "allowed_viewer_ids": [ALICE]},
        Platform.VIGNETTE,
        NOW,
    )
    store.append(alice_story.collect_events() + bob_story.collect_events())
    later = NOW + timedelta(minutes=1)
    tally = Tally.open(None, FOLLOWS, ALICE)
    events = []
    for aggregate in (
        StoryView.view(None, alice_story, BOB, friends, later),
        StoryReplies.reply(None, bob_story, ALICE, ALICE_REPLY, friends, Platform.VIGNETTE, later),
        Follow.follow(None, ALICE, BOB, later, tally, 100),
        tally,
        Follow.follow(None, BOB, ALICE, later),
    ):
        events += aggregate.collect_events()
    store.append(events)
    store.close()
    return url


def copy_log(source: Path, target: Path) -> str:
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")
    return f"sqlite:///{target}"


def run_child(tmp_path: Path, point: str, url: str) -> subprocess.CompletedProcess:
    script = tmp_path / "erase_child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(script), point, url, ALICE, KEY],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def stories_erase(url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORIES_")}
    env.update(STORIES_EVENT_STORE_URL=url, STORIES_PSEUDONYM_KEY=KEY, PYTHONPATH=str(REPO))
    return subprocess.run(
        [STORIES, "erase", ALICE, "--yes"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def state(url: str) -> dict:
    """What a fresh process finds: the log's events (as exported), the key store's view."""
    store = EventStore(url)
    try:
        envelopes = [e.envelope("vignette") for e in store.read()]
        erased = [e for e in envelopes if e["event_type"] == "AccountErased"]
        return {
            "key_destroyed": bool(store.keys.erased_since("")),
            "key_row": store.keys.for_reading(store.keys.kid(ALICE)) is not None,
            "account_erased": [(e["position"], e["data"]["pseudonym"]) for e in erased],
            "unannounced": store.keys.unannounced(),
            "erased_since": store.keys.erased_since(""),
            "text": orjson.dumps(envelopes).decode(),
            # the log as an export shows it, but the erasure's own time
            "log": [
                (e["event_type"], e["stream_id"], e["stream_version"], e["data"], e.get("erased", False))
                for e in envelopes
            ],
        }
    finally:
        store.close()


# after the kill: (key destroyed, AccountErased appended, still unannounced)
AT_THE_KILL = {
    "inside-erase-transaction": (False, False, False),
    "after-key-erased": (True, False, True),
    "after-account-erased-appended": (True, True, True),
    "after-announced": (True, True, False),
}
CASES = [
    (point, recovery)
    for point in AT_THE_KILL
    for recovery in ("stories-erase", "finish-erasures")
    if not (point == "inside-erase-transaction" and recovery == "finish-erasures")
]


@pytest.fixture
def prepared(tmp_path) -> tuple[Path, dict]:
    """The prepared log, and the end state of an erasure of Alice that never crashed (on a copy)."""
    log = tmp_path / "events.sqlite3"
    prepare_log(log)
    reference_url = copy_log(log, tmp_path / "reference.sqlite3")
    done = run_child(tmp_path, "none", reference_url)
    assert done.returncode == 0, done.stderr
    return log, state(reference_url)


@pytest.mark.parametrize("point,recovery", CASES, ids=[f"{p}-then-{r}" for p, r in CASES])
def test_a_crash_at_any_step_of_erasure_ends_in_the_same_state(tmp_path, prepared, point, recovery):
    log, reference = prepared
    url = f"sqlite:///{log}"
    before = state(url)
    assert ALICE_TEXT in before["text"] and not before["key_destroyed"]

    killed = run_child(tmp_path, point, url)
    assert killed.returncode == KILLED, (killed.returncode, killed.stdout, killed.stderr)
    assert killed.stdout.strip() == f"killed at {point}", killed.stdout  # died where chosen, nowhere else
    key_destroyed, appended, unannounced = AT_THE_KILL[point]
    now = state(url)
    assert now["key_destroyed"] is key_destroyed and now["key_row"] is not key_destroyed
    assert len(now["account_erased"]) == int(appended)
    assert now["unannounced"] == ([NAME] if unannounced else [])
    if key_destroyed:
        assert ALICE not in now["text"] and ALICE_TEXT not in now["text"] and ALICE_REPLY not in now["text"]
    else:  # rolled back: nothing of the erasure happened
        assert now["log"] == before["log"] and now["erased_since"] == []
        assert ALICE_TEXT in now["text"]

    if recovery == "stories-erase":
        rerun = stories_erase(url)
        assert rerun.returncode == 0, rerun.stderr
        position = int(rerun.stdout.strip().rsplit(" ", 1)[1])
    else:  # a command API restarting: announces what the crash left unannounced
        store = EventStore(url)
        announced = finish_erasures(store, datetime.now(UTC))
        assert len(announced) == int(unannounced)
        assert finish_erasures(store, datetime.now(UTC)) == []
        position = store.head()
        store.close()

    after = state(url)
    [(erased_at, name)] = after["account_erased"]
    assert name == NAME and erased_at == position
    assert after["key_destroyed"] and not after["key_row"] and after["unannounced"] == []
    assert [n for n, _ in after["erased_since"]] == [NAME]
    if key_destroyed:  # the first erasure's time is kept
        assert after["erased_since"] == now["erased_since"]
    for secret in (ALICE, ALICE_TEXT, ALICE_REPLY):
        assert secret not in after["text"]
    assert BOB in after["text"] and BOB_TEXT in after["text"]
    # the same as an erasure that never crashed
    assert after["log"] == reference["log"]
    # and running it once more changes nothing
    again = stories_erase(url)
    assert again.returncode == 0 and int(again.stdout.strip().rsplit(" ", 1)[1]) == position
    assert state(url)["log"] == after["log"]


def test_the_reference_erasure_forgets_alice(tmp_path, prepared):
    """The uncrashed end state itself: one AccountErased, Alice's fields null and flagged."""
    _, reference = prepared
    assert [name for _, name in reference["account_erased"]] == [NAME]
    assert reference["key_destroyed"] and reference["unannounced"] == []
    flagged = {t for t, _, _, _, erased in reference["log"] if erased}
    assert flagged == {"StoryCreated", "StoryViewed", "StoryReplied", "UserFollowed"}
    assert ALICE not in reference["text"] and ALICE_TEXT not in reference["text"]
