"""Concurrent commands against the real process: once-per-user rules and Idempotency-Key hold
when every request arrives at once (they land in the same group-commit batches)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import aiohttp
import pytest

pytestmark = pytest.mark.timeout(60)

S = "/api/v1/stories"
TIMEOUT = aiohttp.ClientTimeout(total=30)


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=TIMEOUT)


async def post(http: aiohttp.ClientSession, api, path: str, user: str, body: dict, headers: dict | None = None):
    hdrs = {"Authorization": f"Bearer {api.token(user)}", **(headers or {})}
    async with http.post(api.base_url + path, json=body, headers=hdrs) as resp:
        return resp.status, await resp.json(), resp.headers.get("X-Stories-Position")


async def test_100_users_vote_twice_at_once(api):
    owner = f"owner-{uuid.uuid4().hex[:8]}"
    poll = {
        "sticker_type": "poll",
        "poll": {"question": "Tea or coffee?", "options": [{"text": "tea"}, {"text": "coffee"}, {"text": "both"}]},
    }
    voters = [f"voter-{uuid.uuid4().hex[:8]}-{i}" for i in range(100)]
    async with session() as http:
        status, body, _ = await post(
            http,
            api,
            S,
            owner,
            {"story_type": "text", "text_content": "vote!", "privacy": "public", "stickers": [poll]},
        )
        assert status == 201, body
        story = body["story_id"]
        path = f"{S}/{story}/interact"
        requests = [
            post(http, api, path, voter, {"sticker_index": 0, "option_index": (i + n) % 3})
            for i, voter in enumerate(voters)
            for n in range(2)
        ]
        answers = await asyncio.wait_for(asyncio.gather(*requests), timeout=45)

    statuses = Counter(status for status, _, _ in answers)
    assert statuses == {200: 100, 409: 100}, statuses
    per_voter = Counter()
    for (status, body, position), voter in zip(answers, [v for v in voters for _ in range(2)]):
        if status == 200:
            per_voter[voter] += 1
            assert body["position"] == int(position) and body["sticker_type"] == "poll"
        else:
            assert body["error"]["code"] == "already_voted", body
    assert set(per_voter.values()) == {1} and len(per_voter) == 100
    accepted_positions = [body["position"] for status, body, _ in answers if status == 200]
    assert len(set(accepted_positions)) == 100, "two accepted votes share one log position"

    votes = [e for e in api.export() if e["event_type"] == "PollVoted" and e["data"]["story_id"] == story]
    assert len(votes) == 100
    assert sorted(e["data"]["user_id"] for e in votes) == sorted(voters)
    assert sorted(e["position"] for e in votes) == sorted(accepted_positions)


async def one_key_burst(api, http, user: str, n: int = 50, filler: int = 0):
    """``n`` identical keyed creates by ``user`` at once, after ``filler`` unrelated creates that
    keep the writer busy (so the keyed ones queue up and share group-commit batches)."""
    key = {"Idempotency-Key": f"same-{uuid.uuid4()}"}
    body = {"story_type": "text", "text_content": "only once", "privacy": "public"}
    others = [post(http, api, S, f"filler-{i}", {"story_type": "text", "text_content": "busy"}) for i in range(filler)]
    keyed = [post(http, api, S, user, body, key) for _ in range(n)]
    answers = await asyncio.wait_for(asyncio.gather(*others, *keyed), timeout=45)
    assert all(status == 201 for status, _, _ in answers[:filler])
    return answers[filler:]


async def test_50_concurrent_requests_with_one_idempotency_key_append_once(api):
    user = f"retrier-{uuid.uuid4().hex[:8]}"
    async with session() as http:
        answers = await one_key_burst(api, http, user)

    created = [e for e in api.export() if e["event_type"] == "StoryCreated" and e["data"]["user_id"] == user]
    assert len(created) == 1, f"{len(created)} stories appended for one Idempotency-Key"
    assert Counter(status for status, _, _ in answers) == {201: 50}
    assert {(body["story_id"], body["expires_at"]) for _, body, _ in answers} == {
        (created[0]["stream_id"], created[0]["data"]["expires_at"])
    }
    assert created[0]["position"] in {body["position"] for _, body, _ in answers}


async def test_50_concurrent_requests_with_one_idempotency_key_answer_identically(api):
    async with session() as http:
        for round_ in range(3):  # the race needs shared batches: a busy writer makes them near certain
            user = f"retrier-{uuid.uuid4().hex[:8]}"
            answers = await one_key_burst(api, http, user, filler=100)
            distinct = Counter((status, tuple(sorted(body.items())), position) for status, body, position in answers)
            assert len(distinct) == 1, f"round {round_}: answers differ: {distinct}"
    created = [e for e in api.export() if e["event_type"] == "StoryCreated" and e["data"]["user_id"] == user]
    assert answers[0][1]["position"] == created[0]["position"]


# -- limits under concurrency ------------------------------------------------------------------

LIVE_LIMIT = 3


async def create_at_once(targets, user: str) -> list[tuple[int, dict, str | None]]:
    """One create per command API in ``targets``, all sent together."""
    async with session() as http:
        body = {"story_type": "text", "text_content": "race", "privacy": "public"}
        return await asyncio.wait_for(asyncio.gather(*(post(http, t, S, user, body) for t in targets)), timeout=30)


def one_won(answers) -> None:
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [201, 409], answers
    [(_, lost, _)] = [a for a in answers if a[0] == 409]
    assert lost["error"]["code"] == "limit_reached", lost
    assert lost["error"]["details"] == {"limit": LIVE_LIMIT, "kind": "live_stories"}, lost


async def fill_to(api, user: str, count: int) -> None:
    async with session() as http:
        for _ in range(count):
            status, body, _ = await post(http, api, S, user, {"story_type": "text", "text_content": "x"})
            assert status == 201, body


async def test_two_creates_for_the_last_live_slot_one_process(start_command_api):
    api = start_command_api(rate_limit_per_s=0, limit_live_stories=LIVE_LIMIT)
    for _ in range(3):
        user = f"racer-{uuid.uuid4().hex[:8]}"
        await fill_to(api, user, LIVE_LIMIT - 1)
        one_won(await create_at_once([api, api], user))
    created = Counter(e["data"]["user_id"] for e in api.export() if e["event_type"] == "StoryCreated")
    assert set(created.values()) == {LIVE_LIMIT}


async def test_two_creates_for_the_last_live_slot_two_processes_one_log(start_command_api, tmp_path):
    """Two command API processes on one log: their group committers conflict on the author's
    live-stories record and the loser re-runs alone, against fresh state."""
    url = f"sqlite:///{tmp_path / 'shared' / 'events.sqlite3'}"
    first = start_command_api(rate_limit_per_s=0, limit_live_stories=LIVE_LIMIT, event_store_url=url)
    second = start_command_api(rate_limit_per_s=0, limit_live_stories=LIVE_LIMIT, event_store_url=url)
    users = []
    for _ in range(5):
        user = f"racer-{uuid.uuid4().hex[:8]}"
        users.append(user)
        await fill_to(first, user, LIVE_LIMIT - 1)
        one_won(await create_at_once([first, second], user))
    created = Counter(e["data"]["user_id"] for e in first.export() if e["event_type"] == "StoryCreated")
    assert [created[u] for u in users] == [LIVE_LIMIT] * len(users)
