"""Highlight: create, update, add/remove stories, delete; HighlightReel: file, unfile, reorder."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from domain.highlights import (
    MAX_HIGHLIGHTS,
    Highlight,
    HighlightCreated,
    HighlightDeleted,
    HighlightFiled,
    HighlightReel,
    HighlightsReordered,
    HighlightStoriesAdded,
    HighlightStoriesRemoved,
    HighlightUnfiled,
    HighlightUpdated,
)
from domain.platform import Platform
from domain.stories import Story
from domain.visibility import Relationship

OWNER, OTHER = "alice", "bob"


# -- builders ----------------------------------------------------------------------------


def make_story(clock, owner: str = OWNER) -> Story:
    return Story.create(uuid4(), owner, {"story_type": "text", "text_content": "hi"}, Platform.VIGNETTE, clock())


def library(clock, count: int, owner: str = OWNER) -> dict[str, Story | None]:
    """``count`` stories of ``owner``, by id, as the application hands them to the domain."""
    return {str(s.id): s for s in (make_story(clock, owner) for _ in range(count))}


def make_highlight(clock, stories: dict[str, Story | None], *, owner: str = OWNER, **overrides) -> Highlight:
    fields = {"title": "Trips", "story_ids": list(stories)}
    fields.update(overrides)
    highlight = Highlight.create(uuid4(), owner, fields, stories, clock())
    highlight.collect_events()
    return highlight


def problem_fields(error: InvalidInput) -> set[str]:
    return {d["field"] for d in error.details or []}


def state(aggregate) -> dict:
    return {k: v for k, v in vars(aggregate).items() if k != "pending_events"}


# -- create ---------------------------------------------------------------------------------


def test_create_records_the_highlight(clock):
    stories = library(clock, 2)
    ids = list(stories)
    highlight = Highlight.create(uuid4(), OWNER, {"title": "  Trips  ", "story_ids": ids + ids[:1]}, stories, clock())
    [event] = highlight.collect_events()
    assert isinstance(event, HighlightCreated)
    assert event.highlight_id == str(highlight.id) and event.user_id == OWNER
    assert event.title == "Trips" and event.description == "" and event.cover is None
    assert event.story_ids == ids  # deduplicated, order kept
    assert event.is_pinned is False and event.is_archived is False
    assert highlight.owner_id == OWNER and highlight.story_ids == ids and not highlight.deleted


def test_create_with_every_field(clock):
    stories = library(clock, 1)
    cover = {
        "story_id": next(iter(stories)),
        "media_url": "https://cdn.example/c.jpg",
        "emoji": "🌴",
        "color": "#12abEF",
    }
    fields = {
        "title": "T",
        "description": "d" * 200,
        "cover": cover,
        "story_ids": list(stories),
        "is_pinned": True,
        "is_archived": True,
    }
    highlight = make_highlight(clock, stories, **fields)
    assert (highlight.title, highlight.description, highlight.cover) == ("T", "d" * 200, cover)
    assert highlight.is_pinned and highlight.is_archived


@pytest.mark.parametrize("title", ["x", "x" * 50, " padded title "])
def test_title_of_1_to_50_characters(clock, title):
    assert make_highlight(clock, library(clock, 1), title=title).title == title.strip()


@pytest.mark.parametrize("title", ["", "   ", "x" * 51, None])
def test_title_out_of_bounds(clock, title):
    stories = library(clock, 1)
    with pytest.raises(InvalidInput) as info:
        Highlight.create(uuid4(), OWNER, {"title": title, "story_ids": list(stories)}, stories, clock())
    assert problem_fields(info.value) == {"title"}


def test_title_is_required(clock):
    stories = library(clock, 1)
    with pytest.raises(InvalidInput):
        Highlight.create(uuid4(), OWNER, {"story_ids": list(stories)}, stories, clock())


def test_description_at_most_200_characters(clock):
    stories = library(clock, 1)
    with pytest.raises(InvalidInput) as info:
        Highlight.create(
            uuid4(), OWNER, {"title": "t", "description": "d" * 201, "story_ids": list(stories)}, stories, clock()
        )
    assert problem_fields(info.value) == {"description"}


@pytest.mark.parametrize("count", [1, 100])
def test_1_to_100_stories(clock, count):
    assert len(make_highlight(clock, library(clock, count)).story_ids) == count


def test_no_stories_are_rejected(clock):
    with pytest.raises(InvalidInput) as info:
        Highlight.create(uuid4(), OWNER, {"title": "t", "story_ids": []}, {}, clock())
    assert problem_fields(info.value) == {"story_ids"}


@pytest.mark.parametrize("limit", [1, 3, 100])
def test_more_stories_than_the_limit_is_limit_reached(clock, limit):
    stories = library(clock, limit + 1)
    with pytest.raises(Conflict) as info:
        Highlight.create(uuid4(), OWNER, {"title": "t", "story_ids": list(stories)}, stories, clock(), limit)
    assert info.value.code == "limit_reached"
    assert info.value.details == {"limit": limit, "kind": "highlight_stories"}
    ids = list(stories)[:limit]
    assert Highlight.create(uuid4(), OWNER, {"title": "t", "story_ids": ids}, stories, clock(), limit).story_ids == ids


def test_100_after_deduplication_is_fine(clock):
    stories = library(clock, 100)
    ids = list(stories)
    assert len(make_highlight(clock, stories, story_ids=ids + ids[:5]).story_ids) == 100


def test_only_the_owners_stories(clock):
    mine, theirs = library(clock, 1), library(clock, 1, owner=OTHER)
    stories = {**mine, **theirs}
    with pytest.raises(InvalidInput) as info:
        Highlight.create(uuid4(), OWNER, {"title": "t", "story_ids": list(stories)}, stories, clock())
    assert info.value.code == "invalid_story_ids"
    assert [d["message"] for d in info.value.details] == [f"not one of your stories: {next(iter(theirs))}"]


def test_unknown_stories_are_rejected(clock):
    stories = {**library(clock, 1), "not-a-story": None}
    with pytest.raises(InvalidInput) as info:
        Highlight.create(uuid4(), OWNER, {"title": "t", "story_ids": [*stories, "missing-from-map"]}, stories, clock())
    assert len(info.value.details) == 2


def test_deleted_stories_are_rejected(clock):
    stories = library(clock, 2)
    next(iter(stories.values())).delete(OWNER, clock())
    with pytest.raises(InvalidInput):
        Highlight.create(uuid4(), OWNER, {"title": "t", "story_ids": list(stories)}, stories, clock())


def test_expired_stories_are_fine(clock):
    stories = library(clock, 1)
    story = next(iter(stories.values()))
    story.expire(clock.advance(hours=25))
    assert make_highlight(clock, stories).story_ids == [str(story.id)]


# -- update ---------------------------------------------------------------------------------


def test_update_records_only_the_given_editable_fields(clock):
    highlight = make_highlight(clock, library(clock, 1))
    highlight.update(OWNER, {"title": " New ", "is_pinned": True, "story_ids": [], "user_id": "x"}, clock())
    [event] = highlight.collect_events()
    assert isinstance(event, HighlightUpdated)
    assert event.changes == {"title": "New", "is_pinned": True}
    assert highlight.title == "New" and highlight.is_pinned
    assert highlight.description == "" and highlight.owner_id == OWNER


def test_update_every_editable_field(clock):
    highlight = make_highlight(clock, library(clock, 1), cover={"media_url": "https://cdn.example/c.jpg"})
    highlight.update(
        OWNER, {"title": "T2", "description": "about", "cover": None, "is_pinned": True, "is_archived": True}, clock()
    )
    assert (highlight.title, highlight.description, highlight.cover) == ("T2", "about", None)
    assert highlight.is_pinned and highlight.is_archived


def test_description_null_clears_it(clock):
    highlight = make_highlight(clock, library(clock, 1), description="old")
    highlight.update(OWNER, {"description": None}, clock())
    assert highlight.collect_events()[0].changes == {"description": ""}
    assert highlight.description == ""


def test_update_does_not_touch_the_callers_dict(clock):
    highlight = make_highlight(clock, library(clock, 1))
    changes = {"title": " x ", "description": None}
    highlight.update(OWNER, changes, clock())
    assert changes == {"title": " x ", "description": None}


@pytest.mark.parametrize("changes", [{}, {"story_ids": ["x"]}, {"owner_id": OTHER}])
def test_empty_update_is_rejected(clock, changes):
    highlight = make_highlight(clock, library(clock, 1))
    with pytest.raises(InvalidInput) as info:
        highlight.update(OWNER, changes, clock())
    assert info.value.code == "empty_update"
    assert highlight.collect_events() == []


@pytest.mark.parametrize("changes", [{"title": ""}, {"title": None}, {"title": "x" * 51}, {"description": "d" * 201}])
def test_update_checks_the_limits(clock, changes):
    highlight = make_highlight(clock, library(clock, 1))
    with pytest.raises(InvalidInput):
        highlight.update(OWNER, changes, clock())
    assert highlight.title == "Trips" and highlight.collect_events() == []


# -- add / remove stories ------------------------------------------------------------------------


def test_add_stories_deduplicates_against_the_highlight_and_itself(clock):
    stories = library(clock, 3)
    first, second, third = stories
    highlight = make_highlight(clock, {first: stories[first]})
    assert highlight.add_stories(OWNER, [first, second, third, second], stories, clock()) is True
    [event] = highlight.collect_events()
    assert isinstance(event, HighlightStoriesAdded) and event.story_ids == [second, third]
    assert highlight.story_ids == [first, second, third]


def test_adding_nothing_new_returns_false(clock):
    stories = library(clock, 2)
    highlight = make_highlight(clock, stories)
    assert highlight.add_stories(OWNER, list(stories), stories, clock()) is False
    assert highlight.add_stories(OWNER, [], stories, clock()) is False
    assert highlight.collect_events() == []


def test_at_most_100_stories(clock):
    stories = library(clock, 101)
    ids = list(stories)
    highlight = make_highlight(clock, {s: stories[s] for s in ids[:99]})
    assert highlight.add_stories(OWNER, ids[99:100], stories, clock())
    with pytest.raises(Conflict) as info:
        highlight.add_stories(OWNER, ids[100:], stories, clock())
    assert info.value.code == "limit_reached" and info.value.details == {"limit": 100, "kind": "highlight_stories"}
    assert len(highlight.story_ids) == 100 and not highlight.pending_events[1:]
    assert highlight.add_stories(OWNER, ids[:100], stories, clock()) is False  # all present: no growth


def test_stories_limit_is_a_parameter_and_removal_frees_room(clock):
    stories = library(clock, 4)
    ids = list(stories)
    highlight = make_highlight(clock, {s: stories[s] for s in ids[:2]})
    with pytest.raises(Conflict) as info:
        highlight.add_stories(OWNER, ids[2:], stories, clock(), limit=3)
    assert info.value.details == {"limit": 3, "kind": "highlight_stories"}
    assert highlight.collect_events() == []
    highlight.remove_stories(OWNER, ids[:1], clock())
    assert highlight.add_stories(OWNER, ids[2:], stories, clock(), limit=3)
    assert highlight.story_ids == ids[1:]


def test_a_deleted_story_in_a_highlight_does_not_count_against_its_limit(clock):
    """The owner no longer sees a deleted story in the highlight, so could not remove it to make room."""
    stories = library(clock, 4)
    ids = list(stories)
    highlight = make_highlight(clock, {s: stories[s] for s in ids[:3]})
    stories[ids[0]].delete(OWNER, clock())
    assert highlight.add_stories(OWNER, ids[3:], stories, clock(), limit=3)


# -- cover ------------------------------------------------------------------------------------


def test_cover_object_fields_are_each_optional(clock):
    stories = library(clock, 2)
    sid = list(stories)[1]
    for cover in (
        {},
        {"story_id": sid},
        {"media_url": "http://x.example/a.png"},
        {"emoji": "🎉"},
        {"color": "#A1b2C3"},
        {"story_id": sid, "emoji": "x", "color": "#000000"},
    ):
        assert make_highlight(clock, stories, cover=cover).cover == cover


def test_cover_story_id_in_another_spelling_is_stored_as_the_highlights(clock):
    stories = library(clock, 1)
    sid = next(iter(stories))
    assert make_highlight(clock, stories, cover={"story_id": sid.upper()}).cover == {"story_id": sid}


@pytest.mark.parametrize(
    "cover, field",
    [
        ({"story_id": "not-in-it"}, "cover.story_id"),
        ({"media_url": "ftp://x/y"}, "cover.media_url"),
        ({"emoji": ""}, "cover.emoji"),
        ({"emoji": "x" * 17}, "cover.emoji"),
        ({"color": "red"}, "cover.color"),
        ({"color": "#12345678"}, "cover.color"),
        ({"size": 3}, "cover.size"),
        ({"emoji": 3}, "cover"),
        ("https://cdn.example/c.jpg", "cover"),
    ],
)
def test_bad_covers_are_invalid(clock, cover, field):
    stories = library(clock, 1)
    with pytest.raises(InvalidInput) as info:
        make_highlight(clock, stories, cover=cover)
    assert field in problem_fields(info.value)


def test_update_cover_story_must_be_in_the_highlight_now(clock):
    stories = library(clock, 3)
    ids = list(stories)
    highlight = make_highlight(clock, {s: stories[s] for s in ids[:2]})
    with pytest.raises(InvalidInput) as info:
        highlight.update(OWNER, {"cover": {"story_id": ids[2]}}, clock())
    assert problem_fields(info.value) == {"cover.story_id"}
    highlight.add_stories(OWNER, ids[2:], stories, clock())
    assert highlight.update(OWNER, {"cover": {"story_id": ids[2], "color": "#ffffff"}}, clock())
    assert highlight.cover == {"story_id": ids[2], "color": "#ffffff"}
    assert highlight.update(OWNER, {"cover": {"story_id": ids[2], "color": "#ffffff"}}, clock()) is False
    assert highlight.update(OWNER, {"cover": None}, clock()) and highlight.cover is None


def test_version_1_string_covers_are_upcast_to_an_object():
    state = {"cover": "https://cdn.example/c.jpg"}
    HighlightCreated.upcast_v1_v2(state)
    assert state == {"cover": {"media_url": "https://cdn.example/c.jpg"}}
    state = {"cover": None}
    HighlightCreated.upcast_v1_v2(state)
    assert state == {"cover": None}
    for changes, expected in (
        ({"cover": "https://c/x"}, {"cover": {"media_url": "https://c/x"}}),
        ({"cover": None, "title": "t"}, {"cover": None, "title": "t"}),
        ({"title": "t"}, {"title": "t"}),
    ):
        state = {"changes": changes}
        HighlightUpdated.upcast_v1_v2(state)
        assert state == {"changes": expected}
    assert HighlightCreated.class_version == HighlightUpdated.class_version == 2


def test_add_only_own_live_or_expired_stories(clock):
    mine = library(clock, 2)
    keep, gone = mine
    highlight = make_highlight(clock, {keep: mine[keep]})
    theirs = library(clock, 1, owner=OTHER)
    with pytest.raises(InvalidInput):
        highlight.add_stories(OWNER, list(theirs), theirs, clock())
    mine[gone].delete(OWNER, clock())
    with pytest.raises(InvalidInput):
        highlight.add_stories(OWNER, [gone], mine, clock())
    assert highlight.collect_events() == [] and highlight.story_ids == [keep]


def test_remove_stories(clock):
    stories = library(clock, 3)
    a, b, c = stories
    highlight = make_highlight(clock, stories)
    assert highlight.remove_stories(OWNER, [c, a, c, "unknown"], clock()) is True
    [event] = highlight.collect_events()
    assert isinstance(event, HighlightStoriesRemoved) and event.story_ids == [c, a]
    assert highlight.story_ids == [b]


def test_removing_nothing_present_returns_false(clock):
    highlight = make_highlight(clock, library(clock, 1))
    assert highlight.remove_stories(OWNER, ["unknown"], clock()) is False
    assert highlight.remove_stories(OWNER, [], clock()) is False
    assert highlight.collect_events() == []


def spellings(story_id: str) -> list[str]:
    """Other spellings of one UUID: upper case, no hyphens, braces, URN."""
    bare = story_id.replace("-", "")
    return [story_id.upper(), bare, bare.upper(), "{" + story_id + "}", "urn:uuid:" + story_id.upper()]


def test_a_highlight_holds_a_story_once_whatever_its_spelling(clock):
    """Issue 11 item 7: one highlight held the same story five times, once per spelling."""
    stories = library(clock, 2)
    a, b = stories
    highlight = Highlight.create(uuid4(), OWNER, {"title": "T", "story_ids": [*spellings(a), a]}, stories, clock())
    [event] = highlight.collect_events()
    assert event.story_ids == [a] and highlight.story_ids == [a]
    assert highlight.add_stories(OWNER, [*spellings(a), *spellings(b)], stories, clock()) is True
    [added] = highlight.collect_events()
    assert added.story_ids == [b] and highlight.story_ids == [a, b]
    assert highlight.add_stories(OWNER, spellings(b), stories, clock()) is False
    assert highlight.remove_stories(OWNER, spellings(b), clock()) is True
    [removed] = highlight.collect_events()
    assert removed.story_ids == [b] and highlight.story_ids == [a]


# -- who may know a highlight exists (issue 11 item 5) -----------------------------------------


def visible(
    highlight: Highlight,
    viewer: str,
    stories: dict[str, Story | None],
    edges: dict[str, Relationship] | None = None,
    asked: list[str] | None = None,
) -> bool:
    """``highlight.visible_to`` with stories from ``stories`` and ``viewer``'s edges by owner."""

    def story_of(story_id: str) -> Story | None:
        if asked is not None:
            asked.append(story_id)
        return stories.get(story_id)

    return highlight.visible_to(viewer, story_of, lambda story: (edges or {}).get(story.owner_id, Relationship()))


def story_with(clock, **fields) -> Story:
    return Story.create(
        uuid4(), OWNER, {"story_type": "text", "text_content": "hi", **fields}, Platform.VIGNETTE, clock()
    )


def test_the_owner_always_knows_their_highlight_until_it_is_deleted(clock):
    stories = {str(s.id): s for s in [story_with(clock, privacy="close_friends")]}
    highlight = make_highlight(clock, stories, is_archived=True)
    assert visible(highlight, OWNER, stories)
    highlight.delete(OWNER, clock())
    assert not visible(highlight, OWNER, stories)


def test_others_know_a_highlight_only_by_a_story_they_may_see(clock):
    followers, close, custom, hidden = (
        story_with(clock, privacy="followers"),
        story_with(clock, privacy="close_friends"),
        story_with(clock, privacy="custom", allowed_viewer_ids=["carol"]),
        story_with(clock, privacy="public", hidden_from_ids=[OTHER]),
    )
    stories = {str(s.id): s for s in (followers, close, custom, hidden)}
    highlight = make_highlight(clock, stories)
    assert not visible(highlight, OTHER, stories)  # a stranger, hidden from the public one
    assert visible(highlight, OTHER, stories, {OWNER: Relationship(follows_owner=True)})
    assert visible(highlight, OTHER, stories, {OWNER: Relationship(close_friend=True)})
    assert visible(highlight, "carol", stories)
    assert visible(highlight, "dave", stories)  # the public story
    clock.advance(hours=48)  # a highlight's stories outlive expiry
    assert visible(highlight, "carol", stories)


def test_archived_deleted_or_story_less_highlights_are_unknown_to_others(clock):
    public = story_with(clock, privacy="public")
    stories = {str(public.id): public}
    archived = make_highlight(clock, stories, is_archived=True)
    assert not visible(archived, OTHER, stories)
    deleted = make_highlight(clock, stories)
    deleted.delete(OWNER, clock())
    assert not visible(deleted, OTHER, stories)
    gone = make_highlight(clock, stories)
    assert visible(gone, OTHER, stories)
    assert not visible(gone, OTHER, {})  # its story unknown
    public.delete(OWNER, clock())  # its only story deleted: nothing left to show
    assert not visible(gone, OTHER, stories)


def test_visibility_stops_at_the_first_visible_story(clock):
    stories = {str(s.id): s for s in [story_with(clock, privacy="public") for _ in range(5)]}
    asked: list[str] = []
    assert visible(make_highlight(clock, stories), OTHER, stories, asked=asked)
    assert asked == [next(iter(stories))]


# -- delete, ownership ----------------------------------------------------------------------------


def test_delete(clock):
    highlight = make_highlight(clock, library(clock, 1))
    highlight.delete(OWNER, clock())
    [event] = highlight.collect_events()
    assert isinstance(event, HighlightDeleted) and event.highlight_id == str(highlight.id)
    assert highlight.deleted


def commands(stories):
    ids = list(stories)
    return {
        "update": lambda h, actor, now: h.update(actor, {"title": "x"}, now),
        "add": lambda h, actor, now: h.add_stories(actor, ids, stories, now),
        "remove": lambda h, actor, now: h.remove_stories(actor, ids, now),
        "delete": lambda h, actor, now: h.delete(actor, now),
    }


@pytest.mark.parametrize("command", ["update", "add", "remove", "delete"])
def test_others_are_forbidden(clock, command):
    stories = library(clock, 2)
    highlight = make_highlight(clock, dict([next(iter(stories.items()))]))
    before = state(highlight)
    with pytest.raises(Forbidden) as info:
        commands(stories)[command](highlight, OTHER, clock())
    assert info.value.code == "not_owner"
    assert state(highlight) == before and highlight.collect_events() == []


@pytest.mark.parametrize("command", ["update", "add", "remove", "delete"])
@pytest.mark.parametrize("actor", [OWNER, OTHER])
def test_deleted_highlight_is_not_found(clock, command, actor):
    stories = library(clock, 2)
    highlight = make_highlight(clock, dict([next(iter(stories.items()))]))
    highlight.delete(OWNER, clock())
    highlight.collect_events()
    with pytest.raises(NotFound):
        commands(stories)[command](highlight, actor, clock())
    assert highlight.collect_events() == []


def test_replayed_highlight_has_the_same_state(clock):
    stories = library(clock, 3)
    ids = list(stories)
    highlight = Highlight.create(uuid4(), OWNER, {"title": "t", "story_ids": ids[:1]}, stories, clock())
    highlight.add_stories(OWNER, ids, stories, clock())
    highlight.remove_stories(OWNER, ids[1:2], clock())
    highlight.update(OWNER, {"description": "d", "is_archived": True}, clock())
    events = highlight.collect_events()
    assert state(Highlight.replay(highlight.id, events)) == state(highlight)


# -- HighlightReel ----------------------------------------------------------------------------------


def make_reel(clock, count: int = 0) -> tuple[HighlightReel, list[str]]:
    reel = HighlightReel.open(None, OWNER)
    ids = [uuid4() for _ in range(count)]
    for hid in ids:
        reel.file(hid, clock())
    reel.collect_events()
    return reel, [str(h) for h in ids]


def test_reel_stream_is_per_owner(clock):
    reel = HighlightReel.open(None, OWNER)
    assert reel.id == HighlightReel.stream_for(OWNER) != HighlightReel.stream_for(OTHER)
    assert reel.owner_id == OWNER and reel.highlight_ids == []
    assert HighlightReel.open(reel, OWNER) is reel


def test_file_appends_at_the_end(clock):
    reel, ids = make_reel(clock, 2)
    new = uuid4()
    reel.file(new, clock())
    [event] = reel.collect_events()
    assert isinstance(event, HighlightFiled) and event.highlight_id == str(new) and event.user_id == OWNER
    assert reel.highlight_ids == [*ids, str(new)]


def test_at_most_200_highlights(clock):
    reel, _ = make_reel(clock, MAX_HIGHLIGHTS)
    with pytest.raises(Conflict) as info:
        reel.file(uuid4(), clock())
    assert info.value.code == "limit_reached"
    assert info.value.details == {"limit": MAX_HIGHLIGHTS, "kind": "highlights"}
    assert len(reel.highlight_ids) == MAX_HIGHLIGHTS and not reel.pending_events


def test_highlights_limit_is_a_parameter(clock):
    reel, ids = make_reel(clock, 2)
    with pytest.raises(Conflict) as info:
        reel.file(uuid4(), clock(), limit=2)
    assert info.value.details == {"limit": 2, "kind": "highlights"}
    reel.unfile(UUID(ids[0]), clock())
    reel.file(uuid4(), clock(), limit=2)  # a deleted highlight frees its place
    assert len(reel.highlight_ids) == 2


def test_unfile(clock):
    reel, ids = make_reel(clock, 3)
    reel.unfile(UUID(ids[1]), clock())
    [event] = reel.collect_events()
    assert isinstance(event, HighlightUnfiled) and event.highlight_id == ids[1]
    assert reel.highlight_ids == [ids[0], ids[2]]


def test_unfile_of_an_absent_highlight_changes_nothing(clock):
    reel, ids = make_reel(clock, 1)
    reel.unfile(uuid4(), clock())
    assert reel.collect_events() == [] and reel.highlight_ids == ids


def test_reorder_to_a_permutation(clock):
    reel, ids = make_reel(clock, 3)
    new_order = [ids[2], ids[0], ids[1]]
    reel.reorder(new_order, clock())
    [event] = reel.collect_events()
    assert isinstance(event, HighlightsReordered) and event.highlight_ids == new_order
    assert reel.highlight_ids == new_order


@pytest.mark.parametrize(
    "make_order",
    [
        lambda ids: ids[:2],  # one left out
        lambda ids: [*ids, str(uuid4())],  # a stranger added
        lambda ids: [ids[0], ids[0], ids[1]],  # a duplicate instead of one
        lambda ids: [*ids, ids[0]],  # a duplicate on top
        lambda ids: [],
        lambda ids: [ids[0], ids[1], str(uuid4())],  # one swapped for another
    ],
)
def test_reorder_must_be_the_whole_list_exactly_once(clock, make_order):
    reel, ids = make_reel(clock, 3)
    with pytest.raises(InvalidInput) as info:
        reel.reorder(make_order(ids), clock())
    assert info.value.code == "not_your_whole_list"
    assert reel.highlight_ids == ids and reel.collect_events() == []


def test_reel_replays_to_the_same_order(clock):
    reel = HighlightReel.open(None, OWNER)
    ids = [uuid4() for _ in range(4)]
    for hid in ids:
        reel.file(hid, clock())
    reel.unfile(ids[1], clock())
    reel.reorder([str(ids[3]), str(ids[0]), str(ids[2])], clock())
    events = reel.collect_events()
    assert state(HighlightReel.replay(reel.id, events)) == state(reel)


def test_a_stored_version_1_highlight_reads_with_a_cover_object(sqlite_url, clock):
    """Events stored with a string cover load (command side) and export (log readers) as objects."""
    import orjson
    from eventsourcing.persistence import StoredEvent

    from commands.event_store import EventStore

    store = EventStore(sqlite_url)
    try:
        hid, when = uuid4(), clock().isoformat()
        stamp = {"occurred_at": {"_type_": "datetime_iso", "_data_": when}}
        created = {
            **stamp,
            "highlight_id": str(hid),
            "user_id": OWNER,
            "title": "Old",
            "description": "",
            "cover": "https://cdn.example/old.jpg",
            "story_ids": ["s1"],
            "is_pinned": False,
            "is_archived": False,
        }
        updated = {
            **stamp,
            "highlight_id": str(hid),
            "user_id": OWNER,
            "changes": {"cover": "https://cdn.example/n.jpg"},
        }
        topic = lambda cls: f"{cls.__module__}:{cls.__qualname__}"  # noqa: E731
        store.recorder.insert_events(
            [
                StoredEvent(hid, 1, topic(HighlightCreated), orjson.dumps(created)),
                StoredEvent(hid, 2, topic(HighlightUpdated), orjson.dumps(updated)),
            ]
        )
        [first, second] = [e.event for e in store.read()]
        assert first.cover == {"media_url": "https://cdn.example/old.jpg"}
        assert second.changes == {"cover": {"media_url": "https://cdn.example/n.jpg"}}
        assert store.load(Highlight, hid).cover == {"media_url": "https://cdn.example/n.jpg"}
    finally:
        store.close()
