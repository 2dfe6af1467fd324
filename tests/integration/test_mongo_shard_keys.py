"""MongoDB shard keys (``projections.mongo_views.SHARD_KEYS``; docs/OPERATIONS.md, "Sharding MongoDB").

No sharded MongoDB runs here: these tests hold the code, on the embedded SecantusDB, to what a
sharded cluster (MongoDB 6.0 or later) needs of it, with every kind of write the projector makes
(stories, views, answers, replies, deletes, expiry, highlights and their reel, close friends):

- every read-model collection has a shard key, and an index whose prefix is that key;
- every document carries its key's fields, and one ``_id`` always has the same key values (so a
  re-run upsert is sent to the shard that holds the document, and ``_id`` stays unique);
- every write the projector sends names the full shard key in its filter (an upsert must; the
  other writes then go to one shard instead of all);
- the query API's reads select by the key's leading field, but for the few named in the
  operations guide as reads of every shard.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from pymongo import AsyncMongoClient, MongoClient, monitoring

from commands import models
from commands import use_cases as uc
from commands.application import StoriesApplication
from commands.event_store import EventStore
from commands.group_commit import GroupCommitter
from domain.platform import Platform
from projections.mongo_schema import POSITIONS
from projections.mongo_views import SHARD_KEYS, MongoViewStore, ensure_indexes, shard_key_index
from projections.runner import ProjectionRunner
from read_api.queries import Queries, gather_pages
from stories.backends import connect_async_redis
from tests.conftest import FakeClock
from tests.read_models import COLLECTIONS

pytestmark = pytest.mark.timeout(120)

QUESTION = {"sticker_type": "question", "question": {"text": "ask me"}}
POLL = {"sticker_type": "poll", "poll": {"question": "Which?", "options": [{"text": "A"}, {"text": "B"}]}}

# Reads that go to every shard by design: a story or a highlight asked for by its id alone (the
# route names no owner). Each is (collection, the filter's fields with their operator).
SCATTER_BY_DESIGN = {
    ("stories", (("_id", "$eq"),)),
    ("highlights", (("_id", "$eq"),)),
}


class Recorder(monitoring.CommandListener):
    """Every command sent, as (name, body): what a mongos would have to route."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, dict]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@dataclass
class World:
    database: str
    mongodb_url: str
    now: datetime
    stories: dict[str, str]  # by name (see _workload)
    highlight: str
    writes: list[tuple[str, dict, bool]] = field(default_factory=list)  # (collection, filter, upsert)


def _run(app: StoriesApplication, committer: GroupCommitter, clock, command: uc.Command) -> Any:
    clock.advance(seconds=1)
    step = app.step(command)
    return committer.run_sync(lambda batch: step(batch, clock())).result


def _workload(app: StoriesApplication, committer: GroupCommitter, clock) -> tuple[dict[str, str], str]:
    """One of every write the MongoDB read models take; the story ids by name, the kept highlight.
    At the end, "asks" is live and "plain" has expired (it is in the kept highlight)."""
    run = lambda command: _run(app, committer, clock, command)  # noqa: E731
    for a, b in (("bob", "ann"), ("cat", "ann"), ("ann", "bob")):
        run(uc.Follow(a, b))
    run(uc.AddCloseFriend("ann", "bob"))
    run(uc.AddCloseFriend("ann", "cat"))
    run(uc.RemoveCloseFriend("ann", "cat"))
    stories = {}
    for name, author, stickers, hours in (
        ("asks", "ann", [QUESTION, POLL], 48),
        ("plain", "ann", [], 6),
        ("gone", "ann", [], 24),
        ("bobs", "bob", [], 48),
    ):
        body = models.CreateStory.model_validate(
            {
                "story_type": "image",
                "media_url": f"https://cdn.example.org/{name}.jpg",
                "privacy": "public",
                "stickers": stickers,
                "expires_in_hours": hours,
            }
        )
        stories[name] = str(run(uc.CreateStory(author, body)).story_id)
    asks, plain = stories["asks"], stories["plain"]
    for viewer, story in (("bob", asks), ("cat", asks), ("bob", asks), ("ann", stories["bobs"]), ("bob", plain)):
        run(uc.ViewStory(viewer, story))
    run(uc.ReplyToStory("bob", asks, models.ReplyToStory(text="nice")))
    run(uc.Interact("bob", asks, models.Interact(sticker_index=0, text="why?")))
    run(uc.Interact("cat", asks, models.Interact(sticker_index=1, option_index=1)))
    run(uc.Navigate("bob", asks, models.Navigate(action="exit")))
    run(uc.ShareStory("cat", asks, None))
    run(uc.EditStory("ann", asks, models.EditStory(stickers=[{"sticker_index": 0, "x": 0.2}])))
    run(uc.Mute("bob", "ann"))
    run(uc.Mute("bob", "cat"))
    run(uc.Unmute("bob", "cat"))
    run(uc.DeleteStory("ann", stories["gone"]))
    kept = str(run(uc.CreateHighlight("ann", models.CreateHighlight(title="one", story_ids=[asks]))).highlight_id)
    other = str(run(uc.CreateHighlight("ann", models.CreateHighlight(title="two", story_ids=[plain]))).highlight_id)
    run(uc.UpdateHighlight("ann", kept, models.UpdateHighlight(title="first")))
    run(uc.AddHighlightStories("ann", kept, models.HighlightStories(story_ids=[plain])))
    run(uc.RemoveHighlightStories("ann", kept, models.HighlightStories(story_ids=[plain])))
    run(uc.ReorderHighlights("ann", models.ReorderHighlights(highlight_ids=[other, kept])))
    run(uc.DeleteHighlight("ann", other))
    clock.advance(hours=7)
    run(uc.ExpireStory(UUID(plain)))
    run(uc.AddHighlightStories("ann", kept, models.HighlightStories(story_ids=[plain])))
    return stories, kept


def _filters(commands: list[tuple[str, dict]]) -> tuple[list[tuple[str, dict, bool]], list[tuple[str, dict]]]:
    """The writes (collection, filter, upsert) and the reads (collection, filter) among commands."""
    writes, reads = [], []
    for name, body in commands:
        if name == "update":
            writes += [(body["update"], u["q"], bool(u.get("upsert"))) for u in body["updates"]]
        elif name == "delete":
            writes += [(body["delete"], d["q"], False) for d in body["deletes"]]
        elif name == "insert":
            writes += [(body["insert"], d, True) for d in body["documents"]]
        elif name == "find":
            reads.append((body["find"], body.get("filter", {})))
        elif name == "aggregate":
            stage = body["pipeline"][0] if body["pipeline"] else {}
            reads.append((body["aggregate"], stage.get("$match", {})))
        elif name in ("count", "distinct"):
            reads.append((body[name], body.get("query", {})))
    return writes, reads


@pytest.fixture(scope="module")
def world(tmp_path_factory, mongodb_url):
    """The workload, projected into a database of its own, every write the projector sent recorded."""
    database = f"t_shard_{uuid.uuid4().hex[:10]}"
    clock = FakeClock(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))
    store = EventStore(f"sqlite:///{tmp_path_factory.mktemp('shard-keys') / 'events.sqlite3'}")
    committer = GroupCommitter(store)
    recorder = Recorder()
    mongo = MongoClient(mongodb_url, tz_aware=True, event_listeners=[recorder])
    try:
        app = StoriesApplication(store, committer, Platform.VIGNETTE, clock=clock)
        stories, kept = _workload(app, committer, clock)
        recorder.commands.clear()
        ProjectionRunner(store, MongoViewStore(mongo, database), batch_size=3).catch_up()
        writes, _ = _filters(recorder.commands)
        yield World(database, mongodb_url, clock(), stories, kept, [w for w in writes if w[0] != POSITIONS])
    finally:
        committer.close()
        store.close()
        mongo.drop_database(database)
        mongo.close()


@pytest.fixture(scope="module")
def reads(world, redis_url) -> list[tuple[str, dict]]:
    """Every MongoDB read (collection, filter) the query API makes for the routes that read
    MongoDB, following their cursors."""
    return asyncio.run(_query_api_reads(world, redis_url))


async def _query_api_reads(w: World, redis_url: str) -> list[tuple[str, dict]]:
    recorder = Recorder()
    mongo = AsyncMongoClient(w.mongodb_url, tz_aware=True, event_listeners=[recorder])
    redis = connect_async_redis(redis_url)  # a prefix of its own: only the MongoDB reads matter here
    now = w.now
    try:
        q = Queries(mongo, w.database, redis, f"stories-test-shard:{uuid.uuid4().hex[:8]}:", Platform.VIGNETTE)
        asks, bobs = w.stories["asks"], w.stories["bobs"]
        await q.story(asks, "bob", now)
        await q.story(bobs, "ann", now)
        await gather_pages(lambda c: q.viewers(asks, "ann", now, 1, c))
        await gather_pages(lambda c: q.answers(asks, "ann", now, 1, c, None))
        await gather_pages(lambda c: q.answers(asks, "ann", now, 1, c, 0))
        await q.story_insights(asks, "ann", now)
        await q.user_insights("ann")
        await gather_pages(lambda c: q.user_stories("ann", "bob", now, 1, c))
        await gather_pages(lambda c: q.archive("ann", now, 1, c))
        await gather_pages(lambda c: q.highlights_of("ann", "bob", now, 1, c))
        await gather_pages(lambda c: q.highlights_of("ann", "ann", now, 1, c))
        for viewer in ("bob", "ann"):  # the expired story in it: was it seen? (story_viewers)
            await gather_pages(lambda c, viewer=viewer: _stories_page(q.highlight(w.highlight, viewer, now, 1, c)))
        await gather_pages(lambda c: q.close_friends("ann", 1, c))
        await gather_pages(lambda c: q.muted("bob", 1, c))
    finally:
        await mongo.close()
        await redis.aclose()
    return [r for r in _filters(recorder.commands)[1] if r[0] != POSITIONS]


async def _stories_page(answer) -> dict:
    return (await answer)["stories"]


# -- helpers: what a mongos can route ---------------------------------------------------------


def _conditions(query: dict) -> dict[str, Any]:
    """The top-level field conditions of a filter, through ``$and`` (``$or`` branches aside)."""
    out: dict[str, Any] = {}
    for name, value in query.items():
        if name == "$and":
            for part in value:
                out.update(_conditions(part))
        elif not name.startswith("$"):
            out[name] = value
    return out


def _operator(condition: Any) -> str:
    if isinstance(condition, dict) and condition and all(op.startswith("$") for op in condition):
        return "$eq" if set(condition) == {"$eq"} else "+".join(sorted(condition))
    return "$eq"


def _shape(collection: str, query: dict) -> tuple[str, tuple[tuple[str, str], ...]]:
    return collection, tuple(sorted((name, _operator(c)) for name, c in _conditions(query).items()))


# -- the tests ----------------------------------------------------------------------------------


def test_every_read_model_collection_has_a_shard_key(world):
    assert set(SHARD_KEYS) == set(COLLECTIONS)
    with MongoClient(world.mongodb_url) as client:
        written = set(client[world.database].list_collection_names()) - {POSITIONS}
    assert written == set(SHARD_KEYS), "the workload should write every collection"


@pytest.mark.parametrize("collection", sorted(SHARD_KEYS))
def test_an_index_starts_with_the_shard_key(world, collection):
    """sh.shardCollection needs an index whose prefix is the key on a collection that holds data."""
    key = shard_key_index(SHARD_KEYS[collection])
    with MongoClient(world.mongodb_url) as client:
        ensure_indexes(client[world.database])  # again: idempotent, as every projector start does
        indexes = client[world.database][collection].index_information()
    prefixes = [[(name, int(kind)) for name, kind in info["key"]][: len(key)] for info in indexes.values()]
    assert key in prefixes, indexes


@pytest.mark.parametrize("collection", sorted(SHARD_KEYS))
def test_documents_carry_their_shard_key_and_their_id_fixes_it(world, collection):
    key = list(SHARD_KEYS[collection])
    with MongoClient(world.mongodb_url) as client:
        docs = list(client[world.database][collection].find())
    assert docs
    for doc in docs:
        values = [doc.get(name) for name in key]
        assert all(isinstance(v, str) and v for v in values), (collection, doc)
        if "_id" not in key:  # the _id is made of the key's values: one _id, one place
            assert doc["_id"] == ":".join(values), (collection, doc)


@pytest.mark.parametrize("collection", sorted(SHARD_KEYS))
def test_every_write_names_the_full_shard_key(world, collection):
    """MongoDB 6.0 refuses an upsert on a sharded collection whose filter lacks an equality on the
    whole shard key; an update or delete by _id alone goes to every shard."""
    key = list(SHARD_KEYS[collection])
    writes = [(q, upsert) for name, q, upsert in world.writes if name == collection]
    assert writes
    missing = [
        (q, upsert)
        for q, upsert in writes
        if not all(name in _conditions(q) and _operator(_conditions(q)[name]) == "$eq" for name in key)
    ]
    assert not missing, f"{len(missing)} of {len(writes)} writes lack the key {key}: {missing[:3]}"


def test_the_query_api_reads_select_by_the_shard_key(reads):
    """Every read selects by its collection's leading key field (equality or $in: a mongos sends it
    to the shards holding those values), but for the reads by id alone named above."""
    assert reads
    everywhere = set()
    for collection, query in reads:
        if collection not in SHARD_KEYS:
            continue
        lead = next(iter(SHARD_KEYS[collection]))
        condition = _conditions(query).get(lead)
        if condition is None or _operator(condition) not in ("$eq", "$in"):
            everywhere.add(_shape(collection, query))
    assert everywhere <= SCATTER_BY_DESIGN, sorted(everywhere - SCATTER_BY_DESIGN)
