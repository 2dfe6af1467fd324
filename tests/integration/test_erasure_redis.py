"""Erasure in the Redis read models on a real Redis and on a 3-master Redis Cluster: the live
projection purged by ``AccountErased`` equals a replay of the erased log (``tests.erasure``), names
the person nowhere, and a purge cut after any of its writes then run again lands the same."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from redis.cluster import RedisCluster

from commands.event_store import LoggedEvent
from projections.redis_schema import VIEW_NAME, Keys
from projections.redis_views import RedisViewStore
from read_api.queries import is_erased
from stories.backends import connect_redis
from tests.conftest import on_one_redis_and_a_cluster
from tests.erasure import as_erased
from tests.integration.test_redis_exactly_once import Crash, CutClient
from tests.read_models import dump_redis
from tests.unit.test_erasure_redis_handlers import STORIES, USERS, T, X, build, erasure

redis_url = on_one_redis_and_a_cluster

KINDS = [
    "story",
    "view",
    "vote",
    "answer",
    "countdown",
    "follow",
    "unfollow",
    "cf",
    "uncf",
    "mute",
    "unmute",
    "delete",
    "expire",
    "edit",
]


def random_log(seed: int, steps: int = 80) -> list:
    rng = random.Random(seed)
    plan = [("story", u, rng.choice(USERS), s, rng.randrange(4)) for u, s in zip([X, "alice", "bob", X], STORIES)]
    plan += [
        (rng.choice(KINDS), rng.choice(USERS), rng.choice(USERS), rng.choice(STORIES), rng.randrange(4))
        for _ in range(steps)
    ]
    return build(plan)


def project(client, prefix: str, events: list, batch: int, start: int = 0) -> int:
    """``events`` in batches of ``batch`` (positions from ``start`` + 1), then the position reached."""
    store = RedisViewStore(client, prefix)
    position = start
    for i in range(0, len(events), batch):
        chunk = [LoggedEvent(position + j + 1, e) for j, e in enumerate(events[i : i + batch])]
        store.apply(chunk, position, position + len(chunk))
        position += len(chunk)
    return position


def purge(client, prefix: str, position: int, user_id: str | None) -> None:
    e = erasure(T + timedelta(hours=2), user_id=user_id)
    RedisViewStore(client, prefix).apply([LoggedEvent(position + 1, e)], position, position + 1)


def names_anyone(dump: dict, who: str) -> list[str]:
    return [key for key, value in dump.items() if who in key or who.encode() in repr(value).encode()]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_live_then_purged_equals_the_replay_of_the_erased_log(redis_url, redis_prefix, seed):
    client = connect_redis(redis_url)
    events = random_log(seed)
    live, replay = redis_prefix + "live:", redis_prefix + "replay:"
    before = project(client, live, events, batch=5)
    assert names_anyone(dump_redis(client, live), X), "the log should name the person before the erasure"
    purge(client, live, before, X)
    position = project(client, replay, [as_erased(e, X) for e in events], batch=13)
    purge(client, replay, position, None)
    got = dump_redis(client, live)
    assert got == dump_redis(client, replay)
    assert names_anyone(got, X) == []
    # nothing under their tag is left but their stamps (positions, never served; they expire)
    left = {k.decode()[len(live) :] for k in client.scan_iter(match=f"{live}*{{{X}}}*")}
    assert left <= {f"at:{{{X}}}"}
    assert 0 < client.pttl(Keys(live).stamps(X)) <= 50 * 3600 * 1000 if left else True
    assert int(client.get(Keys(live).position(VIEW_NAME))) == before + 1


def test_a_purge_cut_after_any_of_its_writes_then_rerun_lands_the_same(redis_url, redis_prefix):
    client = connect_redis(redis_url)
    events = random_log(7)
    clean = redis_prefix + "clean:"
    position = project(client, clean, events, batch=6)
    purge(client, clean, position, X)
    expected = dump_redis(client, clean)
    counter = CutClient(client)
    counted = redis_prefix + "count:"
    project(client, counted, events, batch=6)
    purge(counter, counted, position, X)
    writes = counter.sent
    assert writes > 3
    for cut in range(writes):
        prefix = f"{redis_prefix}cut{cut}:"
        project(client, prefix, events, batch=6)
        cutter = CutClient(client, cut)
        with pytest.raises(Crash):
            purge(cutter, prefix, position, X)
        assert int(client.get(Keys(prefix).position(VIEW_NAME))) == position
        purge(client, prefix, position, X)  # the restarted projector runs the batch again
        assert dump_redis(client, prefix) == expected, f"cut after {cut} of {writes} writes"


def test_the_query_api_knows_an_erased_pseudonym(redis_url, redis_prefix):
    import asyncio

    client = connect_redis(redis_url)
    purge(client, redis_prefix, 0, None)

    async def ask() -> tuple[bool, bool]:
        if isinstance(client, RedisCluster):
            from redis.asyncio.cluster import RedisCluster as AsyncCluster

            node = client.get_default_node()
            aclient = AsyncCluster(host=node.host, port=node.port)
        else:
            from redis.asyncio import Redis

            aclient = Redis.from_url(redis_url)
        try:
            return (
                await is_erased(aclient, redis_prefix, "c0ffee"),
                await is_erased(aclient, Keys(redis_prefix), "someone-else"),
            )
        finally:
            await aclient.aclose()

    assert asyncio.run(ask()) == (True, False)
