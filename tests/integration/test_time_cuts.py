"""Exact time cuts: `stories export --until TIME`, `stories replay --until TIME` and
`stories story-at ID --at TIME` keep every event stamped at or before TIME, wherever it sits in
the log. Two "processes" (two stores, committers and applications on one SQLite file, each with
its own clock) log an event stamped later before one stamped earlier."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import UUID

import orjson
import pytest
from pymongo import MongoClient
from typer.testing import CliRunner

from commands import models
from commands import use_cases as uc
from commands.application import StoriesApplication
from commands.event_store import EventStore
from commands.group_commit import GroupCommitter
from domain.platform import Platform
from domain.stories import StoryCreated, StoryEdited
from projections.replay import Cut, parse_until, story_at
from stories.cli import cli
from tests.conftest import FakeClock


class Process:
    """One writer process: its own store connection, group committer, application and clock."""

    def __init__(self, url: str, clock: FakeClock) -> None:
        self.store = EventStore(url)
        self.committer = GroupCommitter(self.store)
        self.clock = clock
        self.app = StoriesApplication(self.store, self.committer, Platform.VIGNETTE, clock=clock)

    def run(self, command: uc.Command) -> tuple[uc.Result, int]:
        return asyncio.run(self.app.execute(command))

    def close(self) -> None:
        self.committer.close()
        self.store.close()


@pytest.fixture
def two_processes(sqlite_url):
    start = FakeClock().now
    a, b = Process(sqlite_url, FakeClock(start)), Process(sqlite_url, FakeClock(start))
    yield a, b
    a.close()
    b.close()


def _out_of_order_log(a: Process, b: Process):
    """A creates a story at 12:00; A (clock ahead) logs v1's view stamped 12:10, then B (clock
    behind) logs v2's view stamped 12:05 and v4's stamped exactly 12:07, then A logs v3's at 12:20.
    Cut at 12:07: the story, v2 and v4, not v1 or v3."""
    body = models.CreateStory.model_validate({"story_type": "text", "text_content": "hi", "privacy": "public"})
    created, _ = a.run(uc.CreateStory("alice", body))
    story_id = str(created.story_id)
    t0 = a.clock.now
    a.clock.now = t0 + timedelta(minutes=10)
    _, p1 = a.run(uc.ViewStory("v1", story_id))
    b.clock.now = t0 + timedelta(minutes=5)
    _, p2 = b.run(uc.ViewStory("v2", story_id))
    cut = b.clock.now = t0 + timedelta(minutes=7)
    _, p4 = b.run(uc.ViewStory("v4", story_id))
    a.clock.now = t0 + timedelta(minutes=20)
    a.run(uc.ViewStory("v3", story_id))
    assert p1 < p2 < p4  # the later-stamped view sits first in the log
    return story_id, cut, p1


def _env(sqlite_url: str, tmp_path, **extra: str) -> dict[str, str]:
    return {"STORIES_EVENT_STORE_URL": sqlite_url, "STORIES_DATA_DIR": str(tmp_path / "data"), **extra}


def test_export_until_a_time_keeps_every_event_at_or_before_it(two_processes, sqlite_url, tmp_path):
    a, b = two_processes
    _story_id, cut, p1 = _out_of_order_log(a, b)
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["export", "--until", cut.isoformat(), "--no-progress"],
        env=_env(sqlite_url, tmp_path),
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    events = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [(e["event_type"], e["data"].get("viewer_id")) for e in events] == [
        ("StoryCreated", None),
        ("StoryViewed", "v2"),
        ("StoryViewed", "v4"),
    ]
    positions = [e["position"] for e in events]
    assert positions == sorted(positions)  # log order
    assert all(e["occurred_at"] <= cut.isoformat() for e in events)

    # The same cut with a "Z" time, and through CSV.
    result = runner.invoke(
        cli,
        ["export", "--until", cut.strftime("%Y-%m-%dT%H:%M:%SZ"), "--format", "csv", "--no-progress"],
        env=_env(sqlite_url, tmp_path),
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) == 1 + 3

    # Digits stay a position cut: everything up to v1's view, whatever its time.
    result = runner.invoke(
        cli, ["export", "--until", str(p1), "--no-progress"], env=_env(sqlite_url, tmp_path), catch_exceptions=False
    )
    events = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [(e["event_type"], e["data"].get("viewer_id")) for e in events] == [
        ("StoryCreated", None),
        ("StoryViewed", "v1"),
    ]


def test_parse_until(two_processes):
    a, b = two_processes
    _story_id, cut, p1 = _out_of_order_log(a, b)
    head = a.store.head()
    assert parse_until(a.store, None) == Cut(head)
    assert parse_until(a.store, str(p1)) == Cut(p1)
    assert parse_until(a.store, cut.isoformat()) == Cut(head, cut)
    assert Cut(head).keep is None


def test_replay_until_a_time_rebuilds_from_exactly_those_events(
    two_processes,
    sqlite_url,
    tmp_path,
    mongodb_url,
    mongodb_database,
    redis_url,
    redis_prefix,
):
    a, b = two_processes
    story_id, cut, _ = _out_of_order_log(a, b)
    result = CliRunner().invoke(
        cli,
        ["replay", "--until", cut.isoformat(), "--database", mongodb_database, "--prefix", redis_prefix],
        env=_env(sqlite_url, tmp_path, STORIES_MONGODB_URL=mongodb_url, STORIES_REDIS_URL=redis_url),
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "replayed 3 events" in result.stdout
    with MongoClient(mongodb_url) as mongo:
        db = mongo[mongodb_database]
        doc = db.stories.find_one({"_id": story_id})
        assert (doc["view_count"], doc["unique_viewers"]) == (2, 2)
        assert sorted(v["viewer_id"] for v in db.story_viewers.find({"story_id": story_id})) == ["v2", "v4"]
        # The runners went over the whole log (to the head), skipping the later-stamped events.
        positions = {d["_id"]: d["position"] for d in db.projection_positions.find()}
        assert positions and set(positions.values()) == {a.store.head()}


def test_story_at_counts_an_earlier_event_logged_after_a_later_one(two_processes, sqlite_url, tmp_path):
    a, b = two_processes
    story_id, cut, _ = _out_of_order_log(a, b)
    then = story_at(a.store, story_id, cut)
    assert (then["view_count"], then["unique_viewers"]) == (2, 2)
    assert [v["version"] for v in then["versions"]] == [1]
    assert story_at(a.store, story_id, cut + timedelta(minutes=30))["view_count"] == 4
    assert story_at(a.store, story_id, cut - timedelta(minutes=30)) is None  # not created yet

    result = CliRunner().invoke(
        cli, ["story-at", story_id, "--at", cut.isoformat()], env=_env(sqlite_url, tmp_path), catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    shown = orjson.loads(result.stdout)
    assert shown["view_count"] == 2 and shown["versions"][0]["text_content"] == "hi"


def _edit(process: Process, story_id: str, version: int, text: str, stickers: list) -> None:
    """A StoryEdited appended by hand through the store, stamped by the process's clock."""
    process.store.append(
        [
            StoryEdited(
                originator_id=UUID(story_id),
                originator_version=version,
                occurred_at=process.clock.now,
                story_id=story_id,
                user_id="alice",
                text_content=text,
                background_color="#112233",
                background_gradient=None,
                stickers=stickers,
                changed=["text_content", "background_color"],
            )
        ]
    )


def test_story_at_lists_the_content_versions_up_to_the_moment(two_processes):
    a, b = two_processes
    poll = {"sticker_type": "poll", "poll": {"question": "?", "options": [{"text": "a"}, {"text": "b"}]}}
    body = models.CreateStory.model_validate(
        {"story_type": "text", "text_content": "first", "privacy": "public", "stickers": [poll]}
    )
    created, _ = a.run(uc.CreateStory("alice", body))
    story_id = str(created.story_id)
    stored = next(e.event for e in a.store.read() if isinstance(e.event, StoryCreated))
    t0 = a.clock.now
    a.clock.now = t0 + timedelta(minutes=30)
    _edit(a, story_id, 2, "second", stored.stickers)  # stamped 12:30, logged first
    b.clock.now = t0 + timedelta(minutes=20)
    _edit(b, story_id, 3, "third", stored.stickers)  # stamped 12:20 by a clock behind, logged after
    b.run(uc.ViewStory("v1", story_id))  # 12:20 too

    early = story_at(a.store, story_id, t0 + timedelta(minutes=10))
    assert [v["version"] for v in early["versions"]] == [1] and early["view_count"] == 0
    assert early["versions"][0] == {
        "version": 1,
        "at": t0.isoformat(),
        "changed": [],
        "text_content": "first",
        "background_color": None,
        "background_gradient": None,
        "stickers": stored.stickers,
    }
    assert "results" not in early["versions"][0]["stickers"][0]["poll"]

    # 12:25: the edit stamped 12:20 counts although an edit stamped 12:30 sits before it in the log.
    middle = story_at(a.store, story_id, t0 + timedelta(minutes=25))
    assert [(v["version"], v["text_content"]) for v in middle["versions"]] == [(1, "first"), (3, "third")]
    assert middle["versions"][1]["changed"] == ["text_content", "background_color"]
    assert middle["versions"][1]["at"] == (t0 + timedelta(minutes=20)).isoformat()
    assert middle["view_count"] == 1

    late = story_at(a.store, story_id, t0 + timedelta(minutes=40))
    assert [(v["version"], v["text_content"]) for v in late["versions"]] == [(1, "first"), (2, "second"), (3, "third")]
    # The content shown is that of the latest version kept (the story stream's order).
    assert (early["text_content"], middle["text_content"], late["text_content"]) == ("first", "third", "third")
