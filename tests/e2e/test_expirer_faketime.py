"""The real ``stories expirer --once`` process, run 25 hours in the future with libfaketime.

Stories are written in process (the real write path, the real clock) into a SQLite log under the
test's tmp dir; then ``faketime -f +25h stories expirer --once`` runs with the same settings and
must append exactly one ``StoryExpired`` per story due within 25 h (6, 12 and 24 h stories), none
for the 48 h story or a deleted one; run again, it appends nothing.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from commands import use_cases as uc
from commands.application import StoriesApplication
from commands.event_store import EventStore
from commands.group_commit import GroupCommitter
from commands.models import CreateStory
from domain.platform import Platform

BIN = Path(sys.executable).parent
STORIES = str(BIN / "stories")
SHIFT = "+25h"
SHIFT_S = 25 * 3600
RUN_TIMEOUT_S = 30.0


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment without any STORIES_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORIES_")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture(scope="module")
def faketime() -> str:
    """The faketime wrapper, checked to shift a Python child's wall clock on this machine."""
    path = shutil.which("faketime")
    if path is None:
        pytest.skip(
            "faketime is not installed (not on PATH): `make install` or `apt-get install faketime` "
            "to run the shifted-clock expirer test"
        )
    probe = "import datetime, time; print(time.time()); print(datetime.datetime.now(datetime.timezone.utc).timestamp())"
    before = time.time()
    out = subprocess.run(
        [path, "-f", SHIFT, sys.executable, "-c", probe], capture_output=True, timeout=30, stdin=subprocess.DEVNULL
    )
    after = time.time()
    if out.returncode != 0:
        pytest.skip(f"faketime cannot run Python here (exit {out.returncode}): {out.stderr.decode()[-500:]}")
    child_time, child_now = (float(x) for x in out.stdout.split())
    for seen in (child_time, child_now):
        if not before + SHIFT_S - 5 <= seen <= after + SHIFT_S + 5:
            pytest.skip(
                f"faketime is installed but does not shift Python's clock here (LD_PRELOAD "
                f"ineffective): child saw {seen}, expected about {before + SHIFT_S}"
            )
    return path


def write_stories(url: str) -> tuple[dict[str, int], str]:
    """3 stories each of 6/12/24/48 h and one deleted 6 h story, on the real clock."""
    store = EventStore(url)
    committer = GroupCommitter(store)
    app = StoriesApplication(store, committer, Platform.VIGNETTE)

    async def create(owner: str, hours: int) -> str:
        body = CreateStory(story_type="text", text_content=f"{hours}h", expires_in_hours=hours)
        result, _ = await app.execute(uc.CreateStory(owner, body))
        assert isinstance(result, uc.StoryPosted), result
        return str(result.story_id)

    async def main() -> tuple[dict[str, int], str]:
        plan = [(f"user{i}", h) for i in range(3) for h in (6, 12, 24, 48)]
        ids = await asyncio.gather(*(create(owner, h) for owner, h in plan))
        deleted = await create("user9", 6)
        result, _ = await app.execute(uc.DeleteStory("user9", deleted))
        assert result == uc.Done(), result
        return {story_id: h for story_id, (_, h) in zip(ids, plan)}, deleted

    try:
        return asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        committer.close()
        store.close()


def read_log(url: str) -> list:
    store = EventStore(url)
    try:
        return [logged.event for logged in store.read()]
    finally:
        store.close()


def expirer_once(env: dict[str, str], faketime: str | None) -> str:
    command = [STORIES, "expirer", "--once"]
    if faketime is not None:
        command = [faketime, "-f", SHIFT, *command]
    out = subprocess.run(
        command,
        env=env,
        capture_output=True,
        timeout=RUN_TIMEOUT_S,
        cwd=env["STORIES_DATA_DIR"],
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, (out.returncode, out.stdout.decode()[-2000:], out.stderr.decode()[-2000:])
    return out.stdout.decode()


def expired_count(output: str) -> int:
    match = re.search(r"expired (\d+) stor", output)
    assert match, f"`stories expirer --once` did not say how many it expired: {output!r}"
    return int(match.group(1))


def test_expirer_once_25_hours_later_expires_exactly_the_due_stories(faketime, tmp_path, redis_url, redis_prefix):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    url = f"sqlite:///{data_dir / 'events.sqlite3'}"
    hours_by_story, deleted = write_stories(url)
    created = {e.story_id: e for e in read_log(url) if e.event_type == "StoryCreated"}
    env = clean_env(
        {
            "STORIES_EVENT_STORE_URL": url,
            "STORIES_REDIS_URL": redis_url,
            "STORIES_REDIS_PREFIX": redis_prefix,
            "STORIES_DATA_DIR": str(data_dir),
            "STORIES_JWT_SECRET": "expirer-e2e-secret",
        }
    )

    # on the real clock nothing is due yet
    assert expired_count(expirer_once(env, faketime=None)) == 0
    assert [e for e in read_log(url) if e.event_type == "StoryExpired"] == []

    # 25 hours later: every 6, 12 and 24 h story, once; not the 48 h one, not the deleted one
    due = {story_id for story_id, h in hours_by_story.items() if h <= 24}
    started = datetime.now(UTC)
    assert expired_count(expirer_once(env, faketime)) == len(due) == 9
    expired = [e for e in read_log(url) if e.event_type == "StoryExpired"]
    assert Counter(e.story_id for e in expired) == Counter(dict.fromkeys(due, 1))
    assert deleted not in {e.story_id for e in expired}
    for event in expired:
        assert event.expired_at == created[event.story_id].expires_at  # its due time
        # recorded by the child on its shifted clock
        shifted = event.occurred_at - started
        assert timedelta(hours=25) - timedelta(minutes=1) <= shifted <= timedelta(hours=25, minutes=2), shifted

    # run again: nothing more
    head = len(read_log(url))
    assert expired_count(expirer_once(env, faketime)) == 0
    assert len(read_log(url)) == head
