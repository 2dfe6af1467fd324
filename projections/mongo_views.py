"""MongoDB read models: stories as served, viewers, question answers, highlights, close friends.

One small function per event type turns the event into document updates; the view store merges a
batch's updates and writes them idempotently (stamped and guarded, no transaction: see MongoViewStore).
Every write names its document's shard key (``SHARD_KEYS``) with values the event carries.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.errors import BulkWriteError
from pymongo.database import Database

from commands.event_store import LoggedEvent
from domain import engagement as en, highlights as hl, social as so, stories as st
from projections.document_writes import DocumentWrites
from projections.redis_schema import SLIDER_SUM_SCALE
from projections.runner import StalePosition

POSITIONS = "projection_positions"


def _story(w: DocumentWrites, story_id: str, owner_id: str, update: dict) -> None:
    """An update of an existing story. ``owner_id`` is the shard key's ``user_id``: the story's
    owner (an engagement event's ``owner_id``), never the user who viewed or answered."""
    w.update("stories", story_id, update, upsert=False, shard={"user_id": owner_id})


def _result(event: en.StickerEvent, name: str) -> str:
    return f"results.{event.sticker_index}.{name}"


def on_story_created(w: DocumentWrites, e: st.StoryCreated, at: LoggedEvent) -> None:
    fields = e.data()
    fields.update(created_at=e.occurred_at, expires_at=datetime.fromisoformat(e.expires_at), deleted=False, expired=False)
    w.update("stories", e.story_id, {"$set": fields}, shard={"user_id": e.user_id})


def on_story_viewed(w: DocumentWrites, e: en.StoryViewed, at: LoggedEvent) -> None:
    first = 1 if e.view_number == 1 else 0
    _story(w, e.story_id, e.owner_id,
           {"$inc": {"view_count": 1, "unique_viewers": first, f"views_by_hour.{e.occurred_at.hour}": 1}})
    w.update("story_viewers", f"{e.story_id}:{e.viewer_id}", {
        "$setOnInsert": {"story_id": e.story_id, "viewer_id": e.viewer_id, "owner_id": e.owner_id},
        "$min": {"first_viewed_at": e.occurred_at},
        "$max": {"last_viewed_at": e.occurred_at},
        "$inc": {"view_count": 1},
    }, shard={"story_id": e.story_id, "viewer_id": e.viewer_id})
    if first:  # the owner's distinct viewers, over all their stories (user insights' unique_viewers)
        w.update("owner_viewers", f"{e.owner_id}:{e.viewer_id}",
                 {"$setOnInsert": {"owner_id": e.owner_id, "viewer_id": e.viewer_id}},
                 shard={"owner_id": e.owner_id, "viewer_id": e.viewer_id})


def on_story_replied(w, e: en.StoryReplied, at) -> None:
    _story(w, e.story_id, e.owner_id, {"$inc": {"reply_count": 1}})


def on_poll_voted(w, e: en.PollVoted, at) -> None:
    _story(w, e.story_id, e.owner_id, {"$inc": {
        _result(e, f"options.{e.option_index}"): 1, _result(e, "total"): 1,
    }})


def on_quiz_answered(w, e: en.QuizAnswered, at) -> None:
    _story(w, e.story_id, e.owner_id, {"$inc": {
        _result(e, f"options.{e.option_index}"): 1, _result(e, "total"): 1, _result(e, "correct"): int(e.correct),
    }})


def on_question_answered(w, e: en.QuestionAnswered, at: LoggedEvent) -> None:
    _story(w, e.story_id, e.owner_id, {"$inc": {_result(e, "total"): 1}})
    w.update("question_answers", str(at.event_id), {"$set": {
        "story_id": e.story_id, "owner_id": e.owner_id, "sticker_index": e.sticker_index, "user_id": e.user_id,
        "text": e.text, "answered_at": e.occurred_at,
    }}, shard={"story_id": e.story_id})


def on_countdown_followed(w, e: en.CountdownFollowed, at) -> None:
    _story(w, e.story_id, e.owner_id, {"$inc": {_result(e, "followers"): 1, _result(e, "total"): 1}})


def on_countdown_unfollowed(w, e: en.CountdownUnfollowed, at) -> None:
    _story(w, e.story_id, e.owner_id, {"$inc": {_result(e, "followers"): -1}})


def on_slider_answered(w, e: en.SliderAnswered, at) -> None:
    _story(w, e.story_id, e.owner_id, {"$inc": {
        _result(e, "ssum"): e.value * SLIDER_SUM_SCALE, _result(e, "total"): 1,
    }})


def on_link_tapped(w, e: en.LinkTapped, at) -> None:
    _story(w, e.story_id, e.owner_id, {"$inc": {_result(e, "total"): 1}})


def on_story_deleted(w, e: st.StoryDeleted, at) -> None:
    _story(w, e.story_id, e.user_id, {"$set": {"deleted": True, "deleted_at": e.occurred_at}})  # the owner's id


def on_story_expired(w, e: st.StoryExpired, at) -> None:
    _story(w, e.story_id, e.user_id, {"$set": {"expired": True}})  # the owner's id


def _highlight(w: DocumentWrites, e, update: dict, upsert: bool = False) -> None:
    """Every highlight event's ``user_id`` is the highlight's owner: the shard key's ``user_id``."""
    w.update("highlights", e.highlight_id, update, upsert=upsert, shard={"user_id": e.user_id})


def on_highlight_created(w, e: hl.HighlightCreated, at) -> None:
    fields = e.data()
    fields.update(created_at=e.occurred_at, updated_at=e.occurred_at, deleted=False)
    _highlight(w, e, {"$set": fields}, upsert=True)


def on_highlight_updated(w, e: hl.HighlightUpdated, at) -> None:
    _highlight(w, e, {"$set": {**e.changes, "updated_at": e.occurred_at}})


def on_highlight_stories_added(w, e: hl.HighlightStoriesAdded, at) -> None:
    _highlight(w, e, {"$push": {"story_ids": {"$each": e.story_ids}}})


def on_highlight_stories_removed(w, e: hl.HighlightStoriesRemoved, at) -> None:
    _highlight(w, e, {"$pull": {"story_ids": {"$in": e.story_ids}}})


def on_highlight_deleted(w, e: hl.HighlightDeleted, at) -> None:
    _highlight(w, e, {"$set": {"deleted": True, "updated_at": e.occurred_at}})


def on_highlight_filed(w, e: hl.HighlightFiled, at) -> None:
    w.update("highlight_reels", e.user_id, {"$push": {"highlight_ids": e.highlight_id}})


def on_highlight_unfiled(w, e: hl.HighlightUnfiled, at) -> None:
    w.update("highlight_reels", e.user_id, {"$pull": {"highlight_ids": e.highlight_id}})


def on_highlights_reordered(w, e: hl.HighlightsReordered, at) -> None:
    w.update("highlight_reels", e.user_id, {"$set": {"highlight_ids": e.highlight_ids}})


def _close_friend_shard(e) -> dict:
    return {"user_id": e.user_id, "friend_id": e.friend_id}


def on_close_friend_added(w, e: so.CloseFriendAdded, at) -> None:
    w.update("close_friends", f"{e.user_id}:{e.friend_id}", {"$set": {
        "user_id": e.user_id, "friend_id": e.friend_id, "added_at": e.occurred_at,
    }}, shard=_close_friend_shard(e))


def on_close_friend_removed(w, e: so.CloseFriendRemoved, at) -> None:
    w.delete("close_friends", f"{e.user_id}:{e.friend_id}", shard=_close_friend_shard(e))


HANDLERS: dict[type, Callable] = {
    st.StoryCreated: on_story_created,
    en.StoryViewed: on_story_viewed,
    en.StoryReplied: on_story_replied,
    en.PollVoted: on_poll_voted,
    en.QuizAnswered: on_quiz_answered,
    en.QuestionAnswered: on_question_answered,
    en.CountdownFollowed: on_countdown_followed,
    en.CountdownUnfollowed: on_countdown_unfollowed,
    en.SliderAnswered: on_slider_answered,
    en.LinkTapped: on_link_tapped,
    st.StoryDeleted: on_story_deleted,
    st.StoryExpired: on_story_expired,
    hl.HighlightCreated: on_highlight_created,
    hl.HighlightUpdated: on_highlight_updated,
    hl.HighlightStoriesAdded: on_highlight_stories_added,
    hl.HighlightStoriesRemoved: on_highlight_stories_removed,
    hl.HighlightDeleted: on_highlight_deleted,
    hl.HighlightFiled: on_highlight_filed,
    hl.HighlightUnfiled: on_highlight_unfiled,
    hl.HighlightsReordered: on_highlights_reordered,
    so.CloseFriendAdded: on_close_friend_added,
    so.CloseFriendRemoved: on_close_friend_removed,
    # Follows live in Redis (the graph); nothing to write here.
    so.UserFollowed: lambda w, e, at: None,
    so.UserUnfollowed: lambda w, e, at: None,
}


# The shard key of each read-model collection on a sharded MongoDB (6.0 or later), as
# ``sh.shardCollection`` takes it; why each, and the commands: docs/OPERATIONS.md, "Sharding MongoDB".
# Ranged and compound: the leading field is what the query API's lists select by (the owner, or
# the story), so they go only to the shards holding that owner's or story's documents; the second
# is unique within it, so one viral story's viewers (or one owner's) can still be split into many
# ranges on many shards, which a key on the leading field alone, ranged or hashed, cannot do.
# A document's key values never change and follow from its ``_id`` (the key holds the ``_id``, or
# the ``_id`` is ``<story>:<viewer>``-like, made of the key): a re-run upsert goes to the shard that
# holds the document, so ``_id`` stays unique although each shard's ``_id`` index is its own.
# Not hashed: story, highlight and event ids are random UUIDs already, and SecantusDB (the tests'
# server) refuses hashed indexes. ``projection_positions`` stays unsharded (a few documents).
SHARD_KEYS: dict[str, dict[str, object]] = {
    "stories": {"user_id": 1, "_id": 1},
    "story_viewers": {"story_id": 1, "viewer_id": 1},
    "owner_viewers": {"owner_id": 1, "viewer_id": 1},
    "question_answers": {"story_id": 1, "_id": 1},
    "highlights": {"user_id": 1, "_id": 1},
    "highlight_reels": {"_id": 1},
    "close_friends": {"user_id": 1, "friend_id": 1},
}


def shard_key_index(key: dict[str, object]) -> list[tuple[str, int]]:
    """The index a ranged shard key needs: the key's fields, in its order, ascending."""
    if any(kind != 1 for kind in key.values()):
        raise ValueError(f"not a ranged shard key: {key}")
    return [(name, ASCENDING) for name in key]


def ensure_indexes(db: Database) -> None:
    db.stories.create_index([("user_id", ASCENDING), ("created_at", ASCENDING)])
    db.story_viewers.create_index([("story_id", ASCENDING), ("first_viewed_at", DESCENDING), ("viewer_id", ASCENDING)])
    db.question_answers.create_index([("story_id", ASCENDING), ("answered_at", DESCENDING), ("_id", DESCENDING)])
    db.question_answers.create_index([("story_id", ASCENDING), ("sticker_index", ASCENDING), ("answered_at", DESCENDING)])
    db.close_friends.create_index([("user_id", ASCENDING), ("added_at", DESCENDING), ("friend_id", ASCENDING)])
    # One index per shard key, its fields first: sh.shardCollection needs it on a collection that
    # holds documents. They also serve reads: highlights by owner, an owner's distinct viewers
    # (databases made before these keys also hold {user_id: 1} and {owner_id: 1}: redundant now).
    for collection, key in SHARD_KEYS.items():
        if list(key) != ["_id"]:  # the _id index is always there
            db[collection].create_index(shard_key_index(key))


class MongoViewStore:
    """Writes a batch idempotently, without multi-document transactions.

    Before a batch it records its intent (``pending_until``) on the position document; every
    write is stamped and guarded (``DocumentWrites.operations``); afterwards the position moves.
    A runner killed mid-batch is followed by one that re-runs exactly that batch, and the
    guards skip what already landed. Works on a standalone MongoDB, a replica set, or SecantusDB,
    and an abandoned writer holds no locks.
    """

    def __init__(self, client: MongoClient, database: str, name: str = "mongo_views", indexes: bool = True) -> None:
        self.name = name
        self.client = client
        self.db = client[database]
        if indexes:  # a rebuild into an empty database creates them after the load instead
            ensure_indexes(self.db)
        self.db[POSITIONS].update_one(
            {"_id": self.name}, {"$setOnInsert": {"position": 0, "pending_until": None}}, upsert=True
        )

    def _checkpoint(self) -> dict:
        return self.db[POSITIONS].find_one({"_id": self.name}) or {"position": 0, "pending_until": None}

    def position(self) -> int:
        return self._checkpoint()["position"]

    def pending_until(self) -> int | None:
        return self._checkpoint().get("pending_until")

    def apply(self, events: list[LoggedEvent], start: int, position: int) -> None:
        writes = DocumentWrites()
        for logged in events:
            HANDLERS[type(logged.event)](writes, logged.event, logged)
        positions = self.db[POSITIONS]
        intent = positions.update_one(
            {"_id": self.name, "position": start, "pending_until": {"$in": [None, position]}},
            {"$set": {"pending_until": position}},
        )
        if intent.matched_count == 0:
            raise StalePosition(self.name)
        for collection, ops in writes.operations(position).items():
            _write_skipping_landed(self.db[collection], ops)
        positions.update_one(
            {"_id": self.name, "position": start, "pending_until": position},
            {"$set": {"position": position, "pending_until": None}},
        )


def _write_skipping_landed(collection, ops: list) -> None:
    """Ordered bulk write; an upsert whose guard fails because its write already landed raises
    a duplicate key error (11000): skip that one and go on with the rest, in order."""
    while ops:
        try:
            collection.bulk_write(ops, ordered=True)
            return
        except BulkWriteError as error:
            first = error.details["writeErrors"][0]
            if first["code"] != 11000:
                raise
            ops = ops[first["index"] + 1:]
