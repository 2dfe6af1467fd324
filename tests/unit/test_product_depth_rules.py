"""Issue 13 ("Product depth") rules as properties: completion_rate, navigation counting (the last
one stands, folded through the real MongoDB handlers), Story.edit, Story.reshare and Mute."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo import DeleteOne, ReplaceOne

from commands.event_store import LoggedEvent
from domain import engagement as en
from domain import social as so
from domain import stories as sto
from domain.engagement import ABANDONING_ACTIONS, NavigationAction, StoryNavigation
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from domain.limits import LiveStories, Tally
from domain.platform import Platform
from domain.stories import Story, check_story_fields
from domain.visibility import Relationship
from projections import mongo_views
from projections.document_writes import DocumentWrites, apply_update
from read_api import presenter
from read_api.tallies import completion_rate

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
VIGNETTE, ENTATIVA = Platform.VIGNETTE, Platform.ENTATIVA
OWNER, OTHER = "alice", "bob"
ACTIONS = [a.value for a in NavigationAction]
FOLLOWER = Relationship(follows_owner=True)
FRIEND = Relationship(follows_owner=True, followed_by_owner=True)
STRANGER = Relationship()


# -- completion_rate ------------------------------------------------------------------------------


def reference_rate(unique: int, counts: dict[str, int]) -> float:
    """The contract: unique viewers who neither exited nor swiped away / unique viewers x 100."""
    if unique == 0:
        return 0.0
    left = counts.get("exit", 0) + counts.get("swipe_forward", 0)
    kept = Decimal(unique - left) * 100 / Decimal(unique)
    return float(round(kept, 1))


@st.composite
def viewers_and_navigation(draw):
    """Consistent inputs: each of ``unique`` viewers has at most one last navigation."""
    unique = draw(st.integers(0, 5000))
    lasts = (
        draw(st.lists(st.sampled_from([*ACTIONS, None]), min_size=unique, max_size=unique)) if unique <= 200 else None
    )
    if lasts is None:
        parts = draw(st.lists(st.integers(0, unique), min_size=4, max_size=4))
        budget, counts = unique, {}
        for action, n in zip(ACTIONS, parts):
            counts[action] = min(n, budget)
            budget -= counts[action]
        return unique, counts
    return unique, {a: sum(1 for x in lasts if x == a) for a in ACTIONS}


def test_abandoning_actions_are_exit_and_swipe_forward():
    assert {a.value for a in ABANDONING_ACTIONS} == {"exit", "swipe_forward"}
    assert set(ACTIONS) == {"tap_forward", "tap_back", "exit", "swipe_forward"}


@settings(max_examples=400)
@given(viewers_and_navigation())
def test_completion_rate_bounds_one_decimal_and_definition(data):
    unique, counts = data
    rate = completion_rate(unique, counts)
    assert isinstance(rate, float)
    assert 0.0 <= rate <= 100.0
    assert round(rate, 1) == rate
    assert rate == pytest.approx(reference_rate(unique, counts), abs=0.05 + 1e-9)
    # the exact rounding: within half a tenth of the true value
    if unique:
        left = counts["exit"] + counts["swipe_forward"]
        assert abs(rate - (unique - left) * 100 / unique) <= 0.05 + 1e-9
    else:
        assert rate == 0.0


@given(st.integers(1, 10_000))
def test_completion_rate_edges(unique):
    assert completion_rate(unique, {}) == 100.0
    assert completion_rate(unique, {"tap_forward": unique}) == 100.0
    assert completion_rate(unique, {"tap_back": unique}) == 100.0
    assert completion_rate(unique, {"exit": unique}) == 0.0
    assert completion_rate(unique, {"swipe_forward": unique}) == 0.0
    assert completion_rate(0, {}) == 0.0


# -- navigation counting through the MongoDB handlers ---------------------------------------------


class FakeCollection:
    """Applies the view store's writes as MongoDB would (the subset the handlers use)."""

    def __init__(self) -> None:
        self.docs: dict = {}

    def _matches(self, doc: dict, flt: dict) -> bool:
        for k, v in flt.items():
            if k == "_id":
                continue
            if isinstance(v, dict):
                if "$lt" in v and not doc.get(k, -1) < v["$lt"]:
                    return False
                if "$ne" in v and doc.get(k) == v["$ne"]:
                    return False
            elif doc.get(k) != v:
                return False
        return True

    def insert(self, doc: dict) -> bool:
        if doc["_id"] in self.docs:
            return False
        self.docs[doc["_id"]] = copy.deepcopy(doc)
        return True

    def apply(self, op) -> None:
        flt = op._filter
        key = flt["_id"]
        doc = self.docs.get(key)
        if isinstance(op, DeleteOne):
            if doc is not None and self._matches(doc, flt):
                del self.docs[key]
            return
        if doc is not None and not self._matches(doc, flt):
            return  # a landed write (an upsert would raise 11000, which the store skips)
        if isinstance(op, ReplaceOne):
            if doc is None and not op._upsert:
                return
            self.docs[key] = {"_id": key, **op._doc}
            return
        update, upsert = op._doc, op._upsert
        if doc is None:
            if not upsert:
                return
            doc = {"_id": key, **{k: v for k, v in flt.items() if not isinstance(v, dict) and k != "_id"}}
            inserting = True
        else:
            inserting = False
        apply_update(doc, update, inserting=inserting)
        self.docs[key] = doc


class FakeDb:
    def __init__(self) -> None:
        self.collections: dict[str, FakeCollection] = {}

    def __getitem__(self, name: str) -> FakeCollection:
        return self.collections.setdefault(name, FakeCollection())

    def run_batch(self, events: list[LoggedEvent]) -> None:
        writes = DocumentWrites()
        for logged in events:
            mongo_views.HANDLERS[type(logged.event)](writes, logged.event, logged)
        end = events[-1].position
        if hasattr(writes, "plan"):  # the view store's path: inserts first, then the other writes in order
            for collection, plan in writes.plan(end, getattr(mongo_views, "TOMBSTONED", frozenset())).items():
                c = self[collection]
                retry = []
                for i, doc in enumerate(plan.inserts):
                    if not c.insert(doc) and plan.on_duplicate[i] is not None:
                        retry.append(plan.on_duplicate[i])
                for op in retry + plan.updates:
                    c.apply(op)
        else:
            for collection, ops in writes.operations(end).items():
                for op in ops:
                    self[collection].apply(op)

    def navigation(self, story_id: str) -> dict[str, int]:
        """What Queries._navigation counts: viewer entries of the story by ``navigation``."""
        entries = [d for d in self["story_viewers"].docs.values() if d.get("story_id") == story_id]
        return {a: sum(1 for d in entries if d.get("navigation") == a) for a in ACTIONS}


SID = "0b7c3b9e-6f2d-4a3b-9f59-0a0d2f3c1e11"


def created_event(at: datetime = T0, hours: int = 24) -> sto.StoryCreated:
    return sto.StoryCreated(
        originator_id=uuid4(),
        originator_version=1,
        occurred_at=at,
        story_id=SID,
        user_id=OWNER,
        story_type="text",
        media_id=None,
        media_url=None,
        thumbnail_url=None,
        text_content="hi",
        background_color=None,
        background_gradient=None,
        duration=5.0,
        stickers=[],
        privacy="public",
        allowed_viewer_ids=[],
        hidden_from_ids=[],
        allow_replies="everyone",
        expires_at=(at + timedelta(hours=hours)).isoformat(),
    )


viewer_ids = st.sampled_from([f"v{i}" for i in range(6)])
step = st.one_of(
    st.tuples(st.just("view"), viewer_ids, st.none()),
    st.tuples(st.just("nav"), viewer_ids, st.sampled_from(ACTIONS)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=40), st.lists(st.integers(1, 6), min_size=1, max_size=10), st.booleans())
def test_navigation_last_one_stands_through_the_handlers(steps, batch_sizes, rerun):
    """Fold random views and navigations, cut into random batches (each maybe run twice, as after a
    crash), through the real handlers and the view store's write plan; the
    counts equal a pure fold of the contract: each viewer's last navigation after (or with) their
    first view; one from someone who never viewed counts nowhere."""
    db = FakeDb()
    events: list[LoggedEvent] = [LoggedEvent(1, created_event())]
    views: dict[str, int] = {}
    expected_last: dict[str, str] = {}
    at = T0
    for n, (kind, viewer, action) in enumerate(steps):
        at = at + timedelta(minutes=3)
        if kind == "view":
            views[viewer] = views.get(viewer, 0) + 1
            event = en.StoryViewed(
                originator_id=uuid4(),
                originator_version=views[viewer],
                occurred_at=at,
                story_id=SID,
                owner_id=OWNER,
                viewer_id=viewer,
                view_number=views[viewer],
                life_hour=int((at - T0).total_seconds() // 3600),
            )
        else:
            if viewer in views:
                expected_last[viewer] = action
            event = en.StoryNavigated(
                originator_id=uuid4(),
                originator_version=1,
                occurred_at=at,
                story_id=SID,
                owner_id=OWNER,
                viewer_id=viewer,
                action=action,
            )
        events.append(LoggedEvent(n + 2, event))
    # cut into batches
    i, sizes = 0, list(batch_sizes)
    while i < len(events):
        size = sizes[0] if sizes else 3
        sizes = sizes[1:] + sizes[:1]
        db.run_batch(events[i : i + size])
        if rerun:  # a runner re-runs the batch after a crash: the stamps make it change nothing
            db.run_batch(events[i : i + size])
        i += size
    counts = db.navigation(SID)
    expected = {a: sum(1 for v in expected_last.values() if v == a) for a in ACTIONS}
    assert counts == expected, (steps, counts, expected)
    story = db["stories"].docs[SID]
    assert story.get("unique_viewers", 0) == len(views)
    served = presenter.insights(story, 10, counts)
    assert served["navigation"] == expected
    assert served["completion_rate"] == completion_rate(len(views), expected)
    assert served["completion_rate"] == pytest.approx(reference_rate(len(views), expected), abs=0.05 + 1e-9)
    assert sum(served["navigation"].values()) <= served["unique_viewers"]
    # views_timeline: every view in its hour of the story's life, 24 entries for a 24 h story
    assert len(served["views_timeline"]) == 24
    assert sum(served["views_timeline"]) == sum(views.values())


@given(st.sampled_from([6, 12, 24, 48]), st.lists(st.integers(0, 47), max_size=30))
def test_views_timeline_length_and_index(hours, life_hours):
    life_hours = [h for h in life_hours if h < hours]
    doc = {"_id": SID, "created_at": T0, "expires_at": T0 + timedelta(hours=hours), "views_timeline": {}}
    for h in life_hours:
        doc["views_timeline"][str(h)] = doc["views_timeline"].get(str(h), 0) + 1
    out = presenter.insights(doc, 0)
    assert len(out["views_timeline"]) == hours
    for h in range(hours):
        assert out["views_timeline"][h] == life_hours.count(h)
    assert out["navigation"] == dict.fromkeys(ACTIONS, 0)
    assert out["completion_rate"] == 0.0 and out["shares"] == 0


def test_story_view_records_life_hour():
    story = Story.create(uuid4(), OWNER, {"story_type": "text", "text_content": "x", "privacy": "public"}, VIGNETTE, T0)
    for minutes, hour in ((0, 0), (59, 0), (60, 1), (150, 2)):
        view = en.StoryView.view(None, story, OTHER, STRANGER, T0 + timedelta(minutes=minutes))
        [event] = view.collect_events()
        assert event.life_hour == hour


def test_user_insights_aggregate_navigation_timeline_shares():
    a = {
        "_id": "a",
        "created_at": T0,
        "expires_at": T0 + timedelta(hours=6),
        "unique_viewers": 4,
        "view_count": 5,
        "views_timeline": {"0": 3, "5": 2},
        "shares": 2,
    }
    b = {
        "_id": "b",
        "created_at": T0,
        "expires_at": T0 + timedelta(hours=24),
        "unique_viewers": 6,
        "view_count": 6,
        "views_timeline": {"0": 1, "23": 5},
        "shares": 1,
    }
    nav = {"exit": 3, "swipe_forward": 2, "tap_forward": 1}
    out = presenter.user_insights(OWNER, [a, b], 7, nav)
    assert out["shares"] == 3
    assert len(out["views_timeline"]) == 24
    assert out["views_timeline"][0] == 4 and out["views_timeline"][5] == 2 and out["views_timeline"][23] == 5
    assert out["navigation"] == {"tap_forward": 1, "tap_back": 0, "exit": 3, "swipe_forward": 2}
    assert out["completion_rate"] == 50.0  # (10 - 5) / 10, over the stories' own unique viewers
    assert out["unique_viewers"] == 7


# -- StoryNavigation ------------------------------------------------------------------------------


def public_story(now=T0, owner=OWNER, platform=VIGNETTE, **fields) -> Story:
    body = {"story_type": "text", "text_content": "hello", "privacy": "public", **fields}
    return Story.create(uuid4(), owner, body, platform, now)


@given(st.sampled_from(list(NavigationAction)))
def test_navigation_rules(action):
    story = public_story()
    nav = StoryNavigation.navigate(uuid4(), story, OTHER, action, STRANGER, T0 + timedelta(minutes=1))
    [event] = nav.collect_events()
    assert event.action == action.value and event.viewer_id == OTHER and event.owner_id == OWNER
    assert StoryNavigation.navigate(uuid4(), story, OWNER, action, STRANGER, T0) is None
    with pytest.raises(NotFound):
        StoryNavigation.navigate(uuid4(), story, OTHER, action, STRANGER, T0 + timedelta(hours=25))
    with pytest.raises(Conflict):
        StoryNavigation.navigate(uuid4(), story, OWNER, action, STRANGER, T0 + timedelta(hours=25))
    private = public_story(privacy="followers")
    with pytest.raises(NotFound):
        StoryNavigation.navigate(uuid4(), private, OTHER, action, STRANGER, T0)
    assert StoryNavigation.navigate(uuid4(), private, OTHER, action, FOLLOWER, T0) is not None


# -- Story.edit ----------------------------------------------------------------------------------

END = (T0 + timedelta(days=2)).isoformat()
STICKERS = [
    {
        "sticker_type": "poll",
        "x": 0.5,
        "y": 0.5,
        "width": 0.3,
        "height": 0.1,
        "rotation": 0.0,
        "poll": {"question": "Tea?", "options": [{"text": "yes"}, {"text": "no"}]},
    },
    {
        "sticker_type": "quiz",
        "x": 0.5,
        "y": 0.5,
        "width": 0.3,
        "height": 0.1,
        "rotation": 0.0,
        "quiz": {"question": "2+2?", "options": [{"text": "3"}, {"text": "4"}], "correct_answer_index": 1},
    },
    {
        "sticker_type": "question",
        "x": 0.5,
        "y": 0.5,
        "width": 0.3,
        "height": 0.1,
        "rotation": 0.0,
        "question": {"text": "Ask"},
    },
    {
        "sticker_type": "countdown",
        "x": 0.5,
        "y": 0.5,
        "width": 0.3,
        "height": 0.1,
        "rotation": 0.0,
        "countdown": {"title": "Go", "end_time": END},
    },
    {
        "sticker_type": "slider",
        "x": 0.5,
        "y": 0.5,
        "width": 0.3,
        "height": 0.1,
        "rotation": 0.0,
        "slider": {"question": "Hot?", "emoji": "🔥", "min_value": 0.0, "max_value": 10.0},
    },
    {
        "sticker_type": "link",
        "x": 0.1,
        "y": 0.9,
        "width": 0.3,
        "height": 0.1,
        "rotation": 0.0,
        "link": {"url": "https://example.com/x"},
    },
]
NEW_PAYLOADS = {
    "poll": {"question": "Coffee?", "options": [{"text": "a"}, {"text": "b"}, {"text": "c"}]},
    "quiz": {"question": "3+3?", "options": [{"text": "6"}, {"text": "5"}], "correct_answer_index": 0},
    "question": {"text": "Ask again"},
    "countdown": {"title": "Later", "end_time": (T0 + timedelta(days=3)).isoformat()},
    "slider": {"question": "Cold?", "emoji": "🧊", "min_value": -5.0, "max_value": 5.0},
    "link": {"url": "https://example.com/y", "label": "go"},
}


def sticker_story(story_type="text", **fields) -> Story:
    body = {"story_type": story_type, "privacy": "public", "stickers": copy.deepcopy(STICKERS), **fields}
    if story_type == "text":
        body.setdefault("text_content", "hello")
    else:
        body.setdefault("media_url", "https://cdn.example/a.jpg")
    return Story.create(uuid4(), OWNER, body, VIGNETTE, T0)


unit = st.floats(0, 1, allow_nan=False)
geometry = st.fixed_dictionaries(
    {},
    optional={"x": unit, "y": unit, "width": unit, "height": unit, "rotation": st.floats(-180, 180, allow_nan=False)},
)
colour = st.from_regex(r"#[0-9A-F]{6}", fullmatch=True)
sticker_edit = st.builds(
    lambda i, g, payload: {
        "sticker_index": i,
        **g,
        **({STICKERS[i]["sticker_type"]: NEW_PAYLOADS[STICKERS[i]["sticker_type"]]} if payload else {}),
    },
    st.integers(0, len(STICKERS) - 1),
    geometry,
    st.booleans(),
)
changes_strategy = st.fixed_dictionaries(
    {},
    optional={
        "text_content": st.text(min_size=1, max_size=50).filter(lambda s: s.strip()),
        "background_color": st.one_of(st.none(), colour),
        "background_gradient": st.one_of(st.none(), st.lists(colour, min_size=2, max_size=5)),
        "stickers": st.lists(sticker_edit, max_size=4, unique_by=lambda e: e["sticker_index"]),
    },
)


@settings(max_examples=300, deadline=None)
@given(changes_strategy, st.frozensets(st.integers(0, len(STICKERS) - 1)), st.sampled_from(["text", "image"]))
def test_edit_rules(changes, answered, story_type):
    story = sticker_story(story_type)
    story.collect_events()
    before = copy.deepcopy(story.fields)
    now = T0 + timedelta(hours=1)
    payload_edits = [
        e["sticker_index"] for e in changes.get("stickers", []) if STICKERS[e["sticker_index"]]["sticker_type"] in e
    ]
    frozen = [i for i in payload_edits if i in answered]
    try:
        changed = story.edit(OWNER, copy.deepcopy(changes), answered, VIGNETTE, now)
    except Conflict as error:
        assert error.code == "sticker_answered"
        assert frozen, (changes, answered)
        assert story.fields == before and not story.collect_events()
        return
    assert not frozen, (changes, answered)  # a payload change of an answered sticker never goes through
    events = story.collect_events()
    # what the edit should change
    expected = copy.deepcopy(before)
    for name in sto.EDITABLE_FIELDS:
        if name in changes:
            expected[name] = changes[name]
    for e in changes.get("stickers", []):
        expected["stickers"][e["sticker_index"]].update({k: v for k, v in e.items() if k != "sticker_index"})
    differs = any(expected[k] != before[k] for k in (*sto.EDITABLE_FIELDS, "stickers"))
    assert changed is differs
    if not changed:
        assert events == [] and story.fields == before
        return
    [event] = events
    assert isinstance(event, sto.StoryEdited)
    for name in (*sto.EDITABLE_FIELDS, "stickers"):
        assert getattr(event, name) == expected[name]
        assert story.fields[name] == expected[name]
    assert story.fields["edited_at"] == now.isoformat()
    assert set(event.changed) == (
        {n for n in sto.EDITABLE_FIELDS if expected[n] != before[n]}
        | {f"stickers.{i}" for i in range(len(STICKERS)) if expected["stickers"][i] != before["stickers"][i]}
    )
    # untouched fields stay
    for name in ("story_type", "privacy", "expires_at", "user_id", "story_id", "allow_sharing"):
        assert story.fields[name] == before[name]
    # every edited story still follows the rules of a new one
    check_story_fields(story.fields, VIGNETTE)
    # the stream replays to the same state
    replayed = Story.replay(story.id, [created_for(story, before), event])
    assert replayed.fields == story.fields


def created_for(story: Story, fields: dict) -> sto.StoryCreated:
    data = {k: v for k, v in fields.items() if k in sto.StoryCreated.__dataclass_fields__}
    return sto.StoryCreated(
        originator_id=story.id,
        originator_version=1,
        occurred_at=T0,
        **{k: v for k, v in data.items() if k not in ("originator_id", "originator_version", "occurred_at")},
    )


@given(st.integers(0, len(STICKERS) - 1), geometry.filter(bool))
def test_geometry_of_an_answered_sticker_can_change(i, g):
    story = sticker_story()
    story.edit(OWNER, {"stickers": [{"sticker_index": i, **g}]}, frozenset(range(len(STICKERS))), VIGNETTE, T0)
    for k, v in g.items():
        assert story.stickers[i][k] == v


@pytest.mark.parametrize("i", range(len(STICKERS)))
def test_payload_of_an_answered_sticker_is_frozen_but_the_same_payload_is_fine(i):
    story = sticker_story()
    kind = STICKERS[i]["sticker_type"]
    with pytest.raises(Conflict) as info:
        story.edit(OWNER, {"stickers": [{"sticker_index": i, kind: NEW_PAYLOADS[kind]}]}, frozenset({i}), VIGNETTE, T0)
    assert info.value.code == "sticker_answered"
    same = copy.deepcopy(STICKERS[i][kind])
    assert story.edit(OWNER, {"stickers": [{"sticker_index": i, kind: same}]}, frozenset({i}), VIGNETTE, T0) is False
    # unanswered: the payload may change
    assert (
        story.edit(OWNER, {"stickers": [{"sticker_index": i, kind: NEW_PAYLOADS[kind]}]}, frozenset(), VIGNETTE, T0)
        is True
    )
    assert story.stickers[i][kind] == NEW_PAYLOADS[kind]


def test_edit_refusals():
    story = sticker_story()
    with pytest.raises(Forbidden) as info:
        story.edit(OTHER, {"text_content": "x"}, frozenset(), VIGNETTE, T0)
    assert info.value.code == "not_owner"
    with pytest.raises(Conflict) as info:
        story.edit(OWNER, {"text_content": "x"}, frozenset(), VIGNETTE, T0 + timedelta(hours=24))
    assert info.value.code == "story_expired"
    with pytest.raises(InvalidInput):  # a text story cannot lose its text
        story.edit(OWNER, {"text_content": None}, frozenset(), VIGNETTE, T0)
    with pytest.raises(InvalidInput):
        story.edit(OWNER, {"text_content": "   "}, frozenset(), VIGNETTE, T0)
    with pytest.raises(InvalidInput):  # the poll's payload under another type's name
        story.edit(OWNER, {"stickers": [{"sticker_index": 0, "quiz": NEW_PAYLOADS["quiz"]}]}, frozenset(), VIGNETTE, T0)
    with pytest.raises(InvalidInput) as info:
        story.edit(OWNER, {"stickers": [{"sticker_index": 9, "x": 0.1}]}, frozenset(), VIGNETTE, T0)
    assert info.value.code == "sticker_not_found"
    with pytest.raises(InvalidInput):  # a broken payload (quiz answer out of range)
        story.edit(
            OWNER,
            {
                "stickers": [
                    {
                        "sticker_index": 1,
                        "quiz": {"question": "q", "options": [{"text": "a"}, {"text": "b"}], "correct_answer_index": 3},
                    }
                ]
            },
            frozenset(),
            VIGNETTE,
            T0,
        )
    assert len(story.collect_events()) == 1  # only the creation
    image = sticker_story("image", text_content="caption")
    assert image.edit(OWNER, {"text_content": None}, frozenset(), VIGNETTE, T0) is True
    assert image.fields["text_content"] is None
    assert image.edit(OWNER, {"text_content": None}, frozenset(), VIGNETTE, T0) is False  # no-op
    image.delete(OWNER, T0)
    with pytest.raises(NotFound):
        image.edit(OWNER, {"text_content": "x"}, frozenset(), VIGNETTE, T0)


def test_background_null_removes_it():
    story = public_story(background_color="#112233", background_gradient=["#000000", "#FFFFFF"])
    assert story.edit(OWNER, {"background_color": None, "background_gradient": None}, frozenset(), VIGNETTE, T0)
    assert story.fields["background_color"] is None and story.fields["background_gradient"] is None


# -- Story.reshare ---------------------------------------------------------------------------------


options_strategy = st.fixed_dictionaries(
    {},
    optional={
        "privacy": st.sampled_from(["public", "close_friends"]),
        "allow_replies": st.sampled_from(["everyone", "audience", "off"]),
        "expires_in_hours": st.sampled_from([6, 12, 24, 48]),
        "allow_sharing": st.booleans(),
        "hidden_from_ids": st.lists(st.sampled_from(["x1", "x2"]), unique=True),
    },
)


@settings(max_examples=150, deadline=None)
@given(options_strategy, st.sampled_from([VIGNETTE, ENTATIVA]), st.sampled_from(["text", "image"]))
def test_reshare_copies_content_not_stickers_and_names_the_original(options, platform, story_type):
    original = sticker_story(story_type, background_color="#123456", duration=7.0)
    original.collect_events()
    now = T0 + timedelta(hours=2)
    relationship = FRIEND
    live = LiveStories.open(None, OTHER)
    reshare = Story.reshare(uuid4(), original, OTHER, relationship, options, platform, now, live, 3)
    [created] = reshare.collect_events()
    assert created.reshared_from == {"story_id": str(original.id), "user_id": OWNER}
    assert created.user_id == OTHER and created.stickers == []
    for name in sto.RESHARED_CONTENT:
        assert getattr(created, name) == original.fields[name], name
    assert created.privacy == options.get("privacy", platform.audience)
    assert created.allow_sharing == options.get("allow_sharing", True)
    hours = options.get("expires_in_hours", 24)
    assert created.expires_at == (now + timedelta(hours=hours)).isoformat()
    assert str(reshare.id) in live.live
    share = en.StoryShare.record(original, reshare, now)
    [shared] = share.collect_events()
    assert shared.story_id == str(original.id) and shared.reshare_id == str(reshare.id)
    assert shared.user_id == OTHER and shared.owner_id == OWNER
    # the original going away does not touch the reshare
    original.delete(OWNER, now)
    assert reshare.fields["reshared_from"]["story_id"] == str(original.id)


@given(st.sampled_from([VIGNETTE, ENTATIVA]))
def test_reshare_refusals(platform):
    now = T0 + timedelta(hours=1)
    audience = platform.audience
    followers_only = public_story(platform=platform, privacy=audience)
    with pytest.raises(NotFound):  # cannot see it
        Story.reshare(uuid4(), followers_only, OTHER, STRANGER, {}, platform, now)
    with pytest.raises(Forbidden) as info:  # sees it, not public
        Story.reshare(uuid4(), followers_only, OTHER, FRIEND, {}, platform, now)
    assert info.value.code == "not_shareable"
    no_sharing = public_story(platform=platform, allow_sharing=False)
    with pytest.raises(Forbidden) as info:
        Story.reshare(uuid4(), no_sharing, OTHER, STRANGER, {}, platform, now)
    assert info.value.code == "sharing_disabled"
    hidden = public_story(platform=platform, hidden_from_ids=[OTHER])
    with pytest.raises(NotFound):
        Story.reshare(uuid4(), hidden, OTHER, FRIEND, {}, platform, now)
    shareable = public_story(platform=platform)
    later = T0 + timedelta(hours=24)
    with pytest.raises(NotFound):
        Story.reshare(uuid4(), shareable, OTHER, STRANGER, {}, platform, later)
    with pytest.raises(Conflict) as info:
        Story.reshare(uuid4(), shareable, OWNER, STRANGER, {}, platform, later)
    assert info.value.code == "story_expired"
    shareable.delete(OWNER, now)
    with pytest.raises(NotFound):
        Story.reshare(uuid4(), shareable, OTHER, STRANGER, {}, platform, now)
    # the live-stories limit
    live = LiveStories.open(None, OTHER)
    fresh = public_story(platform=platform)
    Story.reshare(uuid4(), fresh, OTHER, STRANGER, {}, platform, now, live, 1)
    with pytest.raises(Conflict) as info:
        Story.reshare(uuid4(), fresh, OTHER, STRANGER, {}, platform, now, live, 1)
    assert info.value.code == "limit_reached"


def test_reshare_of_an_edited_story_copies_the_edited_content():
    original = public_story()
    original.edit(OWNER, {"text_content": "edited"}, frozenset(), VIGNETTE, T0)
    reshare = Story.reshare(uuid4(), original, OTHER, STRANGER, {}, VIGNETTE, T0)
    assert reshare.fields["text_content"] == "edited"
    assert "edited_at" not in reshare.fields


def test_a_reshare_cannot_be_edited_not_even_by_its_sharer():
    original = public_story()
    reshare = Story.reshare(uuid4(), original, OTHER, STRANGER, {}, VIGNETTE, T0)
    reshare.collect_events()
    with pytest.raises(Forbidden) as info:  # its content is what the original's author wrote
        reshare.edit(OTHER, {"text_content": "mine now"}, frozenset(), VIGNETTE, T0)
    assert info.value.code == "reshare_not_editable"
    assert reshare.collect_events() == []
    assert reshare.story_type is original.story_type is sto.StoryType(original.fields["story_type"])


def test_story_created_v2_upcasts_to_an_original():
    state = {"allow_sharing": True}
    sto.StoryCreated.upcast_v2_v3(state)
    assert state["reshared_from"] is None
    assert sto.StoryCreated.class_version == 3


# -- Mute ------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["mute", "unmute"]), st.sampled_from(["b", "c", "d"])), max_size=30),
    st.integers(1, 3),
)
def test_mute_fold(ops, limit):
    """Random mutes/unmutes of a few users against a model: idempotent PUT, 404 not_muted on an
    unmute of someone not muted, limit_reached at the limit, the tally counting active mutes."""
    entries: dict[str, so.Mute | None] = {}
    tally = Tally.open(None, "muted", "a")
    model: set[str] = set()
    for n, (op, other) in enumerate(ops):
        now = T0 + timedelta(seconds=n)
        if op == "mute":
            if other in model:
                assert so.Mute.mute(entries.get(other), "a", other, now, tally, limit) is None
            elif len(model) >= limit:
                with pytest.raises(Conflict) as info:
                    so.Mute.mute(entries.get(other), "a", other, now, tally, limit)
                assert info.value.code == "limit_reached"
            else:
                entry = so.Mute.mute(entries.get(other), "a", other, now, tally, limit)
                [event] = entry.collect_events()
                assert isinstance(event, so.UserMuted) and event.user_id == "a" and event.muted_id == other
                entries[other] = entry
                model.add(other)
        else:
            entry = entries.get(other)
            if other not in model:
                with pytest.raises(NotFound) as info:
                    if entry is None:
                        raise NotFound("x", code="not_muted")  # the application's answer for no stream
                    entry.unmute(now, tally)
                assert info.value.code == "not_muted"
            else:
                entry.unmute(now, tally)
                [event] = entry.collect_events()
                assert isinstance(event, so.UserUnmuted)
                model.discard(other)
        assert tally.count == len(model)
        tally.collect_events()


def test_mute_self_and_bad_ids():
    with pytest.raises(InvalidInput) as info:
        so.Mute.mute(None, "a", "a", T0)
    assert info.value.code == "cannot_mute_self"
    with pytest.raises(InvalidInput):
        so.Mute.mute(None, "a", "not a user id!", T0)
    assert so.Mute.stream_for("a", "b") != so.Mute.stream_for("b", "a")
