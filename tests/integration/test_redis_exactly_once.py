"""Exactly-once for the Redis read models, on one Redis and on a 3-master Redis Cluster, with the
crash injected at a chosen point: a batch's writes are cut after each of them in turn (as a
process killed there would leave them), a stalled runner wakes up after another moved on, and a
master is killed and failed over in the middle of a batch."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from commands.event_store import EventStore
from commands.synthetic_load import generate
from domain.platform import Platform
from projections.redis_schema import VIEW_NAME, Keys
from projections.redis_views import RedisViewStore
from projections.runner import ProjectionRunner, StalePosition
from stories.backends import connect_redis
from tests.conftest import on_one_redis_and_a_cluster
from tests.read_models import dump_redis

redis_url = on_one_redis_and_a_cluster


class Crash(Exception):
    """The process died here."""


class CutClient:
    """The real client, except that it lets ``writes`` write commands through (each hash tag's
    script, each untagged command, the position's compare-and-set), then raises Crash: what was
    sent before the cut lands, nothing after. ``before_write(n)`` runs before the n-th write."""

    def __init__(self, client, writes: int = 10**9, before_write=None) -> None:
        self.client, self.left, self.sent, self.cut = client, writes, 0, False
        self.before_write = before_write

    def __getattr__(self, name):
        return getattr(self.client, name)

    def pipeline(self, transaction: bool = False) -> _CutPipeline:
        return _CutPipeline(self, self.client.pipeline(transaction=transaction))

    def evalsha(self, *args):  # the position's compare-and-set
        self.write()
        return self.client.evalsha(*args)

    def write(self) -> None:
        if self.left == 0:
            self.cut = True
            raise Crash
        if self.before_write is not None:
            self.before_write(self.sent)
        self.left -= 1
        self.sent += 1


class _CutPipeline:
    def __init__(self, owner: CutClient, pipe) -> None:
        self.owner, self.pipe, self.calls = owner, pipe, []

    def __enter__(self) -> _CutPipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.pipe.reset()

    def __getattr__(self, name):
        def queue(*args, **kwargs):
            self.calls.append((name, args, kwargs))

        return queue

    def execute(self):
        sent = 0
        try:
            for name, args, kwargs in self.calls:
                if name == "execute_command":  # the store writes through execute_command only
                    self.owner.write()
                getattr(self.pipe, name)(*args, **kwargs)
                sent += 1
        except Crash:
            if sent:
                self.pipe.execute()  # what reached the server before the process died
            raise
        return self.pipe.execute()


@pytest.fixture
def small_log(read_side_settings, clock):
    store = EventStore(read_side_settings.event_store_url)
    asyncio.run(generate(store, Platform.VIGNETTE, users=10, stories=8, engagements=90, clock=clock))
    yield store
    store.close()


def _project(client, store, prefix: str, batch: int) -> None:
    ProjectionRunner(store, RedisViewStore(client, prefix), batch).catch_up()


def test_a_batch_cut_after_any_of_its_writes_then_rerun_lands_exactly_once(small_log, redis_url, redis_prefix):
    client = connect_redis(redis_url)
    head = small_log.head()
    _project(client, small_log, redis_prefix + "clean:", batch=head)
    expected = dump_redis(client, redis_prefix + "clean:")
    counter = CutClient(client)
    _project(counter, small_log, redis_prefix + "count:", batch=head)
    writes = counter.sent  # the whole log as one batch: every kind of write, stories ending included
    assert writes > 10
    mid_batch = 0
    for cut in range(writes):
        prefix = f"{redis_prefix}cut{cut}:"
        cutter = CutClient(client, cut)
        with pytest.raises(Crash):
            _project(cutter, small_log, prefix, batch=head)
        assert cutter.cut and int(client.get(Keys(prefix).position(VIEW_NAME)) or 0) == 0
        mid_batch += 0 < cut < writes - 1
        _project(client, small_log, prefix, batch=7)  # the restarted projector, other batch bounds
        assert dump_redis(client, prefix) == expected, f"cut after {cut} of {writes} writes"
    assert mid_batch == writes - 2


def test_a_runner_that_stalled_mid_batch_writes_nothing_once_another_moved_on(small_log, redis_url, redis_prefix):
    """Runner A reads a batch, stalls before its writes; runner B applies it and everything after
    (later events undo some of its writes); A wakes up: its writes are skipped by the stamps and
    its position is refused."""
    client = connect_redis(redis_url)
    head = small_log.head()
    _project(client, small_log, redis_prefix + "clean:", batch=head)
    prefix = redis_prefix + "race:"
    woke: list[int] = []

    def other_runner_first(n: int) -> None:
        if n == 0:
            _project(client, small_log, prefix, batch=5)  # B, to the head
            woke.append(int(client.get(Keys(prefix).position(VIEW_NAME))))

    stalled = RedisViewStore(CutClient(client, before_write=other_runner_first), prefix)
    events, reached = small_log.read_batch(0, head // 2, head)
    with pytest.raises(StalePosition):
        stalled.apply(events, 0, reached)
    assert woke == [head]
    assert dump_redis(client, prefix) == dump_redis(client, redis_prefix + "clean:")
    assert int(client.get(Keys(prefix).position(VIEW_NAME))) == head


def test_a_master_failed_over_mid_batch_loses_nothing_acknowledged(small_log, redis_url, redis_prefix, request):
    if not redis_url.startswith("redis+cluster"):
        pytest.skip("opt-in: a failover needs the cluster (the one-Redis run is the other parameter)")
    cluster = request.getfixturevalue("redis_cluster")
    client = connect_redis(redis_url)
    head = small_log.head()
    _project(client, small_log, redis_prefix + "clean:", batch=head)
    prefix = redis_prefix + "failover:"
    position_key = Keys(prefix).position(VIEW_NAME)
    killed: list[int] = []
    acknowledged: list[int] = []

    def kill_mid_batch(n: int) -> None:
        if n == 40 and not killed:  # some batches in, in the middle of one
            acknowledged.append(int(client.get(position_key) or 0))
            killed.append(cluster.kill_master_for(position_key))

    cutter = CutClient(client, before_write=kill_mid_batch)
    runner = ProjectionRunner(small_log, RedisViewStore(cutter, prefix, wait_replicas=1), 6)
    try:
        deadline = time.monotonic() + 60
        while runner.position != head:
            assert time.monotonic() < deadline, "the projector did not catch up after the failover"
            try:
                runner.run_once()
            except (redis.exceptions.ConnectionError, redis.exceptions.ClusterError, redis.exceptions.TimeoutError):
                runner.position = None  # what the projector's loop does: re-read the position, retry
                time.sleep(0.2)
        assert killed and acknowledged[0] > 0
        assert dump_redis(client, prefix) == dump_redis(client, redis_prefix + "clean:")
    finally:
        for port in killed:
            cluster.restart(port)
