"""Erasure in the MongoDB read models, on the embedded server (SecantusDB, MongoDB wire protocol):
the live projection (the person named, then ``AccountErased`` purges) equals a replay after the
erasure (the person's fields None from the start, the erasure unresolved), in full dumps; the
purge's batch cut after any of its writes and run again lands the same; the bulk load's fold
builds the same documents."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from pymongo import MongoClient

from commands.event_store import EventStore
from commands.synthetic_load import generate
from domain import engagement as en
from domain import stories as sto
from domain.accounts import AccountErased
from domain.platform import Platform
from projections.bulk_load import MongoFold
from projections.mongo_schema import POSITIONS
from projections.mongo_views import MongoViewStore
from projections.runner import ProjectionRunner
from tests.erasure import as_erased
from tests.integration.test_mongo_write_shapes import Crash, Cut, cut_store, social_and_viewer_edges
from tests.read_models import COLLECTIONS, dump_mongo
from tests.unit.test_erasure_mongo_handlers import KINDS, MemoryLog, build_log, live_and_replay, names


def project(
    events: list, mongo: MongoClient, database: str, batch: int, until: int | None = None, indexes: bool = True
) -> None:
    ProjectionRunner(MemoryLog(events), MongoViewStore(mongo, database, indexes=indexes), batch).catch_up(until)


def fold_into(events: list, mongo: MongoClient, database: str, max_docs: int) -> None:
    """The bulk load's MongoDB part: the handlers folded in memory, cut and written as it goes."""
    f = MongoFold(mongo[database], max_docs=max_docs)
    log = MemoryLog(events)
    for i in range(0, log.head(), 10):
        chunk, reached = log.read_batch(i, 10)
        f.fold(chunk)
        if f.full():
            f.write(f.cut(reached))
    f.flush(log.head())


@pytest.fixture
def generated(sqlite_url, clock) -> list:
    """A generated log (stories, views, answers, votes, replies, close friends, highlights...)
    with the edges it lacks (removed and re-added close friends, mutes, navigations)."""
    store = EventStore(sqlite_url)
    asyncio.run(generate(store, Platform.VIGNETTE, users=12, stories=8, engagements=120, clock=clock))
    events = [logged.event for logged in store.read()]
    store.close()
    return events + social_and_viewer_edges(events)


def _people(events: list) -> dict[str, str]:
    """Who to erase: the owner of the most engaged story, and the most active other person."""
    owners = Counter(e.owner_id for e in events if isinstance(e, en.StoryViewed))
    owner = owners.most_common(1)[0][0]
    active = Counter(
        getattr(e, "viewer_id", None) or getattr(e, "user_id", None)
        for e in events
        if isinstance(e, (en.StoryViewed, en.StickerEvent, en.StoryReplied))
    )
    other = next(p for p, _ in active.most_common() if p not in (owner, None))
    return {"owner": owner, "engager": other}


def _drop(mongo: MongoClient, *databases: str) -> None:
    for name in databases:
        mongo.drop_database(name)


@pytest.mark.parametrize("who", ["owner", "engager"])
@pytest.mark.parametrize("batch", [1000, 9])
def test_live_purge_equals_a_replay_after_the_erasure(generated, mongodb_url, mongodb_database, who, batch):
    mongo = MongoClient(mongodb_url, tz_aware=True)
    person = _people(generated)[who]
    split = len(generated) * 2 // 3  # the erasure, then more events (the person's read erased)
    live, replay = live_and_replay(generated, person, split)
    before = list(generated[:split])
    rebuilt, folded, folded_live = (f"{mongodb_database}_{s}" for s in ("replay", "fold", "foldlive"))
    try:
        project(before, mongo, rebuilt, batch)  # what the person had, before: named all over
        named = dump_mongo(mongo, rebuilt)
        assert names(named, person)
        mongo.drop_database(rebuilt)
        project(live, mongo, mongodb_database, batch)
        project(replay, mongo, rebuilt, batch)
        got, expected = dump_mongo(mongo, mongodb_database), dump_mongo(mongo, rebuilt)
        assert got == expected
        assert not names(expected, person)
        assert sum(len(docs) for docs in expected.values()) > 20
        if who == "owner":
            assert all(d["user_id"] != person for d in expected["stories"])
            assert expected["stories"], "other people's stories stay"
        else:  # their views still count on other people's stories
            assert sum(d.get("view_count", 0) for d in got["stories"]) == sum(
                1 for e in replay if isinstance(e, en.StoryViewed) and e.owner_id is not None
            )
        # the bulk load's fold, of either log, writes the same (cut as it goes: max_docs=25)
        fold_into(replay, mongo, folded, max_docs=25)
        fold_into(live, mongo, folded_live, max_docs=25)
        assert dump_mongo(mongo, folded) == expected
        assert dump_mongo(mongo, folded_live) == expected
    finally:
        _drop(mongo, rebuilt, folded, folded_live)


@pytest.mark.parametrize("seed", range(6))
def test_random_histories_purge_to_their_replay(mongodb_url, mongodb_database, seed):
    rng = random.Random(seed)
    steps = [(rng.choice(KINDS), rng.randrange(16), rng.randrange(16), rng.randrange(16)) for _ in range(120)]
    events = build_log(steps)
    person = rng.choice(("alice", "bob", "carol", "dan"))
    live, replay = live_and_replay(events, person, rng.randrange(len(events) // 2, len(events) + 1))
    mongo = MongoClient(mongodb_url, tz_aware=True)
    rebuilt = f"{mongodb_database}_replay"
    try:
        project(live, mongo, mongodb_database, batch=rng.randrange(1, 30))
        project(replay, mongo, rebuilt, batch=rng.randrange(1, 30))
        expected = dump_mongo(mongo, rebuilt)
        assert dump_mongo(mongo, mongodb_database) == expected
        assert not names(expected, person)
    finally:
        _drop(mongo, rebuilt)


def _checkpoint(mongo: MongoClient, database: str) -> dict:
    return mongo[database][POSITIONS].find_one({"_id": "mongo_views"}) or {}


@pytest.mark.parametrize("batch", [1000, 5])
def test_a_purge_cut_after_any_write_then_run_again_lands_the_same(generated, mongodb_url, mongodb_database, batch):
    """The log projected to just before the erasure; then, for every N, a runner that dies after
    the N-th write from there (within the purge's batch, or after it), and a restarted one with
    other batch bounds: the read models equal a clean projection's, and the replay's."""
    mongo = MongoClient(mongodb_url, tz_aware=True)
    person = _people(generated)["owner"]
    split = len(generated) * 2 // 3
    live, replay = live_and_replay(generated, person, split)
    erased_at = next(i for i, e in enumerate(live) if isinstance(e, AccountErased))
    clean, counted, cut = (f"{mongodb_database}_{s}" for s in ("clean", "count", "cut"))
    try:
        project(replay, mongo, clean, batch=1000)
        expected = dump_mongo(mongo, clean)
        project(live, mongo, counted, batch, until=erased_at)
        counter = Cut()
        ProjectionRunner(MemoryLog(live), cut_store(mongo, counted, counter), batch).catch_up()
        assert dump_mongo(mongo, counted) == expected
        purge_writes = 16 + 3  # the purge's 13 deletes and 3 updates, and the position's (fence, intent, move)
        assert counter.sent >= purge_writes
        mid_purge = 0
        for n in range(min(counter.sent, purge_writes + 6)):
            project(live, mongo, cut, batch, until=erased_at, indexes=False)
            with pytest.raises(Crash):
                ProjectionRunner(MemoryLog(live), cut_store(mongo, cut, Cut(n), indexes=False), batch).catch_up()
            pending = _checkpoint(mongo, cut).get("pending_until")
            mid_purge += pending == erased_at + 1
            project(live, mongo, cut, batch=7, indexes=False)  # the restarted projector, other bounds
            assert dump_mongo(mongo, cut) == expected, f"crash after {n} writes"
            assert _checkpoint(mongo, cut)["position"] == len(live)
            for name in (*COLLECTIONS, POSITIONS):
                mongo[cut][name].delete_many({})
        # cut within the purge's own batch: before each of its 16 writes, and before the position's move
        assert mid_purge >= 17
    finally:
        _drop(mongo, clean, counted, cut)


def test_the_purge_selects_by_indexed_fields(mongodb_url, mongodb_database):
    """Every field the purge selects by leads an index (on a large read model it must not scan)."""
    from projections.mongo_views import PURGED_BY, STORY_ID_LISTS

    mongo = MongoClient(mongodb_url, tz_aware=True)
    MongoViewStore(mongo, mongodb_database)
    db = mongo[mongodb_database]
    wanted = {(c, f) for c, fields in PURGED_BY.items() for f in fields}
    wanted |= {("stories", f) for f in STORY_ID_LISTS} | {("stories", "reshared_from.user_id")}
    for collection, name in wanted:
        if name == "_id":
            continue
        leading = {next(iter(ix["key"])) for ix in db[collection].list_indexes()}
        assert name in leading, (collection, name)


def test_an_erased_owners_reshare_origin_and_lists_are_cleared_on_the_server(mongodb_url, mongodb_database):
    """The purge's pulls and sets by filter on the server (a multikey index on the lists)."""
    from tests.unit.test_erasure_mongo_handlers import erasure, story_created

    events = [
        story_created("s0", "alice"),
        story_created(
            "s1",
            "bob",
            allowed=["alice", "carol"],
            hidden=["alice", "dan"],
            reshared_from={"story_id": "s0", "user_id": "alice"},
        ),
        story_created("s2", "carol", hidden=["dan"]),
    ]
    mongo = MongoClient(mongodb_url, tz_aware=True)
    project([*events, erasure("alice")], mongo, mongodb_database, batch=10)
    stories = {d["_id"]: d for d in mongo[mongodb_database].stories.find()}
    assert set(stories) == {"s1", "s2"}
    assert stories["s1"]["allowed_viewer_ids"] == ["carol"] and stories["s1"]["hidden_from_ids"] == ["dan"]
    assert stories["s1"]["reshared_from"] is None and stories["s2"]["hidden_from_ids"] == ["dan"]
    assert isinstance(as_erased(events[1], "alice"), sto.StoryCreated)
