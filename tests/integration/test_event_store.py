"""The event store on SQLite and on PostgreSQL (the machine's server)."""

from __future__ import annotations

import threading
from uuid import uuid4

import pytest

from commands.event_store import EventStore, StreamConflict
from domain.platform import Platform
from domain.social import Follow
from domain.stories import Story

TEXT_STORY = {"story_type": "text", "text_content": "hello", "privacy": "public"}


def test_append_load_and_read_in_order(event_store_url, clock):
    store = EventStore(event_store_url)
    story = Story.create(uuid4(), "alice", TEXT_STORY, Platform.VIGNETTE, clock())
    positions = store.append(story.collect_events())
    assert len(positions) == 1
    loaded = store.load(Story, story.id)
    assert loaded.owner_id == "alice" and loaded.version == 1
    loaded.delete("alice", clock.advance(minutes=1))
    [p2] = store.append(loaded.collect_events())
    assert p2 > positions[0]
    logged = list(store.read())
    assert [e.event.event_type for e in logged] == ["StoryCreated", "StoryDeleted"]
    assert [e.position for e in logged] == [positions[0], p2]
    assert store.head() == p2
    assert store.position_of(story.id, 2) == p2
    envelope = logged[0].envelope("vignette")
    assert envelope["stream_id"] == str(story.id) and envelope["data"]["user_id"] == "alice"
    store.close()


def test_second_writer_of_same_version_conflicts(event_store_url, clock):
    store = EventStore(event_store_url)
    edge = Follow.follow(None, "bob", "alice", clock())
    store.append(edge.collect_events())
    # Two writers both loaded version 1 and both append version 2.
    first, second = store.load(Follow, edge.id), store.load(Follow, edge.id)
    first.unfollow(clock())
    second.unfollow(clock())
    store.append(first.collect_events())
    with pytest.raises(StreamConflict):
        store.append(second.collect_events())
    assert store.load(Follow, edge.id).version == 2
    store.close()


def test_a_conflicting_batch_stores_nothing(event_store_url, clock):
    store = EventStore(event_store_url)
    taken = Follow.follow(None, "carol", "alice", clock())
    store.append(taken.collect_events())
    fresh = Follow.follow(None, "dave", "alice", clock())
    duplicate = Follow.follow(None, "carol", "alice", clock())  # version 1 again
    with pytest.raises(StreamConflict):
        store.append(fresh.collect_events() + duplicate.collect_events())
    assert store.load(Follow, fresh.id) is None
    store.close()


def test_concurrent_appends_get_distinct_increasing_positions(event_store_url, clock):
    store = EventStore(event_store_url)
    positions: list[int] = []
    lock = threading.Lock()

    def write(n: int) -> None:
        for i in range(20):
            edge = Follow.follow(None, f"u{n}-{i}", "alice", clock())
            got = store.append(edge.collect_events())
            with lock:
                positions.extend(got)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(positions)) == 80
    assert [e.position for e in store.read()] == sorted(positions)
    store.close()


def test_processes_starting_together_on_a_fresh_database_all_come_up(postgres_schema_url):
    """Compose and scale-out start several processes at once; each creates the tables "if not
    exists", and PostgreSQL's catalogue makes all but one fail unless the store retries."""
    import subprocess
    import sys

    script = (
        "import sys; from commands.event_store import EventStore; store = EventStore(sys.argv[1]); print(store.head())"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, postgres_schema_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(6)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert out.strip() == b"0"


def test_stored_positions_tells_a_batch_it_is_stored_already(event_store_url, clock):
    """Issue 11 item 6: after a uniqueness failure, the group committer asks whether the batch's
    very events are in the log (its own unacknowledged commit) before re-running anything."""
    store = EventStore(event_store_url)
    story = Story.create(uuid4(), "alice", TEXT_STORY, Platform.VIGNETTE, clock())
    edge = Follow.follow(None, "erin", "alice", clock())
    batch = story.collect_events() + edge.collect_events()
    assert store.stored_positions([]) == []
    assert store.stored_positions(batch) is None  # not stored yet
    positions = store.append(batch)
    with pytest.raises(StreamConflict):
        store.append(batch)
    assert store.stored_positions(batch) == positions
    # the same stream versions written by someone else, with other content, are not this batch's
    rival = Follow.follow(None, "erin", "alice", clock.advance(seconds=1))
    assert store.stored_positions(rival.collect_events()) is None
    other = Story.create(uuid4(), "alice", TEXT_STORY, Platform.VIGNETTE, clock())
    assert store.stored_positions(batch + other.collect_events()) is None  # one of them is not stored
    store.close()
