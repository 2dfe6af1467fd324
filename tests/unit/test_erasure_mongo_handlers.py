"""Erasure in the MongoDB read models, without a server: what each handler plans for an event
whose person is erased (their fields None), the purge ``on_account_erased`` plans, and a
property over random small logs: the live projection (the person named, then purged) equals a
replay after the erasure (the person None from the start), through the projector's write plans
and through the bulk load's fold, on an in-memory model of the collections."""

from __future__ import annotations

import copy
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from pymongo import DeleteMany, DeleteOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError

from commands.event_store import LoggedEvent
from domain import engagement as en
from domain import highlights as hl
from domain import social as so
from domain import stories as sto
from domain.accounts import AccountErased
from projections import mongo_views
from projections.bulk_load import MongoFold
from projections.document_writes import DocumentWrites, apply_update, matches
from projections.mongo_schema import GONE
from projections.mongo_views import HANDLERS, TOMBSTONED, _write_plan
from projections.runner import ProjectionRunner
from tests.erasure import as_erased
from tests.read_models import MemoryLog

T = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
USERS = ("alice", "bob", "carol", "dan")
STICKERS = [
    {
        "sticker_type": "question",
        "x": 0.5,
        "y": 0.2,
        "width": 0.3,
        "height": 0.1,
        "rotation": 0.0,
        "question": {"question": "Q?"},
    },
    {
        "sticker_type": "poll",
        "x": 0.5,
        "y": 0.5,
        "width": 0.3,
        "height": 0.1,
        "rotation": 0.0,
        "poll": {"question": "P?", "options": [{"text": "A"}, {"text": "B"}]},
    },
]


def ev(cls, at: datetime = T, **fields):
    return cls(originator_id=uuid4(), originator_version=1, occurred_at=at, **fields)


def erasure(user_id: str | None, at: datetime = T) -> AccountErased:
    """An ``AccountErased`` as the projector reads it: ``user_id`` resolved (live) or None."""
    e = AccountErased(originator_id=uuid4(), originator_version=1, occurred_at=at, pseudonym="p")
    if user_id is not None:
        e.__dict__["_user_id"] = user_id
    return e


def story_created(story_id: str, owner: str, at: datetime = T, allowed=(), hidden=(), reshared_from=None):
    return ev(
        sto.StoryCreated,
        at,
        story_id=story_id,
        user_id=owner,
        story_type="text",
        media_id=None,
        media_url=None,
        thumbnail_url=None,
        text_content=f"by {owner}",
        background_color="#112233",
        background_gradient=None,
        duration=5.0,
        stickers=STICKERS,
        privacy="custom" if allowed else "followers",
        allowed_viewer_ids=list(allowed),
        hidden_from_ids=list(hidden),
        allow_replies="everyone",
        expires_at=(at + timedelta(hours=24)).isoformat(),
        reshared_from=reshared_from,
    )


def plan_of(*events, position: int = 7) -> dict[str, list]:
    """The operations a batch of ``events`` plans, per collection (as MongoViewStore sends them:
    the inserts' documents, then the other writes)."""
    w = DocumentWrites()
    for e in events:
        HANDLERS[type(e)](w, e, LoggedEvent(position, e))
    return {c: [*p.inserts, *p.updates] for c, p in w.plan(position, TOMBSTONED).items()}


# -- handlers, one erased event at a time -----------------------------------------------------------


def test_a_story_of_an_erased_owner_is_never_written():
    created = story_created("s1", "alice")
    assert plan_of(as_erased(created, "alice")) == {}
    for event in (
        ev(
            sto.StoryEdited,
            story_id="s1",
            user_id="alice",
            text_content="x",
            background_color=None,
            background_gradient=None,
            stickers=[],
            changed=["text_content"],
        ),
        ev(sto.StoryDeleted, story_id="s1", user_id="alice"),
        ev(sto.StoryExpired, story_id="s1", user_id="alice", expired_at=T.isoformat()),
    ):
        assert plan_of(as_erased(event, "alice")) == {}, type(event).__name__


def test_engagement_with_an_erased_owners_story_writes_nothing():
    events = [
        ev(en.StoryViewed, story_id="s1", owner_id="alice", viewer_id="bob", view_number=1, life_hour=0),
        ev(en.StoryNavigated, story_id="s1", owner_id="alice", viewer_id="bob", action="exit"),
        ev(en.StoryShared, story_id="s1", owner_id="alice", user_id="bob", reshare_id="s2"),
        ev(en.StoryReplied, story_id="s1", owner_id="alice", user_id="bob", reply_number=1, text="hi"),
        ev(en.PollVoted, story_id="s1", owner_id="alice", user_id="bob", sticker_index=1, option_index=0),
        ev(
            en.QuizAnswered,
            story_id="s1",
            owner_id="alice",
            user_id="bob",
            sticker_index=1,
            option_index=0,
            correct=True,
            correct_answer_index=0,
        ),
        ev(
            en.QuestionAnswered,
            story_id="s1",
            owner_id="alice",
            user_id="bob",
            sticker_index=0,
            answer_number=1,
            text="yes",
        ),
        ev(en.CountdownFollowed, story_id="s1", owner_id="alice", user_id="bob", sticker_index=0),
        ev(en.CountdownUnfollowed, story_id="s1", owner_id="alice", user_id="bob", sticker_index=0),
        ev(en.SliderAnswered, story_id="s1", owner_id="alice", user_id="bob", sticker_index=0, value=0.5),
        ev(en.LinkTapped, story_id="s1", owner_id="alice", user_id="bob", sticker_index=0, tap_number=1),
    ]
    for event in events:
        erased = as_erased(event, "alice")
        assert erased.owner_id is None
        assert plan_of(erased) == {}, type(event).__name__


def test_an_erased_viewer_still_counts_on_the_story_but_has_no_entry():
    view = ev(en.StoryViewed, story_id="s1", owner_id="bob", viewer_id="alice", view_number=1, life_hour=2)
    named = plan_of(view)
    assert set(named) == {"stories", "story_viewers", "owner_viewers"}
    erased = plan_of(as_erased(view, "alice"))
    assert list(erased) == ["stories"] and erased["stories"] == named["stories"]
    (op,) = erased["stories"]
    assert op._doc["$inc"] == {"view_count": 1, "unique_viewers": 1, "views_by_hour.12": 1, "views_timeline.2": 1}
    nav = ev(en.StoryNavigated, story_id="s1", owner_id="bob", viewer_id="alice", action="exit")
    assert plan_of(as_erased(nav, "alice")) == {}


def test_an_erased_answerer_is_counted_but_their_answer_is_gone():
    answer = ev(
        en.QuestionAnswered,
        story_id="s1",
        owner_id="bob",
        user_id="alice",
        sticker_index=0,
        answer_number=1,
        text="my secret",
    )
    named = plan_of(answer)
    assert set(named) == {"stories", "question_answers"}
    erased = plan_of(as_erased(answer, "alice"))
    assert erased == {"stories": named["stories"]}
    for cls, extra in (
        (en.PollVoted, {"option_index": 1}),
        (en.StoryReplied, {"reply_number": 1, "text": "t"}),
        (en.StoryShared, {"reshare_id": "s9"}),
    ):
        fields = dict(story_id="s1", owner_id="bob", user_id="alice", **extra)
        if cls is en.PollVoted:
            fields["sticker_index"] = 1
        event = ev(cls, **fields)
        assert plan_of(as_erased(event, "alice")) == plan_of(event), cls.__name__  # counts name nobody


def test_a_story_leaves_erased_people_out_of_its_lists_and_its_reshare_origin():
    created = story_created(
        "s2",
        "bob",
        allowed=["alice", "carol", "alice"],
        hidden=["alice", "dan"],
        reshared_from={"story_id": "s1", "user_id": "alice"},
    )
    (doc,) = plan_of(as_erased(created, "alice"))["stories"]
    assert doc["allowed_viewer_ids"] == ["carol"] and doc["hidden_from_ids"] == ["dan"]
    assert doc["reshared_from"] is None and doc["user_id"] == "bob"
    (doc,) = plan_of(created)["stories"]
    assert doc["allowed_viewer_ids"] == ["alice", "carol", "alice"]


def test_edges_naming_an_erased_person_are_not_written():
    for cls, other in (
        (so.CloseFriendAdded, "friend_id"),
        (so.CloseFriendRemoved, "friend_id"),
        (so.UserMuted, "muted_id"),
        (so.UserUnmuted, "muted_id"),
    ):
        for user, them in (("alice", "bob"), ("bob", "alice")):
            event = ev(cls, user_id=user, **{other: them})
            assert plan_of(event) != {}
            assert plan_of(as_erased(event, "alice")) == {}, (cls.__name__, user)


def test_highlights_of_an_erased_owner_are_not_written():
    events = [
        ev(
            hl.HighlightCreated,
            highlight_id="h1",
            user_id="alice",
            title="t",
            description="d",
            cover=None,
            story_ids=["s1"],
            is_pinned=False,
            is_archived=False,
        ),
        ev(hl.HighlightUpdated, highlight_id="h1", user_id="alice", changes={"title": "u"}),
        ev(hl.HighlightStoriesAdded, highlight_id="h1", user_id="alice", story_ids=["s2"]),
        ev(hl.HighlightStoriesRemoved, highlight_id="h1", user_id="alice", story_ids=["s2"]),
        ev(hl.HighlightDeleted, highlight_id="h1", user_id="alice"),
        ev(hl.HighlightFiled, highlight_id="h1", user_id="alice"),
        ev(hl.HighlightUnfiled, highlight_id="h1", user_id="alice"),
        ev(hl.HighlightsReordered, user_id="alice", highlight_ids=["h1"]),
    ]
    for event in events:
        assert plan_of(event) != {}
        assert plan_of(as_erased(event, "alice")) == {}, type(event).__name__


def test_the_purge_plans_unstamped_deletes_and_pulls_by_person():
    got = plan_of(erasure("alice"))
    assert all(isinstance(op, (DeleteMany, UpdateMany)) for ops in got.values() for op in ops)
    filters = {c: [(type(op).__name__, op._filter) for op in ops] for c, ops in got.items()}
    assert filters == {
        "stories": [
            ("DeleteMany", {"user_id": "alice"}),
            ("UpdateMany", {"allowed_viewer_ids": "alice"}),
            ("UpdateMany", {"hidden_from_ids": "alice"}),
            ("UpdateMany", {"reshared_from.user_id": "alice"}),
        ],
        "story_viewers": [("DeleteMany", {"viewer_id": "alice"}), ("DeleteMany", {"owner_id": "alice"})],
        "owner_viewers": [("DeleteMany", {"owner_id": "alice"}), ("DeleteMany", {"viewer_id": "alice"})],
        "question_answers": [("DeleteMany", {"user_id": "alice"}), ("DeleteMany", {"owner_id": "alice"})],
        "highlights": [("DeleteMany", {"user_id": "alice"})],
        "highlight_reels": [("DeleteMany", {"_id": "alice"})],
        "close_friends": [("DeleteMany", {"user_id": "alice"}), ("DeleteMany", {"friend_id": "alice"})],
        "muted": [("DeleteMany", {"user_id": "alice"}), ("DeleteMany", {"muted_id": "alice"})],
    }
    pulls = [op._doc for op in got["stories"] if isinstance(op, UpdateMany)]
    assert pulls == [
        {"$pull": {"allowed_viewer_ids": "alice"}},
        {"$pull": {"hidden_from_ids": "alice"}},
        {"$set": dict.fromkeys(sto.ORIGINAL_AUTHORS_FIELDS)},
    ]  # no "_v": it stamps nothing
    assert DocumentWrites().operations(1) == {}
    w = DocumentWrites()
    HANDLERS[AccountErased](w, erasure("alice"), LoggedEvent(3, erasure("alice")))
    assert [type(op) for op in w.operations(3)["stories"]] == [DeleteMany, UpdateMany, UpdateMany, UpdateMany]


def test_an_erasure_the_reader_could_not_resolve_purges_nothing():
    assert plan_of(erasure(None)) == {}


def test_writes_after_a_write_by_filter_neither_merge_across_it_nor_become_inserts():
    w = DocumentWrites()
    w.update(
        "close_friends",
        "bob:carol",
        {"$set": {"user_id": "bob", "friend_id": "carol", "added_at": T}},
        shard={"user_id": "bob", "friend_id": "carol"},
        insert="first",
    )
    w.delete_many("close_friends", {"friend_id": "carol"})
    w.update(
        "close_friends",
        "bob:carol",
        {"$set": {"user_id": "bob", "friend_id": "carol", "added_at": T}},
        shard={"user_id": "bob", "friend_id": "carol"},
        insert="first",
    )
    w.update(
        "close_friends",
        "bob:dan",
        {"$set": {"user_id": "bob", "friend_id": "dan", "added_at": T}},
        shard={"user_id": "bob", "friend_id": "dan"},
        insert="first",
    )
    plan = w.plan(5, TOMBSTONED)["close_friends"]
    assert [d["_id"] for d in plan.inserts] == ["bob:carol"]  # the one before the delete only
    assert [type(op) for op in plan.updates] == [DeleteMany, UpdateOne, UpdateOne]
    assert w.updates("close_friends") == [(k, u) for k, u in w.updates("close_friends")] and len(w) == 4
    assert w.filtered("close_friends") == [({"friend_id": "carol"}, None)]


def test_matches_is_equality_on_a_path_or_membership_in_a_list():
    doc = {"_id": "s", "user_id": "bob", "allowed_viewer_ids": ["alice"], "reshared_from": {"user_id": "carol"}}
    assert matches(doc, {"allowed_viewer_ids": "alice"}) and matches(doc, {"reshared_from.user_id": "carol"})
    assert matches(doc, {"_id": "s", "user_id": "bob"})
    assert not matches(doc, {"user_id": "alice"}) and not matches(doc, {"hidden_from_ids": "alice"})
    assert not matches({"reshared_from": None}, {"reshared_from.user_id": "carol"})


# -- an in-memory model of the collections, enough for the projector's and the bulk load's writes ----


def _dup(index: int) -> BulkWriteError:
    return BulkWriteError({"writeErrors": [{"index": index, "code": 11000, "errmsg": "duplicate key"}]})


def _filter_matches(doc: dict, flt: dict) -> bool:
    for name, wanted in flt.items():
        if isinstance(wanted, dict) and set(wanted) <= {"$lt", "$ne"}:
            value = doc.get(name)
            if "$lt" in wanted and not (value is not None and value < wanted["$lt"]):
                return False
            if "$ne" in wanted and value == wanted["$ne"]:
                return False
        elif not matches(doc, {name: wanted}):
            return False
    return True


class MemoryCollection:
    def __init__(self) -> None:
        self.docs: dict[Any, dict] = {}

    def insert_many(self, documents, ordered: bool = True, **kwargs) -> None:
        errors = []
        for i, doc in enumerate(documents):
            if doc["_id"] in self.docs:
                errors.append({"index": i, "code": 11000, "errmsg": "duplicate key"})
                if ordered:
                    break
            else:
                self.docs[doc["_id"]] = copy.deepcopy(doc)
        if errors:
            raise BulkWriteError({"writeErrors": errors})

    def _upsert(self, op) -> None:
        equalities = {k: v for k, v in op._filter.items() if not isinstance(v, dict)}
        if equalities.get("_id") in self.docs:
            raise KeyError("duplicate")
        if isinstance(op, ReplaceOne):
            self.docs[equalities["_id"]] = {"_id": equalities["_id"], **copy.deepcopy(op._doc)}
        else:
            doc = copy.deepcopy(equalities)
            apply_update(doc, copy.deepcopy(op._doc), inserting=True)
            self.docs[doc["_id"]] = doc

    def bulk_write(self, ops, ordered: bool = True, **kwargs) -> None:
        for i, op in enumerate(ops):
            found = [key for key, doc in self.docs.items() if _filter_matches(doc, op._filter)]
            if isinstance(op, (DeleteOne, DeleteMany)):
                for key in found[:1] if isinstance(op, DeleteOne) else found:
                    del self.docs[key]
                continue
            if isinstance(op, UpdateMany):
                for key in found:
                    apply_update(self.docs[key], copy.deepcopy(op._doc))
                continue
            if found:
                if isinstance(op, ReplaceOne):
                    self.docs[found[0]] = {"_id": found[0], **copy.deepcopy(op._doc)}
                else:
                    apply_update(self.docs[found[0]], copy.deepcopy(op._doc))
            elif op._upsert:
                try:
                    self._upsert(op)
                except KeyError:
                    raise _dup(i) from None


class MemoryDatabase(defaultdict):
    def __init__(self) -> None:
        super().__init__(MemoryCollection)

    def dump(self) -> dict[str, list[dict]]:
        """Every collection's documents, ``_v`` aside (it says where batches ended)."""
        out = {}
        for name, collection in self.items():
            docs = sorted(
                ({k: v for k, v in d.items() if k != "_v"} for d in collection.docs.values()),
                key=lambda d: str(d["_id"]),
            )
            if docs:
                out[name] = docs
        return dict(sorted(out.items()))


class MemoryViews:
    """MongoViewStore's batch, minus the position document: the handlers' writes planned and
    sent by its own ``_write_plan``, to in-memory collections."""

    name = "mongo_views"

    def __init__(self) -> None:
        self.db = MemoryDatabase()
        self.at = 0
        self.batches: list[list[LoggedEvent]] = []

    def position(self) -> int:
        return self.at

    def pending_until(self) -> None:
        return None

    def apply(self, events: list[LoggedEvent], start: int, position: int) -> None:
        self.run(events, position)
        self.batches.append(events)
        self.at = position

    def run(self, events: list[LoggedEvent], position: int) -> None:
        writes = DocumentWrites()
        for logged in events:
            HANDLERS[type(logged.event)](writes, logged.event, logged)
        for collection, plan in writes.plan(position, TOMBSTONED).items():
            _write_plan(self.db[collection], plan)


def project(events: list, batch: int) -> MemoryViews:
    views = MemoryViews()
    ProjectionRunner(MemoryLog(events), views, batch).catch_up()
    return views


def fold(events: list, max_docs: int) -> dict[str, list[dict]]:
    """The bulk load's fold of ``events``, cut every few events (so that writes reach documents
    written out already), then everything."""
    db = MemoryDatabase()
    f = MongoFold(db, max_docs=max_docs)
    logged = [LoggedEvent(i + 1, e) for i, e in enumerate(events)]
    for i in range(0, len(logged), 5):
        f.fold(logged[i : i + 5])
        if f.full():
            f.write(f.cut(i + 5))
    f.flush(len(logged) + 1)
    return db.dump()


# -- random small logs --------------------------------------------------------------------------------

KINDS = (
    "story",
    "story",
    "view",
    "view",
    "view",
    "nav",
    "answer",
    "vote",
    "share",
    "reply",
    "edit",
    "delete",
    "expire",
    "cf_add",
    "cf_add",
    "cf_remove",
    "mute",
    "unmute",
    "hl_create",
    "hl_update",
    "hl_add",
    "hl_remove",
    "hl_delete",
    "hl_unfile",
    "hl_reorder",
)
STEP = hs.tuples(hs.sampled_from(KINDS), hs.integers(0, 15), hs.integers(0, 15), hs.integers(0, 15))


def build_log(steps) -> list:
    """Events of a consistent history from drawn steps (each (kind, a, b, c), read modulo what exists)."""
    events: list = []
    stories: list[tuple[str, str]] = []
    highlights: list[tuple[str, str]] = []
    views: dict[tuple[str, str], int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    for n, (kind, a, b, c) in enumerate(steps):
        at = T + timedelta(minutes=7 * n)
        user, other = USERS[a % len(USERS)], USERS[b % len(USERS)]
        if kind == "story":
            sid = f"s{len(stories)}"
            allowed = [u for i, u in enumerate(USERS) if b >> i & 1]
            hidden = [u for i, u in enumerate(USERS) if c >> i & 1]
            origin = None
            if stories and c % 3 == 0:
                osid, owner = stories[b % len(stories)]
                origin = {"story_id": osid, "user_id": owner}
            events.append(story_created(sid, user, at, allowed, hidden, origin))
            stories.append((sid, user))
            continue
        if kind.startswith("hl_"):
            mine = [h for h in highlights if h[1] == user]
            own = [s for s, o in stories if o == user]
            if kind == "hl_create" or not mine:
                hid = f"h{len(highlights)}"
                events.append(
                    ev(
                        hl.HighlightCreated,
                        at,
                        highlight_id=hid,
                        user_id=user,
                        title=f"t{n}",
                        description="d",
                        cover=None,
                        story_ids=own[:2],
                        is_pinned=False,
                        is_archived=False,
                    )
                )
                events.append(ev(hl.HighlightFiled, at, highlight_id=hid, user_id=user))
                highlights.append((hid, user))
                continue
            hid = mine[b % len(mine)][0]
            if kind == "hl_update":
                events.append(ev(hl.HighlightUpdated, at, highlight_id=hid, user_id=user, changes={"title": f"u{n}"}))
            elif kind == "hl_add":
                events.append(ev(hl.HighlightStoriesAdded, at, highlight_id=hid, user_id=user, story_ids=own[-1:]))
            elif kind == "hl_remove":
                events.append(ev(hl.HighlightStoriesRemoved, at, highlight_id=hid, user_id=user, story_ids=own[:1]))
            elif kind == "hl_delete":
                events.append(ev(hl.HighlightDeleted, at, highlight_id=hid, user_id=user))
            elif kind == "hl_unfile":
                events.append(ev(hl.HighlightUnfiled, at, highlight_id=hid, user_id=user))
            else:
                events.append(ev(hl.HighlightsReordered, at, user_id=user, highlight_ids=[h for h, _ in mine][::-1]))
            continue
        if kind in ("cf_add", "cf_remove", "mute", "unmute"):
            if user == other:
                continue
            cls = {
                "cf_add": so.CloseFriendAdded,
                "cf_remove": so.CloseFriendRemoved,
                "mute": so.UserMuted,
                "unmute": so.UserUnmuted,
            }[kind]
            events.append(ev(cls, at, user_id=user, **{"friend_id" if kind.startswith("cf") else "muted_id": other}))
            continue
        if not stories:
            continue
        sid, owner = stories[c % len(stories)]
        if kind == "view":
            views[sid, user] += 1
            events.append(
                ev(
                    en.StoryViewed,
                    at,
                    story_id=sid,
                    owner_id=owner,
                    viewer_id=user,
                    view_number=views[sid, user],
                    life_hour=b % 3,
                )
            )
        elif kind == "nav":
            events.append(
                ev(
                    en.StoryNavigated,
                    at,
                    story_id=sid,
                    owner_id=owner,
                    viewer_id=user,
                    action=("exit", "tap_forward")[b % 2],
                )
            )
        elif kind == "answer":
            counts[sid + "a"] += 1
            events.append(
                ev(
                    en.QuestionAnswered,
                    at,
                    story_id=sid,
                    owner_id=owner,
                    user_id=user,
                    sticker_index=0,
                    answer_number=counts[sid + "a"],
                    text=f"{user} says {n}",
                )
            )
        elif kind == "vote":
            events.append(
                ev(en.PollVoted, at, story_id=sid, owner_id=owner, user_id=user, sticker_index=1, option_index=b % 2)
            )
        elif kind == "share":
            events.append(ev(en.StoryShared, at, story_id=sid, owner_id=owner, user_id=user, reshare_id=f"r{n}"))
        elif kind == "reply":
            counts[sid + "r"] += 1
            events.append(
                ev(
                    en.StoryReplied,
                    at,
                    story_id=sid,
                    owner_id=owner,
                    user_id=user,
                    reply_number=counts[sid + "r"],
                    text=f"re {n}",
                )
            )
        elif kind == "edit":
            events.append(
                ev(
                    sto.StoryEdited,
                    at,
                    story_id=sid,
                    user_id=owner,
                    text_content=f"edit {n}",
                    background_color=None,
                    background_gradient=None,
                    stickers=STICKERS,
                    changed=["text_content"],
                )
            )
        elif kind == "delete":
            events.append(ev(sto.StoryDeleted, at, story_id=sid, user_id=owner))
        elif kind == "expire":
            events.append(ev(sto.StoryExpired, at, story_id=sid, user_id=owner, expired_at=at.isoformat()))
    return events


def live_and_replay(events: list, person: str, split: int) -> tuple[list, list]:
    """The log as the live projector reads it (the person named before the erasure; events after
    it read erased), and as a replay after the erasure reads it (erased throughout, the erasure
    unresolved)."""
    before, after = events[:split], [as_erased(e, person) for e in events[split:]]
    at = before[-1].occurred_at if before else T
    live = [*before, erasure(person, at), *after]
    replay = [as_erased(e, person) for e in before] + [erasure(None, at)] + after
    return live, replay


def names(value: Any, person: str) -> bool:
    if isinstance(value, dict):
        return any(names(v, person) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(names(v, person) for v in value)
    if not isinstance(value, str):
        return False
    # an id, a "<person>:<other>" document id, or what they wrote (``build_log``'s texts)
    return (
        value == person
        or value.startswith(f"{person}:")
        or value.endswith(f":{person}")
        or (f"by {person}" in value or f"{person} says" in value)
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hs.lists(STEP, min_size=1, max_size=40), hs.sampled_from(USERS), hs.integers(0, 40), hs.integers(1, 9))
def test_live_purge_equals_a_replay_after_the_erasure(steps, person, split, batch):
    events = build_log(steps)
    split = min(split, len(events))
    live, replay = live_and_replay(events, person, split)
    projected = project(live, batch)
    expected = project(replay, batch).db.dump()
    assert projected.db.dump() == expected
    # nothing served names the person, nor holds what they wrote
    assert not names(expected, person), expected
    # the purge's batch run again (a crash after any of its writes, then the re-run) changes nothing
    purge = next(b for b in projected.batches if b and isinstance(b[0].event, AccountErased))
    assert len(purge) == 1  # applied in a batch of its own
    projected.run(purge, purge[0].position)
    assert projected.db.dump() == expected
    # the bulk load's fold, of either log, builds the same documents
    assert fold(replay, max_docs=6) == expected
    assert fold(live, max_docs=6) == expected
    assert fold(live, max_docs=10_000) == expected


def test_a_fixed_history_purges_what_named_the_person_and_keeps_the_counts():
    steps = [("story", 0, 0b0110, 0b1000), ("story", 1, 0b0001, 0b0011), ("story", 2, 0, 3)]
    events = build_log(steps)
    s0, s1, s2 = (e.story_id for e in events)
    assert events[2].reshared_from == {"story_id": s0, "user_id": "alice"}
    assert events[1].allowed_viewer_ids == ["alice"] and events[1].hidden_from_ids == ["alice", "bob"]
    at = T + timedelta(hours=1)
    events += [
        ev(en.StoryViewed, at, story_id=s1, owner_id="bob", viewer_id="alice", view_number=1, life_hour=0),
        ev(en.StoryViewed, at, story_id=s0, owner_id="alice", viewer_id="bob", view_number=1, life_hour=0),
        ev(
            en.QuestionAnswered,
            at,
            story_id=s1,
            owner_id="bob",
            user_id="alice",
            sticker_index=0,
            answer_number=1,
            text="mine",
        ),
        ev(en.PollVoted, at, story_id=s1, owner_id="bob", user_id="alice", sticker_index=1, option_index=1),
        ev(so.CloseFriendAdded, at, user_id="bob", friend_id="alice"),
        ev(so.CloseFriendAdded, at, user_id="bob", friend_id="carol"),
        ev(so.CloseFriendRemoved, at, user_id="carol", friend_id="alice"),  # a tombstone naming alice
        ev(so.UserMuted, at, user_id="alice", muted_id="dan"),
        ev(
            hl.HighlightCreated,
            at,
            highlight_id="h1",
            user_id="alice",
            title="t",
            description="d",
            cover=None,
            story_ids=[s0],
            is_pinned=False,
            is_archived=False,
        ),
        ev(hl.HighlightFiled, at, highlight_id="h1", user_id="alice"),
    ]
    live, replay = live_and_replay(events, "alice", len(events))
    before = project(events, 4).db.dump()
    assert any(d.get(GONE) for d in before["close_friends"])
    got = project(live, 4).db.dump()
    assert got == project(replay, 4).db.dump()
    assert not names(got, "alice")
    stories = {d["_id"]: d for d in got["stories"]}
    assert set(stories) == {s1, s2}
    assert stories[s1]["view_count"] == 1 and stories[s1]["unique_viewers"] == 1
    assert stories[s1]["results"] == {"0": {"total": 1}, "1": {"options": {"1": 1}, "total": 1}}
    assert stories[s1]["allowed_viewer_ids"] == [] and stories[s1]["hidden_from_ids"] == ["bob"]
    assert stories[s2]["reshared_from"] is None and stories[s2]["user_id"] == "carol"
    assert got["close_friends"] == [{"_id": "bob:carol", "user_id": "bob", "friend_id": "carol", "added_at": at}]
    assert set(got) == {"stories", "close_friends"}
    assert mongo_views.on_account_erased.__name__ in {h.__name__ for h in HANDLERS.values()}
