"""Command API processes that conflict (issue 11 item 16): two processes on one log (SQLite and
PostgreSQL), and ``STORIES_COMMAND_WORKERS=2`` (two processes on one port), each sent the same
user's vote on one poll at once, many times over, amid views and keyed creates. Each process's
group committer batches its own commands; the later batch fails on the log's uniqueness check and
its commands re-run alone against fresh state. The loser must get 409, never a 5xx, and the log
(read back with ``stories export``) must hold every accepted command exactly once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import aiohttp
import pytest

pytestmark = pytest.mark.timeout(240)

S = "/api/v1/stories"
TIMEOUT = aiohttp.ClientTimeout(total=60)
ROUNDS = 12
VOTERS = 16  # per round; each sends one vote to every target at once, and one view
POLL = {
    "sticker_type": "poll",
    "poll": {"question": "Tea or coffee?", "options": [{"text": "tea"}, {"text": "coffee"}, {"text": "both"}]},
}


async def post(
    http: aiohttp.ClientSession, api, path: str, user: str, body: dict | None = None, headers: dict | None = None
) -> tuple[int, dict, str | None]:
    hdrs = {"Authorization": f"Bearer {api.token(user)}", **(headers or {})}
    async with http.post(api.base_url + path, json=body, headers=hdrs) as resp:
        try:
            answer = await resp.json(content_type=None)
        except ValueError:
            answer = {"raw": await resp.text()}
        return resp.status, answer, resp.headers.get("X-Stories-Position")


async def race(targets: list, tag: str) -> dict:
    """ROUNDS rounds: a poll story, then every voter's vote sent to each target at once, each
    voter's view (to one target) and one Idempotency-Key create sent to each target at once."""
    stories, votes, views, keyed = [], [], [], []
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=True), timeout=TIMEOUT
    ) as http:
        for round_ in range(ROUNDS):
            owner = f"owner-{tag}-{round_}"
            status, body, _ = await post(
                http,
                targets[0],
                S,
                owner,
                {"story_type": "text", "text_content": "vote!", "privacy": "public", "stickers": [POLL]},
            )
            assert status == 201, body
            story = body["story_id"]
            stories.append(story)
            voters = [f"voter-{tag}-{round_}-{i}" for i in range(VOTERS)]
            vote_path, view_path = f"{S}/{story}/interact", f"{S}/{story}/view"
            key = {"Idempotency-Key": f"once-{uuid.uuid4()}"}
            requests = (
                [
                    post(http, t, vote_path, v, {"sticker_index": 0, "option_index": (i + n) % 3})
                    for i, v in enumerate(voters)
                    for n, t in enumerate(targets)
                ]
                + [post(http, targets[i % len(targets)], view_path, v) for i, v in enumerate(voters)]
                + [post(http, t, S, owner, {"story_type": "text", "text_content": "keyed"}, key) for t in targets]
            )
            answers = await asyncio.wait_for(asyncio.gather(*requests), timeout=90)
            n_votes = len(voters) * len(targets)
            votes += [(story, v, a) for (v, a) in zip([v for v in voters for _ in targets], answers[:n_votes])]
            views += [(story, v, a) for v, a in zip(voters, answers[n_votes : n_votes + len(voters)])]
            keyed.append((owner, answers[n_votes + len(voters) :]))
    return {"stories": stories, "votes": votes, "views": views, "keyed": keyed}


def check(outcome: dict, events: list[dict], n_targets: int) -> None:
    every = [a for _, _, a in outcome["votes"] + outcome["views"]] + [a for _, group in outcome["keyed"] for a in group]
    statuses = Counter(status for status, _, _ in every)
    assert set(statuses) <= {200, 201, 202, 409}, f"not 200/201/202/409: {statuses}; e.g. " + repr(
        [a for a in every if a[0] not in (200, 201, 202, 409)][:3]
    )

    # one vote per voter accepted, every other answer 409 already_voted
    per_voter: dict[tuple[str, str], list] = {}
    for story, voter, answer in outcome["votes"]:
        per_voter.setdefault((story, voter), []).append(answer)
    accepted = {}
    for (story, voter), answers in per_voter.items():
        assert sorted(s for s, _, _ in answers) == [200] + [409] * (n_targets - 1), (voter, answers)
        for status, body, position in answers:
            if status == 409:
                assert body["error"]["code"] == "already_voted", body
            else:
                assert body["position"] == int(position)
                accepted[(story, voter)] = body["position"]
    assert len(set(accepted.values())) == len(accepted), "two accepted votes share one log position"
    for _, voter, (status, body, _) in outcome["views"]:
        assert status == 202 and body["counted"] is True, (voter, body)

    # the log holds each accepted command once
    stories = set(outcome["stories"])
    voted = Counter(
        (e["data"]["story_id"], e["data"]["user_id"])
        for e in events
        if e["event_type"] == "PollVoted" and e["data"]["story_id"] in stories
    )
    assert voted == Counter(accepted.keys()), "votes stored other than once per accepted vote"
    stored_at = {
        (e["data"]["story_id"], e["data"]["user_id"]): e["position"]
        for e in events
        if e["event_type"] == "PollVoted" and e["data"]["story_id"] in stories
    }
    assert stored_at == accepted
    viewed = Counter(
        (e["data"]["story_id"], e["data"]["viewer_id"])
        for e in events
        if e["event_type"] == "StoryViewed" and e["data"]["story_id"] in stories
    )
    assert viewed == Counter((s, v) for s, v, _ in outcome["views"]), "views stored other than once per request"
    created = Counter(e["data"]["user_id"] for e in events if e["event_type"] == "StoryCreated")
    for owner, answers in outcome["keyed"]:
        assert [s for s, _, _ in answers] == [201] * n_targets, answers
        assert len({(b["story_id"], b["position"]) for _, b, _ in answers}) == 1, answers  # one first answer
        assert created[owner] == 2, (owner, created[owner])  # the poll story and one keyed create


def metric(api, name: str) -> float:
    resp = api.get("/metrics")
    assert resp.status == 200, resp
    [value] = [float(line.split()[-1]) for line in resp.raw.decode().splitlines() if line.startswith(name + " ")]
    return value


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_two_processes_on_one_log_take_the_same_votes_at_once(start_command_api, tmp_path, request, backend):
    url = (
        f"sqlite:///{tmp_path / 'shared' / 'events.sqlite3'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_schema_url")
    )
    first = start_command_api(rate_limit_per_s=0, event_store_url=url)
    second = start_command_api(rate_limit_per_s=0, event_store_url=url)
    outcome = await race([first, second], uuid.uuid4().hex[:8])
    check(outcome, first.export(), 2)
    for api in (first, second):
        assert api.process.poll() is None and "Traceback" not in api.log(), api.log()
    # the race really went through the cross-process path: appends the log refused, re-run alone
    assert sum(metric(api, "stories_group_commit_conflicts") for api in (first, second)) > 0


async def test_command_workers_on_one_port_take_the_same_votes_at_once(start_command_api):
    """STORIES_COMMAND_WORKERS=2: two processes share the port; the kernel spreads connections
    over them, so the two votes of a voter land in one process or in both."""
    api = start_command_api(rate_limit_per_s=0, command_workers=2)
    deadline = time.monotonic() + 15
    while api.log().count("command API on") < 2:  # each worker logs it just before it binds the port
        assert time.monotonic() < deadline and api.process.poll() is None, api.log()
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    outcome = await race([api, api], uuid.uuid4().hex[:8])
    check(outcome, api.export(), 2)
    assert api.process.poll() is None and "Traceback" not in api.log(), api.log()
