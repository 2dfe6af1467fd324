"""The soak, small: storage returns to its level once the stories are gone.

The real processes (command API, query API, projector, expirer) on fresh embedded servers, on
one simulated clock (``STORIES_SIMULATED_CLOCK``, dev mode) running thousands of times faster
than real time, driven over HTTP by the soak benchmark's driver (``bench/soak.py``): a few dozen
users follow each other and name close friends; then two waves of stories (poll, quiz, question,
slider, countdown stickers; public, followers, close-friends and custom audiences) with views,
votes, answers, replies, a few deletes and highlights. The first wave's stories live 6 to 48 h,
the second's 6 or 12 h. After each wave, once every story it posted has expired (the expirer
appended StoryExpired on its own) and the read models reached the log head:

* Redis: the keys under the run's prefix are back to the count measured right after the social
  graph was set up, give or take one key per user (per-user state is bounded by the population,
  not by history). The second wave leaves no more keys and no more bytes (``MEMORY USAGE`` over
  the prefix's keys, ±10 %) than the first: per-story state does not accumulate.
* MongoDB: grows only by permanent documents, at most one per accepted command or expired story,
  and the second wave (the same number of stories, shorter lives) adds no more than the first.
* Nothing grows while the service idles for simulated hours.

Structure only, never a time: the key names are the view's business (keys are counted with
``SCAN MATCH <prefix>*``), and the schedule only paces the load.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import pytest

from bench.soak import Driver, S, SoakStack, Traffic
from projections.redis_views import DEFAULT_GRACE, STAMP_LIFE_MS

pytestmark = pytest.mark.timeout(180)

SCALE = 6000.0  # simulated seconds per real second: one simulated hour = 0.6 s
USERS = 30
TRAFFIC = Traffic(
    follows_per_user=8,
    close_friends_per_user=3,
    posts_per_user=6.0,  # per simulated day, while a wave posts: ~7.5 stories an hour
    views_per_story=5.0,
    interactions_per_story=3.0,
    replies_per_story=0.5,
    feed_reads_per_user=2.0,
    story_reads_per_story=0.5,
    owner_reads_per_story=0.5,
    other_reads_per_user=0.5,
    follow_changes=0.0,
    close_friend_changes=0.0,
    deletes=8.0,
    highlight_writes=12.0,
)
POSTING_HOURS = 8
SETTLE_TIMEOUT_S = 60.0


DEFAULT_GRACE_MS = int(DEFAULT_GRACE.total_seconds() * 1000)


def redis_figures(stack: SoakStack) -> dict[str, int]:
    """Keys and bytes under the prefix, less ended stories' stamps, which are bounded by age in real
    time (checked here), not by the simulated clock the soak runs on."""
    stats = stack.redis_stats(memory_per_key=True)
    assert stats["story_stamps_longest_ttl_ms"] <= STAMP_LIFE_MS + DEFAULT_GRACE_MS, stats
    return {"keys": stats["prefix_keys"], "bytes": stats["prefix_key_bytes"]}


def mongo_documents(stack: SoakStack) -> int:
    return stack.mongo_stats()["documents"]


async def wave(stack: SoakStack, driver: Driver, lifetimes: tuple[int, ...]) -> tuple[set[str], int]:
    """Post for POSTING_HOURS simulated hours with engagement and reads, keep engaging until the
    last story expires, then wait until every story of the wave is served as expired (or gone)
    at the log head. (stories posted, commands accepted)."""
    before_stories, before_accepted = set(driver.stories), sum(driver.accepted.values())
    start = stack.now()
    hour = 0
    while True:
        due = start + timedelta(hours=hour)
        stack.sleep_until(due)
        posting = hour < POSTING_HOURS
        posted = [driver.stories[s] for s in set(driver.stories) - before_stories]
        if not posting and all(s.expires_at <= stack.now() for s in posted):
            break
        await driver.hour(stack.now(), post=posting, graph=False, lifetimes=lifetimes, reads=posting or hour % 4 == 0)
        stack.check_alive()
        hour += 1
    posted_ids = set(driver.stories) - before_stories
    await settle(stack, driver, posted_ids)
    return posted_ids, sum(driver.accepted.values()) - before_accepted


async def settle(stack: SoakStack, driver: Driver, story_ids: set[str]) -> None:
    """Every story in ``story_ids`` is served to its owner as expired (or not at all: deleted),
    by read models that reached the log head; then the head stays put."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    pending = set(story_ids)
    while True:
        head = stack.head()
        for story_id in sorted(pending):
            story = driver.stories[story_id]
            status, body, _ = await driver.query(
                "settle", f"{S}/{story_id}", story.owner, headers={"X-Stories-Min-Position": str(head)}
            )
            if status == 404 or (status == 200 and body.get("is_expired") is True):
                pending.discard(story_id)
        if not pending:
            caught_up = stack.wait_caught_up(30)
            if caught_up[0] == stack.head():
                return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(pending)} of {len(story_ids)} stories not served as expired after "
                f"{SETTLE_TIMEOUT_S:.0f} s (simulated now {stack.now().isoformat()}), e.g. "
                f"{sorted(pending)[:3]}\n{stack.logs()}"
            )
        stack.check_alive()
        await asyncio.sleep(0.3)


def test_storage_returns_to_its_level_once_the_stories_are_gone(tmp_path: Path) -> None:
    stack = SoakStack(tmp_path / "soak", SCALE, expiry_interval_s=0.5, log_dir=tmp_path / "logs")
    try:
        asyncio.run(scenario(stack))
    finally:
        stack.stop()


async def scenario(stack: SoakStack) -> None:
    async with Driver(stack, USERS, seed=11, traffic=TRAFFIC, concurrency=12) as driver:
        await driver.setup_graph()
        stack.wait_caught_up(60)
        baseline = redis_figures(stack)
        docs_baseline = mongo_documents(stack)

        first, accepted_1 = await wave(stack, driver, (6, 12, 24, 48))
        after_1 = redis_figures(stack)
        docs_1 = mongo_documents(stack)

        second, accepted_2 = await wave(stack, driver, (6, 12))
        after_2 = redis_figures(stack)
        docs_2 = mongo_documents(stack)

        # Idle: simulated hours pass, the expirer keeps sweeping, nothing is posted.
        stack.sleep_until(stack.now() + timedelta(hours=6))
        stack.wait_caught_up(30)
        idle = redis_figures(stack)
        docs_idle = mongo_documents(stack)

        assert not driver.unexpected, driver.unexpected[:10]
        report = (
            f"Redis keys under the prefix: {baseline['keys']} after the social graph, {after_1['keys']} after "
            f"wave 1 ({len(first)} stories, all expired or deleted), {after_2['keys']} after wave 2 "
            f"({len(second)} stories), {idle['keys']} after idling; bytes {baseline['bytes']:,} / "
            f"{after_1['bytes']:,} / {after_2['bytes']:,} / {idle['bytes']:,}. MongoDB documents "
            f"{docs_baseline} / {docs_1} / {docs_2} / {docs_idle} (commands accepted per wave "
            f"{accepted_1} / {accepted_2})."
        )
        print(report)
        assert len(first) >= 40 and len(second) >= 40, report

        per_user = len(driver.users)
        assert after_1["keys"] <= baseline["keys"] + per_user, (
            "Redis keeps per-story state after the stories are gone: " + report
        )
        assert after_2["keys"] <= after_1["keys"] + 2, "a second wave of stories left more Redis keys: " + report
        assert after_2["bytes"] <= after_1["bytes"] * 1.10 + 8192, (
            "a second wave of stories left more Redis bytes: " + report
        )
        assert idle["keys"] <= after_2["keys"] and idle["bytes"] <= after_2["bytes"] + 4096, report

        assert docs_1 - docs_baseline <= accepted_1 + len(first), (
            "MongoDB grew by more than permanent documents: " + report
        )
        assert docs_2 - docs_1 <= accepted_2 + len(second), "MongoDB grew by more than permanent documents: " + report
        assert docs_2 - docs_1 <= (docs_1 - docs_baseline) * 1.10 + 10, (
            "the second wave added more MongoDB documents than the first: " + report
        )
        assert docs_idle == docs_2, "MongoDB grew while idle: " + report
