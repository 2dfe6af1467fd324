"""Erasure end to end (issue 15, ``../shared/CONTRACT.md`` "Erasure"), on real processes (command
API, projector, query API): ``DELETE /api/v1/account`` forgets the caller in every answer and in
``stories export``, refuses their tokens on both APIs, and keeps the counts that name nobody."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

from tests.e2e.conftest import STORIES
from tests.e2e.read_side import ReadSide

pytestmark = pytest.mark.timeout(240)

S = "/api/v1/stories"
POLL = {"sticker_type": "poll", "poll": {"question": "Tea?", "options": [{"text": "yes"}, {"text": "no"}]}}
QUESTION = {"sticker_type": "question", "question": {"text": "Ask me"}}


def _export(side: ReadSide, *args: str) -> str:
    out = subprocess.run(
        [STORIES, "export", "--no-progress", *args], env=side.env, capture_output=True, timeout=60, cwd=side.data_dir
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    return out.stdout.decode()


def test_an_erased_account_is_forgotten_everywhere(read_side: ReadSide):
    side = read_side
    tag = uuid.uuid4().hex[:6]
    gone, bob, carol = f"gone{tag}", f"bob{tag}", f"carol{tag}"
    # gone's own story, which others see and answer
    own, _ = side.story(gone, privacy="public", text_content=f"secret of {gone}", stickers=[POLL])
    side.view(bob, own)
    side.interact(bob, own, sticker_index=0, option_index=0)
    # bob's story, which gone views, votes on and answers
    bobs, _ = side.story(bob, privacy="public", stickers=[POLL, QUESTION])
    side.view(gone, bobs)
    side.view(carol, bobs)
    side.interact(gone, bobs, sticker_index=0, option_index=1)
    side.interact(gone, bobs, sticker_index=1, text=f"answer by {gone}")
    side.interact(carol, bobs, sticker_index=1, text="carol's answer")
    side.follow(gone, bob)
    side.follow(carol, gone)
    side.write("POST", f"/api/v1/close-friends/{gone}", bob, expect=201)
    side.write("PUT", f"/api/v1/muted/{gone}", carol)
    before = side.read(f"{S}/{bobs}", bob, side.follow(carol, bob)).body

    erased = side.write("DELETE", "/api/v1/account", gone, expect=202)
    at = erased.position
    assert side.command("DELETE", "/api/v1/account", gone).status == 401  # its token: refused at once
    assert side.command("POST", f"{S}/{bobs}/view", gone).status == 401

    # bob's viewers, answers and close friends no longer name gone; the counts stay
    viewers = side.items(f"/api/v1/viewers/story/{bobs}", bob, at)
    assert [v["user_id"] for v in viewers] == [carol]
    answers = side.items(f"/api/v1/viewers/story/{bobs}/answers", bob, at)
    assert [a["text"] for a in answers] == ["carol's answer"]
    assert side.items("/api/v1/close-friends", bob, at) == []
    assert side.items("/api/v1/muted", carol, at) == []
    story = side.read(f"{S}/{bobs}", bob, at).body
    assert story["view_count"] == before["view_count"] == 2
    assert story["stickers"][0]["poll"]["total_votes"] == before["stickers"][0]["poll"]["total_votes"] == 1
    # gone's story is gone for everyone, and from the tray
    assert side.query(f"{S}/{own}", bob, at=at).status == 404
    tray = side.items(f"{S}/feed", carol, at)
    assert gone not in json.dumps(tray)
    assert gone not in json.dumps(side.read(f"{S}/{bobs}", carol, at).body)

    # the query API refuses the token once it has seen the erasure (it looks every second)
    deadline = time.monotonic() + 10
    while side.query(f"{S}/feed", gone).status != 401:
        assert time.monotonic() < deadline, "the query API still takes the erased account's token"
        time.sleep(0.2)

    # the log: nothing names gone or shows what they wrote; their events say "erased"
    exported = _export(side)
    assert gone not in exported and f"secret of {gone}" not in exported
    events = [json.loads(line) for line in exported.splitlines() if line.strip()]
    assert any(e["event_type"] == "AccountErased" for e in events)
    assert any(e.get("erased") for e in events if e["event_type"] == "StoryViewed")
    assert gone not in _export(side, "--format", "csv")
