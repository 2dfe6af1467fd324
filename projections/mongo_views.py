"""MongoDB read models: stories as served, viewers, question answers, highlights, close friends.

One small function per event type turns the event into document updates; the view store merges a
batch's updates and writes them idempotently (stamped and guarded, no transaction: see MongoViewStore).
Every write names its document's shard key (``SHARD_KEYS``) with values the event carries.

Erasure (``../shared/CONTRACT.md``, "Erasure"): a reader of the log finds an erased person's
personal fields ``None`` (``DomainEvent.PERSONAL``). Every handler takes that as "this person is
gone": it writes nothing that would name a ``None`` person, and nothing at all to a story (or
highlight) whose owner is ``None``, as if the story had never been (counts on other people's
stories that name nobody still count). ``on_account_erased`` removes, live, what the handlers
wrote while the person was still named, so that a replay after the erasure (their fields ``None``
from the start) builds the same documents as the live projection.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from pymongo import ASCENDING, DESCENDING, MongoClient, ReturnDocument
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from commands.event_store import LoggedEvent
from domain import accounts as ac
from domain import engagement as en
from domain import highlights as hl
from domain import social as so
from domain import stories as st
from projections.document_writes import INSERT_FIRST, INSERT_ONCE, CollectionPlan, DocumentWrites
from projections.mongo_schema import POSITIONS
from projections.redis_schema import SLIDER_SUM_SCALE
from projections.runner import StalePosition


def _story(w: DocumentWrites, story_id: str, owner_id: str, update: dict) -> None:
    """An update of an existing story. ``owner_id`` is the shard key's ``user_id``: the story's
    owner (an engagement event's ``owner_id``), never the user who viewed or answered."""
    w.update("stories", story_id, update, upsert=False, shard={"user_id": owner_id})


def _result(event: en.StickerEvent, name: str) -> str:
    return f"results.{event.sticker_index}.{name}"


# The lists of person ids a story keeps (who it is for, who it is hidden from): an erased
# person's entries read None, and are left out (``on_account_erased`` pulls them live).
STORY_ID_LISTS = ("allowed_viewer_ids", "hidden_from_ids")


def on_story_created(w: DocumentWrites, e: st.StoryCreated, at: LoggedEvent) -> None:
    if e.user_id is None:  # an erased owner's story is never shown
        return
    fields = e.data()
    for name in STORY_ID_LISTS:
        if fields.get(name) is not None:
            fields[name] = [person for person in fields[name] if person is not None]
    # (``reshared_from`` reads None when the original's owner is erased: the purge sets that too.)
    fields.update(
        created_at=e.occurred_at, expires_at=datetime.fromisoformat(e.expires_at), deleted=False, expired=False
    )
    w.update("stories", e.story_id, {"$set": fields}, shard={"user_id": e.user_id}, insert=INSERT_FIRST)


def on_story_edited(w: DocumentWrites, e: st.StoryEdited, at: LoggedEvent) -> None:
    if e.user_id is None:
        return
    content = e.data()
    del content["changed"]
    _story(w, e.story_id, e.user_id, {"$set": {**content, "edited": True, "edited_at": e.occurred_at}})


def on_story_viewed(w: DocumentWrites, e: en.StoryViewed, at: LoggedEvent) -> None:
    if e.owner_id is None:  # the story of an erased owner: gone
        return
    first = 1 if e.view_number == 1 else 0
    counts = {"view_count": 1, "unique_viewers": first, f"views_by_hour.{e.occurred_at.hour}": 1}
    if e.life_hour is not None:  # views before StoryViewed version 2 did not say
        counts[f"views_timeline.{e.life_hour}"] = 1
    _story(w, e.story_id, e.owner_id, {"$inc": counts})
    if e.viewer_id is None:  # an erased viewer: the counts stay, the viewer entries do not
        return
    w.update(
        "story_viewers",
        f"{e.story_id}:{e.viewer_id}",
        {
            "$setOnInsert": {"story_id": e.story_id, "viewer_id": e.viewer_id, "owner_id": e.owner_id},
            "$min": {"first_viewed_at": e.occurred_at},
            "$max": {"last_viewed_at": e.occurred_at},
            "$inc": {"view_count": 1},
        },
        shard={"story_id": e.story_id, "viewer_id": e.viewer_id},
        insert=INSERT_FIRST if first else None,
    )
    if first:  # the owner's distinct viewers, over all their stories (user insights' unique_viewers)
        w.update(
            "owner_viewers",
            f"{e.owner_id}:{e.viewer_id}",
            {"$setOnInsert": {"owner_id": e.owner_id, "viewer_id": e.viewer_id}},
            shard={"owner_id": e.owner_id, "viewer_id": e.viewer_id},
            insert=INSERT_ONCE,
        )


def on_story_navigated(w: DocumentWrites, e: en.StoryNavigated, at: LoggedEvent) -> None:
    """The last navigation stands, on the viewer's entry; one from someone who never viewed the
    story finds no entry and counts nowhere. Insights count them by ``navigation`` (indexed)."""
    if e.owner_id is None or e.viewer_id is None:
        return
    w.update(
        "story_viewers",
        f"{e.story_id}:{e.viewer_id}",
        {"$set": {"navigation": e.action, "navigated_at": e.occurred_at}},
        upsert=False,
        shard={"story_id": e.story_id, "viewer_id": e.viewer_id},
    )


def on_story_shared(w: DocumentWrites, e: en.StoryShared, at: LoggedEvent) -> None:
    if e.owner_id is None:
        return
    _story(w, e.story_id, e.owner_id, {"$inc": {"shares": 1}})  # the original's; the reshare is a StoryCreated


def on_story_replied(w, e: en.StoryReplied, at) -> None:
    if e.owner_id is None:
        return
    _story(w, e.story_id, e.owner_id, {"$inc": {"reply_count": 1}})


def on_poll_voted(w, e: en.PollVoted, at) -> None:
    if e.owner_id is None:
        return
    _story(
        w,
        e.story_id,
        e.owner_id,
        {
            "$inc": {
                _result(e, f"options.{e.option_index}"): 1,
                _result(e, "total"): 1,
            }
        },
    )


def on_quiz_answered(w, e: en.QuizAnswered, at) -> None:
    if e.owner_id is None:
        return
    _story(
        w,
        e.story_id,
        e.owner_id,
        {
            "$inc": {
                _result(e, f"options.{e.option_index}"): 1,
                _result(e, "total"): 1,
                _result(e, "correct"): int(e.correct),
            }
        },
    )


def on_question_answered(w, e: en.QuestionAnswered, at: LoggedEvent) -> None:
    if e.owner_id is None:
        return
    _story(w, e.story_id, e.owner_id, {"$inc": {_result(e, "total"): 1}})
    if e.user_id is None:  # an erased answerer: counted, but their answer (and text) is gone
        return
    w.update(
        "question_answers",
        str(at.event_id),
        {
            "$set": {
                "story_id": e.story_id,
                "owner_id": e.owner_id,
                "sticker_index": e.sticker_index,
                "user_id": e.user_id,
                "text": e.text,
                "answered_at": e.occurred_at,
            }
        },
        shard={"story_id": e.story_id},
        insert=INSERT_ONCE,
    )


def on_countdown_followed(w, e: en.CountdownFollowed, at) -> None:
    if e.owner_id is None:
        return
    _story(w, e.story_id, e.owner_id, {"$inc": {_result(e, "followers"): 1, _result(e, "total"): 1}})


def on_countdown_unfollowed(w, e: en.CountdownUnfollowed, at) -> None:
    if e.owner_id is None:
        return
    _story(w, e.story_id, e.owner_id, {"$inc": {_result(e, "followers"): -1}})


def on_slider_answered(w, e: en.SliderAnswered, at) -> None:
    if e.owner_id is None:
        return
    _story(
        w,
        e.story_id,
        e.owner_id,
        {
            "$inc": {
                _result(e, "ssum"): e.value * SLIDER_SUM_SCALE,
                _result(e, "total"): 1,
            }
        },
    )


def on_link_tapped(w, e: en.LinkTapped, at) -> None:
    if e.owner_id is None:
        return
    _story(w, e.story_id, e.owner_id, {"$inc": {_result(e, "total"): 1}})


def on_story_deleted(w, e: st.StoryDeleted, at) -> None:
    if e.user_id is None:
        return
    _story(w, e.story_id, e.user_id, {"$set": {"deleted": True, "deleted_at": e.occurred_at}})  # the owner's id


def on_story_expired(w, e: st.StoryExpired, at) -> None:
    if e.user_id is None:
        return
    _story(w, e.story_id, e.user_id, {"$set": {"expired": True}})  # the owner's id


def _highlight(w: DocumentWrites, e, update: dict, upsert: bool = False) -> None:
    """Every highlight event's ``user_id`` is the highlight's owner: the shard key's ``user_id``
    (None: an erased owner's highlight, never shown)."""
    if e.user_id is None:
        return
    w.update("highlights", e.highlight_id, update, upsert=upsert, shard={"user_id": e.user_id})


def on_highlight_created(w, e: hl.HighlightCreated, at) -> None:
    if e.user_id is None:
        return
    fields = e.data()
    fields.update(created_at=e.occurred_at, updated_at=e.occurred_at, deleted=False)
    w.update("highlights", e.highlight_id, {"$set": fields}, shard={"user_id": e.user_id}, insert=INSERT_FIRST)


def on_highlight_updated(w, e: hl.HighlightUpdated, at) -> None:
    if e.user_id is None:  # (its ``changes`` read None too)
        return
    _highlight(w, e, {"$set": {**e.changes, "updated_at": e.occurred_at}})


def on_highlight_stories_added(w, e: hl.HighlightStoriesAdded, at) -> None:
    _highlight(w, e, {"$push": {"story_ids": {"$each": e.story_ids}}})


def on_highlight_stories_removed(w, e: hl.HighlightStoriesRemoved, at) -> None:
    _highlight(w, e, {"$pull": {"story_ids": {"$in": e.story_ids}}})


def on_highlight_deleted(w, e: hl.HighlightDeleted, at) -> None:
    _highlight(w, e, {"$set": {"deleted": True, "updated_at": e.occurred_at}})


def _reel(w: DocumentWrites, e, update: dict) -> None:
    if e.user_id is not None:  # None: an erased owner's reel
        w.update("highlight_reels", e.user_id, update)


def on_highlight_filed(w, e: hl.HighlightFiled, at) -> None:
    _reel(w, e, {"$push": {"highlight_ids": e.highlight_id}})


def on_highlight_unfiled(w, e: hl.HighlightUnfiled, at) -> None:
    _reel(w, e, {"$pull": {"highlight_ids": e.highlight_id}})


def on_highlights_reordered(w, e: hl.HighlightsReordered, at) -> None:
    _reel(w, e, {"$set": {"highlight_ids": e.highlight_ids}})


# Close friends and mutes are edges between two people: one that names an erased person (None)
# is not written, neither added nor removed (``on_account_erased`` removes it, tombstones too).


def _close_friend_shard(e) -> dict:
    return {"user_id": e.user_id, "friend_id": e.friend_id}


def on_close_friend_added(w, e: so.CloseFriendAdded, at) -> None:
    if e.user_id is None or e.friend_id is None:
        return
    w.update(
        "close_friends",
        f"{e.user_id}:{e.friend_id}",
        {
            "$set": {
                "user_id": e.user_id,
                "friend_id": e.friend_id,
                "added_at": e.occurred_at,
            }
        },
        shard=_close_friend_shard(e),
        insert=INSERT_FIRST,
    )


def on_close_friend_removed(w, e: so.CloseFriendRemoved, at) -> None:
    if e.user_id is None or e.friend_id is None:
        return
    w.delete("close_friends", f"{e.user_id}:{e.friend_id}", shard=_close_friend_shard(e))


def on_user_muted(w, e: so.UserMuted, at) -> None:
    if e.user_id is None or e.muted_id is None:
        return
    w.update(
        "muted",
        f"{e.user_id}:{e.muted_id}",
        {
            "$set": {
                "user_id": e.user_id,
                "muted_id": e.muted_id,
                "muted_at": e.occurred_at,
            }
        },
        shard={"user_id": e.user_id, "muted_id": e.muted_id},
        insert=INSERT_FIRST,
    )


def on_user_unmuted(w, e: so.UserUnmuted, at) -> None:
    if e.user_id is None or e.muted_id is None:
        return
    w.delete("muted", f"{e.user_id}:{e.muted_id}", shard={"user_id": e.user_id, "muted_id": e.muted_id})


# What ``on_account_erased`` deletes: per collection, the fields that name a person (a document
# naming the erased person in any of them goes, tombstones included). Deleting by a shard key's
# leading field (``stories``, ``highlights``, ``close_friends`` and ``muted`` by ``user_id``,
# ``owner_viewers`` by ``owner_id``, a reel by ``_id``) goes to the shards holding that person's
# documents only; the others go to every shard (indexed there: ``ensure_indexes``).
PURGED_BY: dict[str, tuple[str, ...]] = {
    "stories": ("user_id",),  # their stories
    "story_viewers": ("viewer_id", "owner_id"),  # their views, and every view of their stories
    "owner_viewers": ("owner_id", "viewer_id"),
    "question_answers": ("user_id", "owner_id"),  # their answers, and every answer to their stories
    "highlights": ("user_id",),
    "highlight_reels": ("_id",),
    "close_friends": ("user_id", "friend_id"),
    "muted": ("user_id", "muted_id"),
}


def on_account_erased(w: DocumentWrites, e: ac.AccountErased, at: LoggedEvent) -> None:
    """Remove every document that names the erased person or belongs to their stories, and take
    their id out of other people's stories (who a story is for or hidden from, a reshare's
    original): what the other handlers would never have written had the person's fields read
    None from the start. Counts on other people's stories stay (they name nobody).

    ``e.user_id`` is None when the reader could not resolve the account (a replay long after
    the erasure): then the person's fields read None in every event before it, nothing of theirs
    was written, and there is nothing to do.

    The runner applies an ``AccountErased`` in a batch of its own, after the events before it
    have landed (``projections.runner.erasure_alone``), and in every partition. Its writes are
    by filter (``DocumentWrites.delete_many`` / ``update_many``): unstamped, idempotent, so a
    re-run after a crash (or another partition's purge) does the same again and harms nothing.
    Gap (fencing): a delete by filter leaves no tombstone (it would name the person), so a
    runner that stalled *before* this batch and was overtaken could still land a write it had
    in flight (an insert of a viewer entry, say) after the purge. It stops at its next fenced
    step, so that is at most the one request per collection it had in flight; re-applying the
    erasure (``stories erase USER`` again, or a replay) removes such a straggler.
    """
    person = e.user_id
    if person is None:
        return
    for collection, fields in PURGED_BY.items():
        for name in fields:
            w.delete_many(collection, {name: person})
    for name in STORY_ID_LISTS:
        w.update_many("stories", {name: person}, {"$pull": {name: person}})
    # A reshare's content is what the original's author wrote (``StoryCreated.PERSONAL``): it goes too.
    w.update_many("stories", {"reshared_from.user_id": person}, {"$set": dict.fromkeys(st.ORIGINAL_AUTHORS_FIELDS)})


HANDLERS: dict[type, Callable] = {
    st.StoryCreated: on_story_created,
    st.StoryEdited: on_story_edited,
    en.StoryViewed: on_story_viewed,
    en.StoryNavigated: on_story_navigated,
    en.StoryShared: on_story_shared,
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
    so.UserMuted: on_user_muted,
    so.UserUnmuted: on_user_unmuted,
    ac.AccountErased: on_account_erased,
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
    "muted": {"user_id": 1, "muted_id": 1},
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
    db.question_answers.create_index(
        [("story_id", ASCENDING), ("sticker_index", ASCENDING), ("answered_at", DESCENDING)]
    )
    db.close_friends.create_index([("user_id", ASCENDING), ("added_at", DESCENDING), ("friend_id", ASCENDING)])
    db.muted.create_index([("user_id", ASCENDING), ("muted_at", DESCENDING), ("muted_id", ASCENDING)])
    # Navigation counts for insights: a count scan of this index per action.
    db.story_viewers.create_index([("story_id", ASCENDING), ("navigation", ASCENDING)])
    # What an erasure's purge selects by (``PURGED_BY``, ``on_account_erased``) where no index
    # above starts with the field: a person's views, answers, edges by the other side, and the
    # stories whose lists name them. (The lists' indexes are multikey: one entry per listed id.)
    for collection, name in (
        ("story_viewers", "viewer_id"),
        ("story_viewers", "owner_id"),
        ("owner_viewers", "viewer_id"),
        ("question_answers", "user_id"),
        ("question_answers", "owner_id"),
        ("close_friends", "friend_id"),
        ("muted", "muted_id"),
        ("stories", "allowed_viewer_ids"),
        ("stories", "hidden_from_ids"),
        ("stories", "reshared_from.user_id"),
    ):
        db[collection].create_index([(name, ASCENDING)])
    # One index per shard key, its fields first: sh.shardCollection needs it on a collection that
    # holds documents. They also serve reads: highlights by owner, an owner's distinct viewers
    # (databases made before these keys also hold {user_id: 1} and {owner_id: 1}: redundant now).
    for collection, key in SHARD_KEYS.items():
        if list(key) != ["_id"]:  # the _id index is always there
            db[collection].create_index(shard_key_index(key))


# Collections whose deletes leave a stamped tombstone (``{<shard key>, "_gone": true, "_v"}``)
# instead of removing the document: a stalled runner's late upsert then meets a stamp it cannot
# beat, so it cannot bring a removed entry back. Readers skip tombstones: {"_gone": {"$ne": True}}.
TOMBSTONED = frozenset({"close_friends", "muted"})
DEFAULT_LEASE = timedelta(seconds=5)


def _now() -> datetime:
    return datetime.now(UTC)


class MongoViewStore:
    """Writes a batch idempotently, without multi-document transactions.

    Before a batch it records its intent (``pending_until``) on the position document; then, per
    collection, one unordered ``insert_many`` of the documents the batch creates (a duplicate
    ``_id`` is a document that landed before: skipped, or for one that may have an earlier life,
    its stamped upsert instead) and one ordered ``bulk_write`` of the other writes, each stamped
    and guarded (``DocumentWrites.plan``); afterwards the position moves. A runner killed
    mid-batch is followed by one that re-runs exactly that batch, and the guards skip what
    already landed. Works on a standalone MongoDB, a replica set, or SecantusDB, and an abandoned
    writer holds no locks.

    Fenced: the position document holds a fencing token (``fence``) and a lease. A store takes
    the token when it first applies a batch (a process that starts is taken to replace one that
    died), and afterwards only once the holder's lease has run out; the intent, the lease's
    renewals (before each collection's writes, once half of it is used) and the position's move
    are all conditional on the token, so a runner that stalled and was overtaken stops at its next
    one (StalePosition). Writes it already had in flight are harmless: they carry its batch's
    stamps, which the runner that overtook it has met or passed on every document, deletes
    included (tombstones). The lease only keeps two live runners from doing the same work; it
    is read from each runner's clock, and correctness never depends on it.
    """

    def __init__(
        self,
        client: MongoClient,
        database: str,
        name: str = "mongo_views",
        indexes: bool = True,
        lease: timedelta = DEFAULT_LEASE,
    ) -> None:
        self.name = name
        self.client = client
        self.db = client[database]
        self.lease = lease
        self.holder = uuid4().hex
        self.fence: int | None = None
        self._took = False  # took the token once: from then on, only from an expired lease
        self._renew_at = 0.0
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

    def _lease_fields(self) -> dict:
        self._renew_at = time.monotonic() + self.lease.total_seconds() / 2
        return {"holder": self.holder, "lease_until": _now() + self.lease}

    def _take_fence(self) -> None:
        """Take the fencing token: at once the first time, else only when the lease ran out."""
        taken = {} if not self._took else {"$or": [{"lease_until": None}, {"lease_until": {"$lte": _now()}}]}
        doc = self.db[POSITIONS].find_one_and_update(
            {"_id": self.name, **taken},
            {"$inc": {"fence": 1}, "$set": self._lease_fields()},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise StalePosition(f"{self.name}: another runner holds the lease")
        self._took, self.fence = True, doc["fence"]

    def _fenced(self, result) -> None:
        """After a write conditional on the token: StalePosition when it did not match (the token
        was taken by another runner, or the position moved)."""
        if result.matched_count == 0:
            if (self._checkpoint().get("fence")) != self.fence:
                self.fence = None
            raise StalePosition(self.name)

    def _renew_if_due(self) -> None:
        if time.monotonic() >= self._renew_at:
            self._fenced(
                self.db[POSITIONS].update_one({"_id": self.name, "fence": self.fence}, {"$set": self._lease_fields()})
            )

    def apply(self, events: list[LoggedEvent], start: int, position: int) -> None:
        writes = DocumentWrites()
        for logged in events:
            HANDLERS[type(logged.event)](writes, logged.event, logged)
        if self.fence is None:
            self._take_fence()
        positions = self.db[POSITIONS]
        at = {"_id": self.name, "position": start, "pending_until": {"$in": [None, position]}, "fence": self.fence}
        if writes:
            self._fenced(positions.update_one(at, {"$set": {"pending_until": position, **self._lease_fields()}}))
            for collection, plan in writes.plan(position, TOMBSTONED).items():
                self._renew_if_due()
                _write_plan(self.db[collection], plan)
            at["pending_until"] = position
        self._fenced(
            positions.update_one(at, {"$set": {"position": position, "pending_until": None, **self._lease_fields()}})
        )


def _write_plan(collection, plan: CollectionPlan) -> None:
    """The batch's inserts in one unordered insert_many (a duplicate ``_id``: skipped, or its
    stamped upsert instead), then the other writes in order (``_write_skipping_landed``)."""
    retry: list = []
    if plan.inserts:
        try:
            collection.insert_many(plan.inserts, ordered=False)
        except BulkWriteError as error:
            for failed in error.details["writeErrors"]:
                if failed["code"] != 11000:
                    raise
                fallback = plan.on_duplicate[failed["index"]]
                if fallback is not None:
                    retry.append((failed["index"], fallback))
    _write_skipping_landed(collection, [op for _, op in sorted(retry, key=lambda r: r[0])] + plan.updates)


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
            ops = ops[first["index"] + 1 :]
