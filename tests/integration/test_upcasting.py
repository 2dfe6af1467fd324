"""Events stored in an old shape are read in the new one by every reader of the log."""

from __future__ import annotations

import orjson
from eventsourcing.persistence import StoredEvent
from pymongo import MongoClient

from commands.event_store import EventStore
from domain.platform import Platform
from domain.stories import Story, StoryCreated
from projections.mongo_views import MongoViewStore
from projections.redis_views import RedisViewStore
from projections.runner import ProjectionRunner
from stories.backends import connect_redis
from tests.conftest import on_one_redis_and_a_cluster

redis_url = on_one_redis_and_a_cluster  # these read models run on one Redis and on a Redis Cluster

V1_FIELDS = {
    "story_type": "text",
    "media_id": None,
    "media_url": None,
    "thumbnail_url": None,
    "text_content": "old",
    "background_color": None,
    "background_gradient": None,
    "duration": 5.0,
    "stickers": [],
    "privacy": "public",
    "allowed_viewer_ids": [],
    "hidden_from_ids": [],
    "allow_replies": "everyone",
}


def store_v1_story(store: EventStore, story_id, when) -> None:
    """Write a StoryCreated exactly as version 1 stored it: no allow_sharing, no class_version."""
    state = {
        "occurred_at": {"_type_": "datetime_iso", "_data_": when.isoformat()},
        "story_id": str(story_id),
        "user_id": "alice",
        "expires_at": when.replace(year=when.year + 1).isoformat(),
        **V1_FIELDS,
    }
    topic = f"{StoryCreated.__module__}:{StoryCreated.__qualname__}"
    store.recorder.insert_events([StoredEvent(story_id, 1, topic, orjson.dumps(state))])


def test_a_v1_story_created_is_upcast_for_every_reader(
    sqlite_url, clock, mongodb_url, mongodb_database, redis_url, redis_prefix
):
    from uuid import uuid4

    store = EventStore(sqlite_url)
    story_id = uuid4()
    store_v1_story(store, story_id, clock())

    # the command side (aggregate load)
    story = store.load(Story, story_id)
    assert story.fields["allow_sharing"] is True
    # the log readers (relay, export and replay all read through read_batch)
    [logged] = list(store.read())
    envelope = logged.envelope("vignette")
    assert envelope["schema_version"] == 3 and envelope["data"]["allow_sharing"] is True
    assert envelope["data"]["reshared_from"] is None  # v3: an older story is an original
    # the projector
    mongo = MongoClient(mongodb_url, tz_aware=True)
    ProjectionRunner(store, MongoViewStore(mongo, mongodb_database)).catch_up()
    ProjectionRunner(store, RedisViewStore(connect_redis(redis_url), redis_prefix)).catch_up()
    assert mongo[mongodb_database].stories.find_one({"_id": str(story_id)})["allow_sharing"] is True
    # and new events are stored in the new shape, with their version
    new = Story.create(uuid4(), "bob", {**V1_FIELDS, "allow_sharing": False}, Platform.VIGNETTE, clock())
    store.append(new.collect_events())
    assert [e.event.data()["allow_sharing"] for e in store.read()] == [True, False]
    store.close()


def test_a_v1_story_viewed_reads_with_no_life_hour_and_stays_out_of_the_timeline(
    sqlite_url, clock, mongodb_url, mongodb_database
):
    """StoryViewed v2 added ``life_hour``: a v1 view reads as None, counts as a view, and is left
    out of ``views_timeline`` (the hour of the story's life it fell in is not known)."""
    from uuid import uuid4

    from domain.engagement import StoryViewed
    from read_api import presenter

    store = EventStore(sqlite_url)
    story_id = uuid4()
    store_v1_story(store, story_id, clock())
    state = {
        "occurred_at": {"_type_": "datetime_iso", "_data_": clock().isoformat()},
        "story_id": str(story_id),
        "owner_id": "alice",
        "viewer_id": "bob",
        "view_number": 1,
    }
    view_stream = uuid4()
    topic = f"{StoryViewed.__module__}:{StoryViewed.__qualname__}"
    store.recorder.insert_events([StoredEvent(view_stream, 1, topic, orjson.dumps(state))])
    [_, logged] = list(store.read())
    assert logged.event.life_hour is None
    assert logged.envelope("vignette")["schema_version"] == 2
    mongo = MongoClient(mongodb_url, tz_aware=True)
    ProjectionRunner(store, MongoViewStore(mongo, mongodb_database)).catch_up()
    doc = mongo[mongodb_database].stories.find_one({"_id": str(story_id)})
    insights = presenter.insights(doc, 0)
    assert insights["total_views"] == 1 and sum(insights["views_timeline"]) == 0
    assert len(insights["views_timeline"]) == 48  # capped at the longest life (this v1 story's expiry is a year on)
    store.close()
    mongo.close()
