"""Projection handlers as pure functions: DocumentWrites merging, each MongoDB handler's document
updates, and each Redis handler's commands (on a recording fake pipeline)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo import DeleteOne, UpdateOne

from commands.event_store import LoggedEvent
from domain import engagement as en
from domain import highlights as hl
from domain import social as so
from domain import stories as sto
from projections import mongo_views, redis_views
from projections.document_writes import STAMP_SPAN, DocumentWrites
from projections.redis_schema import Keys, LiveEntry, counters_from_hash
from projections.redis_views import BatchWrites

T = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
SID = "0b7c3b9e-6f2d-4a3b-9f59-0a0d2f3c1e11"
HID = "5a1e0f2c-1d2e-4f3a-8b9c-7d6e5f4a3b2c"


def ev(cls, at: datetime = T, **fields):
    return cls(originator_id=uuid4(), originator_version=1, occurred_at=at, **fields)


def logged(event, position: int = 7) -> LoggedEvent:
    return LoggedEvent(position, event)


def unstamped(op):
    """An operation without its idempotency stamp (the ``_v`` guard and ``$set._v``)."""
    key = op._filter["_id"]
    if isinstance(op, DeleteOne):
        return DeleteOne({"_id": key})
    update = {
        name: {k: v for k, v in values.items() if not (name == "$set" and k == "_v")}
        for name, values in op._doc.items()
    }
    return UpdateOne({"_id": key}, {name: values for name, values in update.items() if values}, upsert=op._upsert)


def ops(w: DocumentWrites, batch_end: int = 1) -> dict[str, list]:
    return {c: [unstamped(o) for o in found] for c, found in w.operations(batch_end).items()}


def U(key, update, upsert=True):
    return UpdateOne({"_id": key}, update, upsert=upsert)


# -- DocumentWrites: merging ----------------------------------------------------------------------


def test_inc_sums_for_one_document():
    w = DocumentWrites()
    for _ in range(3):
        w.update("stories", "s1", {"$inc": {"view_count": 1, "views_by_hour.12": 1}})
    w.update("stories", "s1", {"$inc": {"view_count": 5}})
    assert ops(w) == {"stories": [U("s1", {"$inc": {"view_count": 8, "views_by_hour.12": 3}})]}
    assert len(w) == 1


def test_documents_and_collections_stay_apart():
    w = DocumentWrites()
    w.update("stories", "s1", {"$inc": {"n": 1}})
    w.update("stories", "s2", {"$inc": {"n": 1}})
    w.update("viewers", "s1", {"$inc": {"n": 1}})
    w.update("stories", "s1", {"$inc": {"n": 1}})
    assert ops(w) == {
        "stories": [U("s1", {"$inc": {"n": 2}}), U("s2", {"$inc": {"n": 1}})],
        "viewers": [U("s1", {"$inc": {"n": 1}})],
    }


def test_set_last_wins_and_set_on_insert_first_wins():
    w = DocumentWrites()
    w.update("c", "k", {"$set": {"a": 1, "b": 1}, "$setOnInsert": {"x": "first"}})
    w.update("c", "k", {"$set": {"a": 2}, "$setOnInsert": {"x": "second"}})
    w.update("c", "k", {"$set": {"a": 3}})
    assert ops(w) == {"c": [U("k", {"$set": {"a": 3, "b": 1}, "$setOnInsert": {"x": "first"}})]}


def test_max_and_min_keep_the_extremes():
    w = DocumentWrites()
    times = [T + timedelta(minutes=m) for m in (5, 1, 9, 3)]
    for at in times:
        w.update("v", "s:u", {"$min": {"first": at}, "$max": {"last": at}, "$inc": {"n": 1}})
    assert ops(w) == {"v": [U("s:u", {"$min": {"first": min(times)}, "$max": {"last": max(times)}, "$inc": {"n": 4}})]}


def test_same_field_with_another_operator_stays_separate_and_ordered():
    w = DocumentWrites()
    w.update("c", "k", {"$inc": {"a": 1}})
    w.update("c", "k", {"$set": {"a": 10}})
    w.update("c", "k", {"$set": {"a": 11}})  # merges into the $set just before it
    w.update("c", "k", {"$inc": {"a": 2}})
    assert ops(w) == {"c": [U("k", {"$inc": {"a": 1}}), U("k", {"$set": {"a": 11}}), U("k", {"$inc": {"a": 2}})]}


def test_overlapping_paths_stay_separate():
    w = DocumentWrites()
    w.update("c", "k", {"$set": {"results": {}}})
    w.update("c", "k", {"$inc": {"results.0.total": 1}})
    w.update("c", "k", {"$inc": {"results.0.total": 1, "results.0.options.1": 1}})
    w.update("c", "k", {"$set": {"results.0": {"total": 0}}})
    assert ops(w) == {
        "c": [
            U("k", {"$set": {"results": {}}}),
            U("k", {"$inc": {"results.0.total": 2, "results.0.options.1": 1}}),
            U("k", {"$set": {"results.0": {"total": 0}}}),
        ]
    }


def test_push_and_pull_never_merge():
    w = DocumentWrites()
    w.update("h", "k", {"$push": {"ids": {"$each": ["a"]}}}, upsert=False)
    w.update("h", "k", {"$push": {"ids": {"$each": ["b"]}}}, upsert=False)
    w.update("h", "k", {"$pull": {"ids": {"$in": ["a"]}}}, upsert=False)
    assert ops(w) == {
        "h": [
            U("k", {"$push": {"ids": {"$each": ["a"]}}}, upsert=False),
            U("k", {"$push": {"ids": {"$each": ["b"]}}}, upsert=False),
            U("k", {"$pull": {"ids": {"$in": ["a"]}}}, upsert=False),
        ]
    }


def test_upsert_and_plain_updates_do_not_merge():
    w = DocumentWrites()
    w.update("c", "k", {"$inc": {"a": 1}}, upsert=True)
    w.update("c", "k", {"$inc": {"a": 1}}, upsert=False)
    assert ops(w) == {"c": [U("k", {"$inc": {"a": 1}}), U("k", {"$inc": {"a": 1}}, upsert=False)]}


def test_deletes_keep_their_place():
    w = DocumentWrites()
    w.update("cf", "a:b", {"$set": {"x": 1}})
    w.delete("cf", "a:b")
    w.update("cf", "a:b", {"$set": {"x": 2}})
    w.update("cf", "a:b", {"$set": {"y": 3}})
    w.delete("cf", "a:b")
    assert ops(w) == {
        "cf": [
            U("a:b", {"$set": {"x": 1}}),
            DeleteOne({"_id": "a:b"}),
            U("a:b", {"$set": {"x": 2, "y": 3}}),
            DeleteOne({"_id": "a:b"}),
        ]
    }
    assert len(w) == 4


def test_merging_does_not_alter_the_callers_dicts():
    w = DocumentWrites()
    first = {"$inc": {"a": 1}}
    second = {"$inc": {"a": 2}}
    w.update("c", "k", first)
    w.update("c", "k", second)
    assert first == {"$inc": {"a": 1}} and second == {"$inc": {"a": 2}}


def test_set_on_insert_added_later_is_not_applied_to_a_document_the_batch_inserts():
    w = DocumentWrites()
    w.update("c", "k", {"$inc": {"n": 1}})
    w.update("c", "k", {"$setOnInsert": {"tag": "late"}})
    merged = strip_stamps(run_ops(w.operations(1)["c"], {}))
    assert merged == run_sequential([("k", {"$inc": {"n": 1}}, True), ("k", {"$setOnInsert": {"tag": "late"}}, True)])


# -- a plain in-memory model of the MongoDB update operators used -------------------------------


def _parts(path: str) -> list[str]:
    return path.split(".")


def _get(doc: dict, path: str):
    node = doc
    for part in _parts(path):
        if not isinstance(node, dict) or part not in node:
            return None, False
        node = node[part]
    return node, True


def _put(doc: dict, path: str, value) -> None:
    *parents, last = _parts(path)
    node = doc
    for part in parents:
        node = node.setdefault(part, {})
        assert isinstance(node, dict), f"cannot create {path} in a non-document"
    node[last] = copy.deepcopy(value)


def _check_no_conflicts(update: dict) -> None:
    paths = [p for values in update.values() for p in values]
    for i, a in enumerate(paths):
        for b in paths[i + 1 :]:
            assert not (a == b or a.startswith(b + ".") or b.startswith(a + ".")), f"conflicting paths {a} / {b}"


def apply_update(doc: dict | None, key, update: dict, upsert: bool) -> dict | None:
    """What MongoDB does with one update; None = no document."""
    _check_no_conflicts(update)
    inserting = doc is None
    if inserting and not upsert:
        return None
    out = {"_id": key} if inserting else copy.deepcopy(doc)
    for op, values in update.items():
        for path, value in values.items():
            current, present = _get(out, path)
            if op == "$set":
                _put(out, path, value)
            elif op == "$setOnInsert":
                if inserting:
                    _put(out, path, value)
            elif op == "$inc":
                _put(out, path, (current if present else 0) + value)
            elif op == "$max":
                _put(out, path, value if not present or value > current else current)
            elif op == "$min":
                _put(out, path, value if not present or value < current else current)
            else:
                raise AssertionError(f"model does not know {op}")
    return out


def run_sequential(updates) -> dict:
    docs: dict = {}
    for key, update, upsert in updates:
        if update is None:
            docs.pop(key, None)
            continue
        result = apply_update(docs.get(key), key, update, upsert)
        if result is not None:
            docs[key] = result
    return docs


def run_ops(operations, docs: dict) -> dict:
    """Run stamped operations as MongoDB would, with the projector's handling of a guarded upsert
    whose write already landed (duplicate key: skipped)."""
    docs = copy.deepcopy(docs)
    for op in operations:
        key, guard = op._filter["_id"], op._filter.get("_v")
        doc = docs.get(key)
        matched = doc is not None and (guard is None or ("_v" in doc and doc["_v"] < guard["$lt"]))
        if isinstance(op, DeleteOne):
            if matched:
                del docs[key]
            continue
        if matched or (doc is None and op._upsert):
            docs[key] = apply_update(doc if matched else None, key, op._doc, op._upsert)
        # else: no match (plain update), or an upsert whose guard failed: duplicate key, skipped
    return docs


def strip_stamps(docs: dict) -> dict:
    return {k: {f: v for f, v in d.items() if f != "_v"} for k, d in docs.items()}


PATHS = ["a", "b", "r", "r.x", "r.y", "r.z", "r.z.q", "h.1", "h.2"]
DOCUMENT_PATHS = {"r", "r.z"}
OPS = ["$inc", "$set", "$max", "$min"]


@st.composite
def one_update(draw):
    chosen = draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=3, unique=True))
    # no two paths of one update may overlap (MongoDB refuses such an update)
    picked: list[str] = []
    for p in chosen:
        if not any(p == q or p.startswith(q + ".") or q.startswith(p + ".") for q in picked):
            picked.append(p)
    update: dict = {}
    for p in picked:
        if p in DOCUMENT_PATHS:  # whole sub-documents: only ever $set
            update.setdefault("$set", {})[p] = {"x": draw(st.integers(min_value=-5, max_value=5))}
            continue
        op = draw(st.sampled_from(OPS))
        update.setdefault(op, {})[p] = draw(st.integers(min_value=-5, max_value=5))
    return update


steps = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["k1", "k2"]), one_update(), st.booleans()),
        st.tuples(st.sampled_from(["k1", "k2"]), st.none(), st.just(True)),
    ),
    max_size=25,
)


INITIAL = st.fixed_dictionaries(
    {
        "k1": st.none() | st.just({"_id": "k1", "a": 3, "r": {"x": 1}, "_v": 5}),
        "k2": st.none() | st.just({"_id": "k2", "h": {"1": 2}, "_v": 5}),
    }
)


def collect(sequence) -> DocumentWrites:
    w = DocumentWrites()
    for key, update, upsert in sequence:
        if update is None:
            w.delete("c", key)
        else:
            w.update("c", key, update, upsert=upsert)
    return w


@settings(max_examples=400)
@given(INITIAL, steps)
def test_merged_writes_equal_one_by_one(initial, sequence):
    start = {k: v for k, v in initial.items() if v is not None}
    w = collect(sequence)
    merged = run_ops(w.operations(1).get("c", []), start)
    one_by_one = copy.deepcopy(start)
    for key, update, upsert in sequence:
        if update is None:
            one_by_one.pop(key, None)
        else:
            result = apply_update(one_by_one.get(key), key, update, upsert)
            if result is not None:
                one_by_one[key] = result
    assert strip_stamps(merged) == strip_stamps(one_by_one)
    assert len(w) <= len(sequence)


@settings(max_examples=300)
@given(INITIAL, steps, st.integers(min_value=0, max_value=30))
def test_a_batch_run_again_after_a_crash_changes_nothing(initial, sequence, landed):
    """The stamps make a re-run of a batch (after a crash part-way) skip what already landed."""
    start = {k: v for k, v in initial.items() if v is not None}
    operations = collect(sequence).operations(2).get("c", [])
    once = run_ops(operations, start)
    partly = run_ops(operations[:landed], start)
    assert run_ops(operations, partly) == once
    assert run_ops(operations, once) == once


def test_stamps_grow_through_the_batch_and_guard_every_write():
    w = DocumentWrites()
    w.update("a", "k", {"$inc": {"n": 1}})
    w.update("b", "k", {"$set": {"x": 1}}, upsert=False)
    w.delete("a", "j")
    w.update("a", "k", {"$inc": {"n": 1}})  # merges into the first
    out = w.operations(7)
    stamps = []
    for collection in ("a", "b"):
        for op in out[collection]:
            stamp = op._filter["_v"]["$lt"]
            if isinstance(op, UpdateOne):
                assert op._doc["$set"]["_v"] == stamp
            stamps.append(stamp)
    assert sorted(stamps) == [7 * STAMP_SPAN + i for i in (1, 2, 3)]
    assert w.operations(8)["a"][0]._filter["_v"]["$lt"] > max(stamps)  # a later batch stamps higher


# -- MongoDB handlers -----------------------------------------------------------------------------


STICKERS = [
    {
        "sticker_type": "poll",
        "x": 0.5,
        "y": 0.5,
        "width": 0.3,
        "height": 0.1,
        "rotation": 0.0,
        "poll": {"question": "Q?", "options": [{"text": "A"}, {"text": "B"}]},
    },
]


def story_created(**over):
    fields = {
        "story_id": SID,
        "user_id": "alice",
        "story_type": "image",
        "media_id": None,
        "media_url": "https://x.org/a.jpg",
        "thumbnail_url": None,
        "text_content": None,
        "background_color": None,
        "background_gradient": None,
        "duration": 5.0,
        "stickers": STICKERS,
        "privacy": "followers",
        "allowed_viewer_ids": [],
        "hidden_from_ids": ["eve"],
        "allow_replies": "everyone",
        "expires_at": (T + timedelta(hours=24)).isoformat(),
    }
    fields.update(over)
    return ev(sto.StoryCreated, **fields)


def handle(event, position=7):
    w = DocumentWrites()
    mongo_views.HANDLERS[type(event)](w, event, logged(event, position))
    return ops(w, position)


def sticker_fields(**over):
    return dict(story_id=SID, owner_id="alice", user_id="bob", sticker_index=0, **over)


def test_every_catalogued_event_has_a_mongo_and_a_redis_handler():
    from domain.catalogue import EVENT_TYPES

    assert set(EVENT_TYPES.values()) == set(mongo_views.HANDLERS) == set(redis_views.HANDLERS)


def test_mongo_story_created():
    e = story_created()
    got = handle(e)
    assert list(got) == ["stories"]
    (op,) = got["stories"]
    assert op._filter == {"_id": SID} and op._upsert is True
    fields = op._doc["$set"]
    assert fields["user_id"] == "alice" and fields["privacy"] == "followers" and fields["hidden_from_ids"] == ["eve"]
    assert fields["created_at"] == T and fields["expires_at"] == T + timedelta(hours=24)
    assert fields["deleted"] is False and fields["expired"] is False
    assert fields["stickers"] == STICKERS


def test_mongo_story_viewed_first_and_repeat():
    first = ev(en.StoryViewed, story_id=SID, owner_id="alice", viewer_id="bob", view_number=1)
    got = handle(first)
    assert got["stories"] == [
        U(SID, {"$inc": {"view_count": 1, "unique_viewers": 1, "views_by_hour.12": 1}}, upsert=False)
    ]
    assert got["story_viewers"] == [
        U(
            f"{SID}:bob",
            {
                "$setOnInsert": {"story_id": SID, "viewer_id": "bob", "owner_id": "alice"},
                "$min": {"first_viewed_at": T},
                "$max": {"last_viewed_at": T},
                "$inc": {"view_count": 1},
            },
        )
    ]
    again = ev(
        en.StoryViewed, at=T + timedelta(hours=3), story_id=SID, owner_id="alice", viewer_id="bob", view_number=2
    )
    assert handle(again)["stories"] == [
        U(SID, {"$inc": {"view_count": 1, "unique_viewers": 0, "views_by_hour.15": 1}}, upsert=False)
    ]


def test_mongo_views_of_one_batch_merge():
    w = DocumentWrites()
    for n, (viewer, minute) in enumerate([("bob", 5), ("carol", 1), ("bob", 9)]):
        e = ev(
            en.StoryViewed,
            at=T + timedelta(minutes=minute),
            story_id=SID,
            owner_id="alice",
            viewer_id=viewer,
            view_number=1 if n < 2 else 2,
        )
        mongo_views.HANDLERS[type(e)](w, e, logged(e))
    got = ops(w)
    assert got["stories"] == [
        U(SID, {"$inc": {"view_count": 3, "unique_viewers": 2, "views_by_hour.12": 3}}, upsert=False)
    ]
    bob = [o for o in got["story_viewers"] if o._filter["_id"] == f"{SID}:bob"]
    assert bob == [
        U(
            f"{SID}:bob",
            {
                "$setOnInsert": {"story_id": SID, "viewer_id": "bob", "owner_id": "alice"},
                "$min": {"first_viewed_at": T + timedelta(minutes=5)},
                "$max": {"last_viewed_at": T + timedelta(minutes=9)},
                "$inc": {"view_count": 2},
            },
        )
    ]


@pytest.mark.parametrize(
    "event, expected",
    [
        (
            lambda: ev(en.StoryReplied, story_id=SID, owner_id="alice", user_id="bob", reply_number=1, text="hi"),
            {"$inc": {"reply_count": 1}},
        ),
        (
            lambda: ev(en.PollVoted, **sticker_fields(option_index=1)),
            {"$inc": {"results.0.options.1": 1, "results.0.total": 1}},
        ),
        (
            lambda: ev(en.QuizAnswered, **sticker_fields(option_index=2, correct=True, correct_answer_index=2)),
            {"$inc": {"results.0.options.2": 1, "results.0.total": 1, "results.0.correct": 1}},
        ),
        (
            lambda: ev(en.QuizAnswered, **sticker_fields(option_index=0, correct=False, correct_answer_index=2)),
            {"$inc": {"results.0.options.0": 1, "results.0.total": 1, "results.0.correct": 0}},
        ),
        (
            lambda: ev(en.CountdownFollowed, **sticker_fields()),
            {"$inc": {"results.0.followers": 1, "results.0.total": 1}},
        ),
        (lambda: ev(en.CountdownUnfollowed, **sticker_fields()), {"$inc": {"results.0.followers": -1}}),
        (
            lambda: ev(en.SliderAnswered, **sticker_fields(value=0.75)),
            {"$inc": {"results.0.ssum": 0.75 * 2.0**-64, "results.0.total": 1}},
        ),
        (lambda: ev(en.LinkTapped, **sticker_fields(tap_number=1)), {"$inc": {"results.0.total": 1}}),
        (lambda: ev(sto.StoryDeleted, story_id=SID, user_id="alice"), {"$set": {"deleted": True, "deleted_at": T}}),
        (
            lambda: ev(sto.StoryExpired, story_id=SID, user_id="alice", expired_at=T.isoformat()),
            {"$set": {"expired": True}},
        ),
    ],
    ids=[
        "reply",
        "poll",
        "quiz-right",
        "quiz-wrong",
        "countdown-follow",
        "countdown-unfollow",
        "slider",
        "link",
        "deleted",
        "expired",
    ],
)
def test_mongo_story_counters(event, expected):
    assert handle(event()) == {"stories": [U(SID, expected, upsert=False)]}


def test_mongo_question_answered_keeps_the_answer_by_event_id():
    e = ev(en.QuestionAnswered, **sticker_fields(answer_number=1, text="why?"))
    got = handle(e, position=42)
    assert got["stories"] == [U(SID, {"$inc": {"results.0.total": 1}}, upsert=False)]
    assert got["question_answers"] == [
        U(
            str(logged(e, 42).event_id),
            {
                "$set": {
                    "story_id": SID,
                    "owner_id": "alice",
                    "sticker_index": 0,
                    "user_id": "bob",
                    "text": "why?",
                    "answered_at": T,
                }
            },
        )
    ]


def test_mongo_highlight_handlers():
    created = ev(
        hl.HighlightCreated,
        highlight_id=HID,
        user_id="alice",
        title="Trips",
        description="",
        cover=None,
        story_ids=[SID],
        is_pinned=True,
        is_archived=False,
    )
    (op,) = handle(created)["highlights"]
    assert op._filter == {"_id": HID} and op._upsert
    assert op._doc["$set"]["story_ids"] == [SID] and op._doc["$set"]["is_pinned"] is True
    assert op._doc["$set"]["created_at"] == T == op._doc["$set"]["updated_at"] and op._doc["$set"]["deleted"] is False

    updated = ev(hl.HighlightUpdated, highlight_id=HID, user_id="alice", changes={"title": "New", "cover": None})
    assert handle(updated) == {
        "highlights": [U(HID, {"$set": {"title": "New", "cover": None, "updated_at": T}}, False)]
    }
    added = ev(hl.HighlightStoriesAdded, highlight_id=HID, user_id="alice", story_ids=["s2", "s3"])
    assert handle(added) == {"highlights": [U(HID, {"$push": {"story_ids": {"$each": ["s2", "s3"]}}}, False)]}
    removed = ev(hl.HighlightStoriesRemoved, highlight_id=HID, user_id="alice", story_ids=["s2"])
    assert handle(removed) == {"highlights": [U(HID, {"$pull": {"story_ids": {"$in": ["s2"]}}}, False)]}
    deleted = ev(hl.HighlightDeleted, highlight_id=HID, user_id="alice")
    assert handle(deleted) == {"highlights": [U(HID, {"$set": {"deleted": True, "updated_at": T}}, False)]}
    filed = ev(hl.HighlightFiled, user_id="alice", highlight_id=HID)
    assert handle(filed) == {"highlight_reels": [U("alice", {"$push": {"highlight_ids": HID}})]}
    unfiled = ev(hl.HighlightUnfiled, user_id="alice", highlight_id=HID)
    assert handle(unfiled) == {"highlight_reels": [U("alice", {"$pull": {"highlight_ids": HID}})]}
    reordered = ev(hl.HighlightsReordered, user_id="alice", highlight_ids=[HID, "h2"])
    assert handle(reordered) == {"highlight_reels": [U("alice", {"$set": {"highlight_ids": [HID, "h2"]}})]}


def test_mongo_social_handlers():
    added = ev(so.CloseFriendAdded, user_id="alice", friend_id="bob")
    assert handle(added) == {
        "close_friends": [U("alice:bob", {"$set": {"user_id": "alice", "friend_id": "bob", "added_at": T}})]
    }
    removed = ev(so.CloseFriendRemoved, user_id="alice", friend_id="bob")
    assert handle(removed) == {"close_friends": [DeleteOne({"_id": "alice:bob"})]}
    assert handle(ev(so.UserFollowed, follower_id="bob", followee_id="alice")) == {}
    assert handle(ev(so.UserUnfollowed, follower_id="bob", followee_id="alice")) == {}


def test_mongo_add_then_remove_close_friend_in_one_batch_ends_deleted():
    w = DocumentWrites()
    for e in (
        ev(so.CloseFriendAdded, user_id="alice", friend_id="bob"),
        ev(so.CloseFriendRemoved, user_id="alice", friend_id="bob"),
    ):
        mongo_views.HANDLERS[type(e)](w, e, logged(e))
    assert run_ops(w.operations(9)["close_friends"], {}) == {}


# -- Redis handlers, on a recording fake pipeline -------------------------------------------------


K = Keys("p:")
EXPIRES_MS = int((T + timedelta(hours=24)).timestamp() * 1000)
MEMBER = LiveEntry(SID, "alice", "followers", int(T.timestamp() * 1000), EXPIRES_MS, "hi").encode()


def redis_calls(event, live: bool = True) -> list[tuple]:
    """The commands one event queues, with its story live in Redis (or gone), expiries included."""
    writes = BatchWrites(grace_ms=0, live={SID: LiveEntry.decode(MEMBER) if live else None})
    redis_views.HANDLERS[type(event)](writes, K, event)
    writes.set_expiries()
    return writes.calls


def test_keys_layout_keeps_a_users_and_a_storys_keys_in_one_cluster_slot():
    assert K.following("u") == "p:following:{u}" and K.followers("u") == "p:followers:{u}"
    assert K.close_friends("o") == "p:cf:{o}" and K.live("a") == "p:live:{a}" and K.seen("v") == "p:seen:{v}"
    assert all(key.endswith("{s}") for key in K.story_keys("s"))
    assert K.position("x") == "p:position:x" and K.expiry_due == "p:expiry:{~expiry}"
    assert K.stamps("u") == "p:at:{u}"


def test_redis_story_created_writes_card_counters_lists_and_live_entry_with_expiries():
    e = story_created()
    calls = redis_calls(e, live=False)
    names = [c[0] for c in calls]
    assert names[:4] == ["set", "hset", "sadd", "sadd"]
    key, card = calls[0][1]
    assert key == K.card(SID)
    card = orjson.loads(card)
    assert card["story_id"] == SID and card["user_id"] == "alice" and card["privacy"] == "followers"
    assert card["hidden_from_ids"] == ["eve"] and card["created_at"] == T.isoformat()
    assert calls[1] == ("hset", (K.counters(SID), "m", MEMBER))
    assert calls[2] == ("sadd", (K.hidden(SID), "eve"))
    assert calls[3] == ("sadd", (K.live("alice"), MEMBER))
    life = 24 * 3600 * 1000
    expiries = {c[1][0]: c for c in calls if c[0] == "pexpire"}
    assert set(expiries) == {K.card(SID), K.counters(SID), K.hidden(SID), K.live("alice")}
    assert expiries[K.card(SID)] == ("pexpire", (K.card(SID), life))
    # the live set holds several stories: the longest expiry wins (NX, then GT)
    assert ("pexpire", (K.live("alice"), life), {"nx": True}) in calls
    assert ("pexpire", (K.live("alice"), life), {"gt": True}) in calls


GT_OPT = {"gt": True}
LATER = T + timedelta(hours=1)


@pytest.mark.parametrize(
    "event, expected",
    [
        (
            lambda: ev(en.StoryViewed, at=LATER, story_id=SID, owner_id="alice", viewer_id="bob", view_number=1),
            [
                ("hincrby", (K.counters(SID), "v", 1)),
                ("hincrby", (K.counters(SID), "u", 1)),
                ("zadd", (K.seen("bob"), {SID: int(LATER.timestamp() * 1000)}), {"nx": True}),
                ("zremrangebyscore", (K.seen("bob"), "-inf", f"({int(LATER.timestamp() * 1000) - 48 * 3600 * 1000}")),
                ("zadd", (K.seen("bob"), {"~due": EXPIRES_MS}), GT_OPT),
                ("zadd", (K.seen_due, {"bob": EXPIRES_MS}), GT_OPT),
                ("pexpire", (K.seen("bob"), 23 * 3600 * 1000), {"nx": True}),
                ("pexpire", (K.seen("bob"), 23 * 3600 * 1000), GT_OPT),
            ],
        ),
        (
            lambda: ev(en.StoryViewed, at=LATER, story_id=SID, owner_id="alice", viewer_id="bob", view_number=2),
            [
                ("hincrby", (K.counters(SID), "v", 1)),
                ("zadd", (K.seen("bob"), {SID: int(LATER.timestamp() * 1000)}), {"nx": True}),
                ("zremrangebyscore", (K.seen("bob"), "-inf", f"({int(LATER.timestamp() * 1000) - 48 * 3600 * 1000}")),
                ("zadd", (K.seen("bob"), {"~due": EXPIRES_MS}), GT_OPT),
                ("zadd", (K.seen_due, {"bob": EXPIRES_MS}), GT_OPT),
                ("pexpire", (K.seen("bob"), 23 * 3600 * 1000), {"nx": True}),
                ("pexpire", (K.seen("bob"), 23 * 3600 * 1000), GT_OPT),
            ],
        ),
        (
            lambda: ev(en.StoryReplied, story_id=SID, owner_id="alice", user_id="bob", reply_number=1, text="hi"),
            [("hincrby", (K.counters(SID), "r", 1))],
        ),
        (
            lambda: ev(en.PollVoted, **sticker_fields(option_index=1)),
            [
                ("hincrby", (K.counters(SID), "0:t", 1)),
                ("hincrby", (K.counters(SID), "0:o1", 1)),
                ("hset", (K.answers(SID), "0:bob", 1)),
                ("pexpire", (K.answers(SID), 24 * 3600 * 1000)),
            ],
        ),
        (
            lambda: ev(en.QuizAnswered, **sticker_fields(option_index=2, correct=True, correct_answer_index=2)),
            [
                ("hincrby", (K.counters(SID), "0:t", 1)),
                ("hincrby", (K.counters(SID), "0:o2", 1)),
                ("hincrby", (K.counters(SID), "0:c", 1)),
                ("hset", (K.answers(SID), "0:bob", 2)),
                ("pexpire", (K.answers(SID), 24 * 3600 * 1000)),
            ],
        ),
        (
            lambda: ev(en.SliderAnswered, **sticker_fields(value=0.25)),
            [
                ("hincrby", (K.counters(SID), "0:t", 1)),
                ("hincrbyfloat", (K.counters(SID), "0:s", 0.25)),
                ("hset", (K.answers(SID), "0:bob", 0.25)),
                ("pexpire", (K.answers(SID), 24 * 3600 * 1000)),
            ],
        ),
        (
            lambda: ev(en.CountdownFollowed, **sticker_fields()),
            [
                ("hincrby", (K.counters(SID), "0:t", 1)),
                ("hincrby", (K.counters(SID), "0:f", 1)),
                ("hset", (K.answers(SID), "0:bob", 1)),
                ("pexpire", (K.answers(SID), 24 * 3600 * 1000)),
            ],
        ),
        (
            lambda: ev(en.CountdownUnfollowed, **sticker_fields()),
            [("hincrby", (K.counters(SID), "0:f", -1)), ("hdel", (K.answers(SID), "0:bob"))],
        ),
        (lambda: ev(en.LinkTapped, **sticker_fields(tap_number=1)), [("hincrby", (K.counters(SID), "0:t", 1))]),
        (
            lambda: ev(sto.StoryDeleted, story_id=SID, user_id="alice"),
            [("srem", (K.live("alice"), MEMBER)), ("unlink", K.story_keys(SID))],
        ),
        (
            lambda: ev(sto.StoryExpired, story_id=SID, user_id="alice", expired_at=T.isoformat()),
            [("srem", (K.live("alice"), MEMBER)), ("unlink", K.story_keys(SID))],
        ),
        (
            lambda: ev(so.UserFollowed, follower_id="bob", followee_id="alice"),
            [("sadd", (K.following("bob"), "alice")), ("sadd", (K.followers("alice"), "bob"))],
        ),
        (
            lambda: ev(so.UserUnfollowed, follower_id="bob", followee_id="alice"),
            [("srem", (K.following("bob"), "alice")), ("srem", (K.followers("alice"), "bob"))],
        ),
        (
            lambda: ev(so.CloseFriendAdded, user_id="alice", friend_id="bob"),
            [("sadd", (K.close_friends("alice"), "bob")), ("sadd", (K.close_friend_of("bob"), "alice"))],
        ),
        (
            lambda: ev(so.CloseFriendRemoved, user_id="alice", friend_id="bob"),
            [("srem", (K.close_friends("alice"), "bob")), ("srem", (K.close_friend_of("bob"), "alice"))],
        ),
        (
            lambda: ev(
                hl.HighlightCreated,
                highlight_id=HID,
                user_id="alice",
                title="t",
                description="",
                cover=None,
                story_ids=[SID],
                is_pinned=False,
                is_archived=False,
            ),
            [],
        ),
        (lambda: ev(hl.HighlightsReordered, user_id="alice", highlight_ids=[HID]), []),
    ],
    ids=[
        "viewed-first",
        "viewed-again",
        "replied",
        "poll",
        "quiz",
        "slider",
        "countdown-follow",
        "countdown-unfollow",
        "link",
        "deleted",
        "expired",
        "followed",
        "unfollowed",
        "cf-added",
        "cf-removed",
        "highlight-created",
        "highlights-reordered",
    ],
)
def test_redis_handlers(event, expected):
    assert redis_calls(event()) == expected


@pytest.mark.parametrize(
    "event",
    [
        lambda: ev(en.StoryViewed, story_id=SID, owner_id="alice", viewer_id="bob", view_number=1),
        lambda: ev(en.StoryReplied, story_id=SID, owner_id="alice", user_id="bob", reply_number=1, text="hi"),
        lambda: ev(en.PollVoted, **sticker_fields(option_index=1)),
        lambda: ev(en.QuestionAnswered, **sticker_fields(answer_number=1, text="?")),
        lambda: ev(en.CountdownFollowed, **sticker_fields()),
    ],
    ids=["viewed", "replied", "poll", "question", "countdown"],
)
def test_an_event_about_a_story_gone_from_redis_writes_nothing(event):
    """A late view (logged after the story expired) must not recreate the state Redis let go."""
    assert redis_calls(event(), live=False) == []


def test_redis_and_mongo_handle_the_same_event_types():
    assert set(redis_views.HANDLERS) == set(mongo_views.HANDLERS)


def test_counters_read_back_in_the_shape_of_a_mongo_story():
    """Feed stories (Redis) and every other story (MongoDB) go through one presenter."""
    from projections.document_writes import DocumentWrites

    events = [
        ev(en.StoryViewed, story_id=SID, owner_id="alice", viewer_id="bob", view_number=1),
        ev(en.StoryViewed, story_id=SID, owner_id="alice", viewer_id="bob", view_number=2),
        ev(en.StoryReplied, story_id=SID, owner_id="alice", user_id="bob", reply_number=1, text="hi"),
        ev(en.PollVoted, **sticker_fields(option_index=1)),
        ev(
            en.QuizAnswered,
            **{**sticker_fields(option_index=0, correct=True, correct_answer_index=0), "sticker_index": 1},
        ),
        ev(en.SliderAnswered, **{**sticker_fields(value=0.5), "sticker_index": 2}),
        ev(en.CountdownFollowed, **{**sticker_fields(), "sticker_index": 3}),
    ]
    hash_: dict[bytes, bytes] = {}
    for event in events:
        writes = BatchWrites(live={SID: LiveEntry.decode(MEMBER)})
        redis_views.HANDLERS[type(event)](writes, K, event)
        for name, args, *_ in writes.calls:
            if name in ("hincrby", "hincrbyfloat") and args[0] == K.counters(SID):
                field = args[1].encode()
                old = float(hash_.get(field, b"0"))
                new = old + args[2]
                hash_[field] = (str(new) if name == "hincrbyfloat" else str(int(new))).encode()
    writes = DocumentWrites()
    for event in [story_created(), *events]:
        mongo_views.HANDLERS[type(event)](writes, event, logged(event))
    doc: dict = {}
    for _key, update in writes.updates("stories"):
        for op, values in update.items():
            for path, value in values.items():
                if op == "$inc":
                    target = doc
                    *parents, leaf = path.split(".")
                    for part in parents:
                        target = target.setdefault(part, {})
                    target[leaf] = target.get(leaf, 0) + value
    got = counters_from_hash(hash_)
    assert got["view_count"] == doc["view_count"] and got["unique_viewers"] == doc["unique_viewers"]
    assert got["reply_count"] == doc["reply_count"]
    # slider sums: unscaled in Redis, scaled in MongoDB; the served average is one
    from read_api.presenter import slider_average

    got_slider, doc_slider = got["results"].pop("2"), doc["results"].pop("2")
    assert slider_average(got_slider, 1) == slider_average(doc_slider, 1) == 0.5
    assert got["results"] == doc["results"]


def test_a_slider_at_the_ends_of_a_huge_range_keeps_its_average():
    """Issue 11: two answers of 1.7e308 summed to infinity in the read model; the average was null."""
    from read_api import presenter

    slider = {
        "sticker_type": "slider",
        "x": 0.5,
        "y": 0.5,
        "width": 0.2,
        "height": 0.1,
        "rotation": 0.0,
        "slider": {"question": "?", "min_value": -1.7e308, "max_value": 1.7e308},
    }
    writes = DocumentWrites()
    for user in ("bob", "carol"):
        e = ev(en.SliderAnswered, **{**sticker_fields(value=1.7e308), "user_id": user})
        mongo_views.HANDLERS[type(e)](writes, e, logged(e))
    results: dict = {}
    for _, update in writes.updates("stories"):
        for path, value in update["$inc"].items():
            _, index, name = path.split(".")
            results.setdefault(index, {})[name] = results.get(index, {}).get(name, 0) + value
    served = presenter.sticker_with_results(0, slider, results, {}, True, T, None)["slider"]
    assert served["average_value"] == 1.7e308 and served["response_count"] == 2
