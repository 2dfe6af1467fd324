"""The expiry projector (``projections/expiry.py``) in process, with an injected clock.

Stories go in through the real write path (StoriesApplication + GroupCommitter over an
EventStore); the expirer follows the log into its Redis schedule (``P:expiry:due``) and appends
``StoryExpired`` through the same write path. What we count is the log itself: every
``StoryExpired`` in ``EventStore.read()``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta
from uuid import UUID

import pytest

from commands import use_cases as uc
from commands.application import StoriesApplication
from commands.event_store import EventStore, StoreUnavailable
from commands.group_commit import GroupCommitter
from commands.models import CreateStory
from domain.limits import Limits
from domain.platform import Platform
from projections import expiry
from projections.expiry import Expirer
from stories.backends import connect_redis
from tests.conftest import on_one_redis_and_a_cluster

redis_url = on_one_redis_and_a_cluster  # these read models run on one Redis and on a Redis Cluster

PLATFORM = Platform.VIGNETTE
OWNER = "alice"


# -- helpers ------------------------------------------------------------------------------------


class Writer:
    """The write path with the test's clock: creates, deletes and expires stories."""

    def __init__(self, store: EventStore, clock) -> None:
        self.committer = GroupCommitter(store)
        # Hundreds of live stories by one author: above the contract's default live-story limit.
        self.app = StoriesApplication(store, self.committer, PLATFORM, clock=clock, limits=Limits(live_stories=100_000))

    async def create(self, hours: int, owner: str = OWNER) -> str:
        body = CreateStory(story_type="text", text_content=f"{hours}h story", expires_in_hours=hours)
        result, _position = await self.app.execute(uc.CreateStory(owner, body))
        assert isinstance(result, uc.StoryPosted), result
        return str(result.story_id)

    async def create_many(self, hours: list[int]) -> list[str]:
        return list(await asyncio.gather(*(self.create(h) for h in hours)))

    async def delete(self, story_id: str, owner: str = OWNER) -> None:
        result, _ = await self.app.execute(uc.DeleteStory(owner, story_id))
        assert result == uc.Done(), result

    async def expire(self, story_id: str) -> None:
        result, _ = await self.app.execute(uc.ExpireStory(UUID(story_id)))
        assert isinstance(result, uc.StoryExpiredNow), result

    def close(self) -> None:
        self.committer.close()


def expired_events(store: EventStore) -> list:
    return [logged.event for logged in store.read() if logged.event.event_type == "StoryExpired"]


def expired_counts(store: EventStore) -> Counter:
    return Counter(e.story_id for e in expired_events(store))


def created_events(store: EventStore) -> dict[str, object]:
    return {logged.event.story_id: logged.event for logged in store.read() if logged.event.event_type == "StoryCreated"}


@pytest.fixture
def rclient(redis_url):
    client = connect_redis(redis_url)
    yield client
    client.close()


@pytest.fixture
def world(sqlite_url, rclient, redis_prefix, clock):
    """A SQLite log, a writer and an expirer factory, all on the test's clock; closed at the end."""
    store = EventStore(sqlite_url)
    writer = Writer(store, clock)
    made: list[Expirer] = []

    def expirer(store_: EventStore = store) -> Expirer:
        e = Expirer(store_, rclient, redis_prefix, PLATFORM, clock=clock)
        made.append(e)
        return e

    yield store, writer, expirer
    for e in made:
        e.close()
    writer.close()
    store.close()


async def gather(*coros):
    return list(await asyncio.gather(*coros))


def run(coro, timeout: float = 50.0):
    """Run one coroutine with a hard bound, so a hung sweep fails instead of hanging the run."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


# -- which stories a sweep expires --------------------------------------------------------------


def test_a_sweep_expires_exactly_the_due_stories(world, clock):
    store, writer, expirer = world
    ids = run(writer.create_many([6, 12, 24, 48]))
    by_hours = dict(zip([6, 12, 24, 48], ids))
    e = expirer()

    assert run(e.sweep()) == 0  # nothing is due at creation
    assert expired_counts(store) == Counter()

    clock.advance(hours=6)  # the 6 h story is due at exactly this instant
    assert run(e.sweep()) == 1
    assert expired_counts(store) == Counter({by_hours[6]: 1})

    clock.advance(hours=5, minutes=59)  # 11:59 in: the 12 h story is not due yet
    assert run(e.sweep()) == 0
    assert expired_counts(store) == Counter({by_hours[6]: 1})

    clock.advance(minutes=1)
    assert run(e.sweep()) == 1
    clock.advance(hours=12)
    assert run(e.sweep()) == 1
    assert expired_counts(store) == Counter({by_hours[6]: 1, by_hours[12]: 1, by_hours[24]: 1})

    clock.advance(hours=23, minutes=59)  # 47:59
    assert run(e.sweep()) == 0
    clock.advance(minutes=1)
    assert run(e.sweep()) == 1
    assert expired_counts(store) == Counter(dict.fromkeys(ids, 1))
    assert e.expired == 4
    # and the schedule is empty once everything has expired
    assert run(e.sweep()) == 0
    assert e.client.zcard(e.keys.expiry_due) == 0


def test_each_expiry_carries_the_stories_owner_and_due_time(world, clock):
    store, writer, expirer = world
    start = clock()
    ids = run(gather(writer.create(6, owner="bob"), writer.create(12, owner="carol")))
    clock.advance(hours=13)
    assert run(expirer().sweep()) == 2
    by_story = {e.story_id: e for e in expired_events(store)}
    assert set(by_story) == set(ids)
    assert by_story[ids[0]].user_id == "bob"
    assert by_story[ids[1]].user_id == "carol"
    assert datetime.fromisoformat(by_story[ids[0]].expired_at) == start + timedelta(hours=6)
    assert datetime.fromisoformat(by_story[ids[1]].expired_at) == start + timedelta(hours=12)


def test_a_deleted_story_never_expires(world, clock):
    store, writer, expirer = world
    deleted, kept = run(writer.create_many([6, 6]))
    e = expirer()
    assert run(e.sweep()) == 0  # the schedule now lists both
    run(writer.delete(deleted))

    clock.advance(hours=7)
    assert run(e.sweep()) == 1
    clock.advance(hours=100)
    assert run(e.sweep()) == 0
    assert run(expirer().sweep()) == 0  # nor does a fresh expirer
    assert expired_counts(store) == Counter({kept: 1})


def test_a_story_deleted_before_the_expirer_ever_saw_it_never_expires(world, clock):
    store, writer, expirer = world
    deleted, kept = run(writer.create_many([6, 24]))
    run(writer.delete(deleted))
    clock.advance(hours=48)
    assert run(expirer().sweep()) == 1
    assert expired_counts(store) == Counter({kept: 1})


def test_a_sweep_hours_late_appends_one_event_per_story_at_its_due_time(world, clock):
    store, writer, expirer = world
    start = clock()
    ids = run(writer.create_many([6, 12, 24]))
    created = created_events(store)

    clock.advance(hours=30)  # every one of them is hours overdue
    sweep_time = clock()
    assert run(expirer().sweep()) == 3
    events = expired_events(store)
    assert Counter(e.story_id for e in events) == Counter(dict.fromkeys(ids, 1))
    for event in events:
        due = datetime.fromisoformat(created[event.story_id].expires_at)
        assert datetime.fromisoformat(event.expired_at) == due  # the due time, not the sweep's
        assert due < sweep_time
        assert event.occurred_at == sweep_time  # when it was recorded
    assert sorted(datetime.fromisoformat(e.expired_at) for e in events) == [
        start + timedelta(hours=h) for h in (6, 12, 24)
    ]


def test_a_second_sweep_appends_nothing(world, clock):
    store, writer, expirer = world
    run(writer.create_many([6, 12, 24, 48]))
    clock.advance(hours=49)
    e = expirer()
    assert run(e.sweep()) == 4
    head = store.head()
    assert run(e.sweep()) == 0
    assert run(expirer().sweep()) == 0  # a fresh expirer on the same schedule
    assert store.head() == head
    assert len(expired_events(store)) == 4


def test_a_fresh_expirer_with_its_own_schedule_appends_nothing_either(world, clock, redis_url, redis_prefix):
    """A new Redis prefix: its schedule is rebuilt from the log, StoryExpired included."""
    store, writer, expirer = world
    run(writer.create_many([6, 12]))
    clock.advance(hours=13)
    assert run(expirer().sweep()) == 2
    other_prefix = redis_prefix + "other:"
    client = connect_redis(redis_url)
    e = Expirer(store, client, other_prefix, PLATFORM, clock=clock)
    try:
        assert run(e.sweep()) == 0
        assert e.client.zcard(e.keys.expiry_due) == 0
    finally:
        e.close()
        client.close()
        # keys under other_prefix start with redis_prefix: the fixture cleans them up
    assert len(expired_events(store)) == 2


# -- racing and restarting expirers -----------------------------------------------------------------


def count_attempts(e: Expirer) -> Counter:
    """Count the expire commands ``e`` issues, per story."""
    attempts: Counter = Counter()
    original = e._expire

    async def counted(story_id: str) -> int:
        attempts[story_id] += 1
        return await original(story_id)

    e._expire = counted
    return attempts


def _race(store: EventStore, writer: Writer, expirer, clock, n: int) -> None:
    # Spread over authors: one author's live-story record holds all their live stories (bounded
    # by the limit in production), and this race is about expirers, not one author's ledger.
    ids = run(gather(*(writer.create(6, owner=f"racer{i % 20}") for i in range(n))), timeout=55)
    e1, e2 = expirer(store), expirer(store)  # separate GroupCommitters, same log and Redis prefix
    assert e1.committer is not e2.committer
    assert run(gather(e1.sweep(), e2.sweep())) == [0, 0]  # both follow the log; nothing due yet
    clock.advance(hours=6, seconds=1)
    tried1, tried2 = count_attempts(e1), count_attempts(e2)

    c1, c2 = run(gather(e1.sweep(), e2.sweep()), timeout=55)
    # a real race: each of them issued the expire command for every story
    assert set(tried1) == set(tried2) == set(ids), (len(tried1), len(tried2))
    counts = expired_counts(store)
    assert len(counts) == n and set(counts) == set(ids)
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1][:5]
    assert c1 + c2 == n, (c1, c2)  # each expiry is credited to exactly one of them
    # and neither finds anything left to do afterwards
    assert run(gather(e1.sweep(), e2.sweep())) == [0, 0]
    assert len(expired_events(store)) == n


def test_two_racing_expirers_append_exactly_one_event_per_story_sqlite(world, clock):
    store, writer, expirer = world
    _race(store, writer, expirer, clock, 500)


def test_two_racing_expirers_append_exactly_one_event_per_story_postgres(
    postgres_schema_url, rclient, redis_prefix, clock
):
    store = EventStore(postgres_schema_url)
    writer = Writer(store, clock)
    made: list[Expirer] = []

    def expirer(store_: EventStore) -> Expirer:
        e = Expirer(store_, rclient, redis_prefix, PLATFORM, clock=clock)
        made.append(e)
        return e

    try:
        _race(store, writer, expirer, clock, 500)
    finally:
        for e in made:
            e.close()
        writer.close()
        store.close()


def test_two_expirers_on_separate_event_store_connections_race_safely(world, sqlite_url, clock):
    """Two processes, as near as one test gets: each expirer has its own EventStore too."""
    store, writer, expirer = world
    ids = run(writer.create_many([6] * 200 + [12] * 50))
    clock.advance(hours=7)
    other = EventStore(sqlite_url)
    try:
        e1, e2 = expirer(store), expirer(other)
        run(asyncio.to_thread(e1.schedule.catch_up))  # both follow the same schedule
        tried1, tried2 = count_attempts(e1), count_attempts(e2)
        c1, c2 = run(gather(e1.sweep(), e2.sweep()))
        assert set(tried1) == set(tried2) == set(ids[:200])  # both went for every due story
        assert c1 + c2 == 200
        counts = expired_counts(store)
        assert len(counts) == 200 and max(counts.values()) == 1
        assert set(counts) == set(ids[:200])
    finally:
        other.close()


def test_an_expirer_restarted_after_another_expired_part_of_the_due_stories(world, clock):
    store, writer, expirer = world
    ids = run(writer.create_many([6] * 40 + [24] * 10))
    clock.advance(hours=7)
    # "the first expirer" got through the first 15 before it died
    run(gather(*(writer.expire(i) for i in ids[:15])))
    assert len(expired_events(store)) == 15

    assert run(expirer().sweep()) == 25
    counts = expired_counts(store)
    assert counts == Counter(dict.fromkeys(ids[:40], 1))


def test_an_expirer_whose_schedule_still_lists_expired_stories_appends_nothing_for_them(world, clock):
    """Restarted with a schedule that has not yet seen another expirer's events: it issues the
    expire command for every story it lists, and the domain refuses each second expiry."""
    store, writer, expirer = world
    ids = run(writer.create_many([6] * 20))
    clock.advance(hours=6)
    stale = expirer()
    run(asyncio.to_thread(stale.schedule.catch_up))  # its schedule lists all 20 as due
    run(gather(*(writer.expire(i) for i in ids[:12])))  # someone else expires 12 of them
    stale.schedule.catch_up = lambda until=None: None  # ...which its schedule never hears of
    assert stale.client.zcard(stale.keys.expiry_due) == 20
    tried = count_attempts(stale)
    assert run(stale.sweep()) == 8  # 12 refused (already_expired), 8 appended
    assert set(tried) == set(ids)
    assert expired_counts(store) == Counter(dict.fromkeys(ids, 1))


class DyingStore:
    """The event store as one expirer's committer sees it: it dies after ``appends`` appends."""

    def __init__(self, store: EventStore, appends: int) -> None:
        self.store, self.left = store, appends

    def append(self, events):
        if self.left <= 0:
            raise StoreUnavailable("killed mid-sweep")
        self.left -= 1
        return self.store.append(events)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_an_expirer_killed_mid_sweep_and_restarted_expires_each_story_once(world, clock):
    store, writer, expirer = world
    ids = run(writer.create_many([6] * 300))
    clock.advance(hours=6)
    first = expirer()
    first.committer.store = DyingStore(store, appends=1)  # one batch (at most 256) lands, then it dies
    with pytest.raises(StoreUnavailable):
        run(first.sweep())
    done = expired_counts(store)
    assert 0 < len(done) < 300 and max(done.values()) == 1  # it did die mid-sweep

    restarted = expirer()  # same Redis schedule, which never saw the first one's events
    assert run(restarted.sweep()) == 300 - len(done)
    assert expired_counts(store) == Counter(dict.fromkeys(ids, 1))
    assert run(restarted.sweep()) == 0


# -- the wake-up time -----------------------------------------------------------------------------


def test_seconds_to_next_due_is_the_time_to_the_next_due_story_capped_at_the_interval(world, clock):
    _store, writer, expirer = world
    e = expirer()
    assert e.seconds_to_next_due(5.0) == 5.0  # an empty schedule: the interval
    run(writer.create_many([12, 6, 48]))
    assert run(e.sweep()) == 0  # catches the schedule up
    day = 86400.0
    assert e.seconds_to_next_due(5.0) == 5.0
    assert e.seconds_to_next_due(day) == pytest.approx(6 * 3600)
    clock.advance(hours=5, minutes=30)
    assert e.seconds_to_next_due(day) == pytest.approx(1800)
    assert e.seconds_to_next_due(60.0) == 60.0
    clock.advance(hours=1)  # overdue, not yet swept: wake up now
    assert e.seconds_to_next_due(day) == 0.0
    assert run(e.sweep()) == 1
    assert e.seconds_to_next_due(day) == pytest.approx(5.5 * 3600)  # the 12 h story
    clock.advance(hours=42)
    assert run(e.sweep()) == 2
    assert e.seconds_to_next_due(day) == day  # nothing left


def test_run_expires_a_story_once_it_falls_due_and_stops_on_request(world, clock):
    store, writer, expirer = world
    ids = run(writer.create_many([6, 48]))
    e = expirer()

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(e.run(0.05, stop))
        await asyncio.sleep(0.3)
        assert expired_events(store) == []
        clock.advance(hours=6)
        for _ in range(200):
            if expired_events(store):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # further sweeps add nothing
        stop.set()
        await asyncio.wait_for(task, 5)

    run(scenario())
    assert expired_counts(store) == Counter({ids[0]: 1})
    assert e.expired == 1


def test_run_drains_a_backlog_larger_than_one_sweep_page(world, clock, monkeypatch):
    monkeypatch.setattr(expiry, "SWEEP_LIMIT", 25)
    store, writer, expirer = world
    ids = run(writer.create_many([6] * 60))
    clock.advance(hours=7)
    e = expirer()

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(e.run(30.0, stop))  # a long interval: it must not wait for it
        for _ in range(200):
            if len(expired_events(store)) >= 60:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 5)

    run(scenario())
    assert expired_counts(store) == Counter(dict.fromkeys(ids, 1))


def test_one_sweep_expires_every_due_story_even_past_the_page_size(world, clock):
    store, writer, expirer = world
    n = expiry.SWEEP_LIMIT + 10  # e.g. the expirer was down while more than a page fell due
    ids = run(writer.create_many([6] * n))
    clock.advance(hours=7)
    assert run(expirer().sweep()) == n
    assert expired_counts(store) == Counter(dict.fromkeys(ids, 1))
