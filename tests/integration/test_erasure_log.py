"""Erasure on the log itself, on SQLite and on PostgreSQL (the machine's server): the command
(``commands/erasure.py``), what readers of the log find afterwards (export's envelopes, another
process), recovery after a crash between its steps, the ambiguous-commit check on sealed rows,
and ``stories reencrypt`` of a log written before per-person encryption.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import orjson
import pytest
from eventsourcing.persistence import DatetimeAsISO, InfrastructureFactory, JSONTranscoder, Mapper, UUIDAsHex
from eventsourcing.utils import Environment
from typer.testing import CliRunner

from commands.erasure import erase_account, finish_erasures
from commands.event_store import EventStore, persistence_env
from commands.idempotency import IdempotencyRecord
from commands.personal_data import pseudonym
from domain.accounts import Account
from domain.catalogue import EVENT_TYPES
from domain.engagement import StoryReplies, StoryView
from domain.limits import FOLLOWS, Tally
from domain.platform import Platform
from domain.social import CloseFriendship, Follow
from domain.stories import Story
from domain.visibility import Relationship

pytestmark = pytest.mark.timeout(180)

KEY = b"test pseudonym key"
NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
# The erased person and what they wrote: '.' and ':' are not in a sealed value's base64 alphabet,
# so finding these strings anywhere means they are there in clear.
ALICE, BOB, CAROL = "alice.erased", "bob.stays", "carol.stays"
ALICE_TEXT, ALICE_REPLY = "txt:alice's sunset at the pier", "txt:alice replies: so good"
BOB_TEXT = "txt:bob's morning run"
FRIENDS = Relationship(follows_owner=True, followed_by_owner=True)


def events_of_everyone(store: EventStore, now: datetime = NOW) -> dict[str, object]:
    """A small log where Alice writes, views, replies, follows and is on lists, and Bob and
    Carol do the same around her. Returns the aggregates by name."""
    alice_story = Story.create(
        uuid4(), ALICE, {"story_type": "text", "text_content": ALICE_TEXT, "privacy": "public"}, Platform.VIGNETTE, now
    )
    bob_story = Story.create(
        uuid4(),
        BOB,
        {"story_type": "text", "text_content": BOB_TEXT, "privacy": "custom", "allowed_viewer_ids": [ALICE, CAROL]},
        Platform.VIGNETTE,
        now,
    )
    store.append(alice_story.collect_events() + bob_story.collect_events())
    later = now + timedelta(minutes=5)
    view = StoryView.view(None, alice_story, BOB, FRIENDS, later)
    alice_views = StoryView.view(None, bob_story, ALICE, FRIENDS, later)
    reply = StoryReplies.reply(None, bob_story, ALICE, ALICE_REPLY, FRIENDS, Platform.VIGNETTE, later)
    tally = Tally.open(None, FOLLOWS, ALICE)
    follow = Follow.follow(None, ALICE, BOB, later, tally, 100)
    followed = Follow.follow(None, CAROL, ALICE, later)
    friend = CloseFriendship.add(None, BOB, ALICE, later)
    record = IdempotencyRecord.record(
        ALICE, "k-1", "f" * 64, 201, {"story_id": str(alice_story.id), "text_content": ALICE_TEXT}, later
    )
    events = []
    for aggregate in (view, alice_views, reply, follow, tally, followed, friend, record):
        events += aggregate.collect_events()
    store.append(events)
    return {
        "alice_story": alice_story,
        "bob_story": bob_story,
        "follow": follow,
        "tally": tally,
        "followed": followed,
        "friend": friend,
    }


def count(store: EventStore, event_type: str) -> int:
    return sum(1 for e in store.read() if e.event.event_type == event_type)


def envelopes(store: EventStore) -> list[dict]:
    return [e.envelope("vignette") for e in store.read()]


# -- the command -------------------------------------------------------------------------------


def test_erasing_twice_appends_one_account_erased(event_store_url):
    store = EventStore(event_store_url)
    events_of_everyone(store)
    first = erase_account(store, KEY, ALICE, NOW + timedelta(hours=1))
    second = erase_account(store, KEY, ALICE, NOW + timedelta(hours=2))
    assert first == second == store.head()
    [erased] = [e for e in store.read() if e.event.event_type == "AccountErased"]
    assert erased.position == first and erased.event.pseudonym == pseudonym(KEY, ALICE)
    assert store.keys.unannounced() == []
    assert store.keys.erased_since("") == [(pseudonym(KEY, ALICE), (NOW + timedelta(hours=1)).isoformat())]
    # another process erasing again: the same answer, nothing appended
    other = EventStore(event_store_url)
    assert erase_account(other, KEY, ALICE, NOW + timedelta(hours=3)) == first
    assert count(other, "AccountErased") == 1
    other.close()
    store.close()


def test_after_erasure_the_log_shows_null_and_erased(event_store_url):
    store = EventStore(event_store_url)
    events_of_everyone(store)
    before = envelopes(store)
    text = orjson.dumps(before).decode()
    assert ALICE in text and ALICE_TEXT in text and ALICE_REPLY in text  # readable until erased
    assert not any(e.get("erased") for e in before)

    erase_account(store, KEY, ALICE, NOW + timedelta(hours=1))
    for reader in (store, EventStore(event_store_url)):  # this process, and another one
        after = envelopes(reader)
        text = orjson.dumps(after).decode()
        for secret in (ALICE, ALICE_TEXT, ALICE_REPLY, "alice"):
            assert secret not in text, secret
        for word in (BOB, CAROL, BOB_TEXT):
            assert word in text  # others' data stays
        by_type = {}
        for envelope in after:
            by_type.setdefault(envelope["event_type"], []).append(envelope)
        [alice_story, bob_story] = by_type["StoryCreated"]
        assert alice_story["erased"] is True
        assert alice_story["data"]["user_id"] is None and alice_story["data"]["text_content"] is None
        assert alice_story["data"]["privacy"] == "public" and alice_story["data"]["story_type"] == "text"
        assert bob_story["erased"] is True  # Alice was on its viewer list: that entry reads null
        assert bob_story["data"]["allowed_viewer_ids"] == [None, CAROL]
        assert bob_story["data"]["text_content"] == BOB_TEXT and bob_story["data"]["user_id"] == BOB
        [reply] = by_type["StoryReplied"]
        assert reply["erased"] and reply["data"]["user_id"] is None and reply["data"]["text"] is None
        assert reply["data"]["owner_id"] == BOB
        views = {(v["data"]["owner_id"], v["data"]["viewer_id"]) for v in by_type["StoryViewed"]}
        assert views == {(None, BOB), (BOB, None)}
        assert all(v["erased"] for v in by_type["StoryViewed"])
        follows = {(f["data"]["follower_id"], f["data"]["followee_id"]) for f in by_type["UserFollowed"]}
        assert follows == {(None, BOB), (CAROL, None)}
        [friend] = by_type["CloseFriendAdded"]
        assert friend["data"] == {"user_id": BOB, "friend_id": None} and friend["erased"] is True
        [erased] = by_type["AccountErased"]
        assert erased["data"] == {"pseudonym": pseudonym(KEY, ALICE)} and "erased" not in erased
        # the data is the same in every reader; only "erased" events lost anything
        assert [e["data"] for e in after] == [e["data"] for e in envelopes(store)]
        # the log's stream ids do not name her either (keyed): not the ids derived from hers
        assert str(Follow.stream_for(ALICE, BOB)) not in text
    store.close()


def test_a_process_that_had_the_key_cached_forgets_it_on_reading_account_erased(event_store_url):
    """A long-running reader (the projector, the relay) read Alice's events with her key in
    memory; another process erases her. From the AccountErased on, in log order, it reads her
    data as null too."""
    reader = EventStore(event_store_url)
    events_of_everyone(reader)
    assert ALICE_TEXT in orjson.dumps(envelopes(reader)).decode()  # key cached
    eraser = EventStore(event_store_url)
    erase_account(eraser, KEY, ALICE, NOW + timedelta(hours=1))
    events = list(reader.read())  # meets AccountErased at the end
    assert events[-1].event.event_type == "AccountErased"
    assert events[-1].event.user_id == ALICE  # within the purge window: whom to purge
    text = orjson.dumps(envelopes(reader)).decode()
    assert ALICE not in text and ALICE_TEXT not in text
    reader.close()
    eraser.close()


def test_finish_erasures_after_a_crash_between_the_steps(event_store_url):
    name = pseudonym(KEY, ALICE)
    # crash after step 1: the key is gone, no AccountErased yet
    store = EventStore(event_store_url)
    events_of_everyone(store)
    store.keys.erase(ALICE, name, NOW)
    store.close()
    restarted = EventStore(event_store_url)
    assert restarted.keys.unannounced() == [name]
    assert count(restarted, "AccountErased") == 0
    assert ALICE_TEXT not in orjson.dumps(envelopes(restarted)).decode()  # already unreadable
    [position] = finish_erasures(restarted, NOW + timedelta(minutes=1))
    assert count(restarted, "AccountErased") == 1 and restarted.keys.unannounced() == []
    assert finish_erasures(restarted, NOW + timedelta(minutes=2)) == []

    # crash after step 2: AccountErased appended, not marked announced
    restarted.keys.erase(BOB, pseudonym(KEY, BOB), NOW)
    account = Account.erase(None, pseudonym(KEY, BOB), NOW)
    [bob_position] = restarted.append(account.collect_events())
    restarted.close()
    again = EventStore(event_store_url)
    assert again.keys.unannounced() == [pseudonym(KEY, BOB)]
    assert finish_erasures(again, NOW + timedelta(minutes=3)) == [bob_position]
    assert count(again, "AccountErased") == 2 and again.keys.unannounced() == []
    # and the command re-run after either crash answers the same
    assert erase_account(again, KEY, ALICE, NOW + timedelta(hours=1)) == position
    assert erase_account(again, KEY, BOB, NOW + timedelta(hours=1)) == bob_position
    again.close()


# -- the ambiguous-commit check --------------------------------------------------------------


def test_stored_positions_recognizes_a_batchs_own_sealed_rows(event_store_url):
    store = EventStore(event_store_url)
    story = Story.create(
        uuid4(), ALICE, {"story_type": "text", "text_content": ALICE_TEXT, "privacy": "public"}, Platform.VIGNETTE, NOW
    )
    tally = Tally.open(None, FOLLOWS, ALICE)
    follow = Follow.follow(None, ALICE, BOB, NOW, tally, 100)
    batch = story.collect_events() + follow.collect_events() + tally.collect_events()
    positions = store.append(batch)
    assert store.stored_positions(batch) == positions
    other = EventStore(event_store_url)  # a process with nothing cached
    assert other.stored_positions(batch) == positions
    # the same streams and versions with other content are not this batch's rows
    impostor = Story.create(
        story.id,
        ALICE,
        {"story_type": "text", "text_content": "txt:other", "privacy": "public"},
        Platform.VIGNETTE,
        NOW,
    )
    assert store.stored_positions(impostor.collect_events()) is None
    not_stored = Follow.follow(None, ALICE, CAROL, NOW)
    assert store.stored_positions(not_stored.collect_events()) is None
    other.close()
    store.close()


# -- a log from before per-person encryption, and `stories reencrypt` ------------------------


@pytest.fixture
def two_logs(event_store_url, request, tmp_path):
    """The test's log and a second, empty one on the same backend."""
    if event_store_url.startswith("sqlite"):
        return event_store_url, f"sqlite:///{tmp_path / 'reencrypted.sqlite3'}"
    import psycopg

    base = event_store_url.split("?", 1)[0]
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return event_store_url, f"{base}?schema={schema}"


def write_old_log(url: str) -> tuple[dict[str, object], int]:
    """Write the log as the code before this change did: eventsourcing's plain mapper, personal
    data in clear, stream ids as derived (``domain.ids``). Returns the aggregates and how many
    records."""
    factory = InfrastructureFactory.construct(Environment("stories", persistence_env(url)))
    recorder = factory.application_recorder()
    transcoder = JSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DatetimeAsISO())
    mapper = Mapper(transcoder=transcoder)

    class Plain:
        def append(self, events):
            recorder.insert_events([mapper.to_stored_event(e) for e in events])

    aggregates = events_of_everyone(Plain())  # type: ignore[arg-type]
    head = recorder.max_notification_id()
    factory.close()
    return aggregates, head


def records(store: EventStore) -> list:
    """Every record of the log (private ones too), read through the store's mapper."""
    rows = store.recorder.select_notifications(1, 10_000)
    return [
        (row.id, row.originator_id, row.topic, store._mapper.to_domain_event(row), bytes(row.state)) for row in rows
    ]


def comparable(event) -> dict:
    return {k: v for k, v in vars(event).items() if not k.startswith("_") and k != "originator_id"}


def test_an_old_log_opens_as_legacy_and_reencrypts_into_a_new_one(two_logs):
    old_url, new_url = two_logs
    aggregates, head = write_old_log(old_url)
    old = EventStore(old_url)
    assert old.keys.meta.stream_key is None  # legacy: plain stream ids
    follow_id = Follow.stream_for(ALICE, BOB)
    assert old.keys.physical_stream(follow_id) == follow_id
    assert old.load(Follow, follow_id).active
    assert old.load(Tally, Tally.stream_for(FOLLOWS, ALICE), last=True).count == 1
    assert old.load(Story, aggregates["alice_story"].id).fields["text_content"] == ALICE_TEXT
    old_records = records(old)
    assert len(old_records) == head
    assert any(ALICE_TEXT.encode() in state for *_, state in old_records)  # in clear, as it was

    new = EventStore(new_url)
    assert new.copy_from(old, batch=3) == head
    new_records = records(new)
    assert [r[2] for r in new_records] == [r[2] for r in old_records]  # same types, same order
    assert [comparable(r[3]) for r in new_records] == [comparable(r[3]) for r in old_records]
    assert [e.event.data() for e in new.read()] == [e.event.data() for e in old.read()]
    for _, _stream, _, _, state in new_records:
        for secret in (ALICE, BOB, CAROL, ALICE_TEXT, ALICE_REPLY, BOB_TEXT):
            assert secret.encode() not in state
        assert b"txt:" not in state and b".erased" not in state and b".stays" not in state
    derived = {
        Follow.stream_for(ALICE, BOB),
        Follow.stream_for(CAROL, ALICE),
        Tally.stream_for(FOLLOWS, ALICE),
        CloseFriendship.stream_for(BOB, ALICE),
        IdempotencyRecord.stream_for(ALICE, "k-1"),
    }
    assert not derived & {uuid.UUID(str(r[1])) for r in new_records}  # keyed
    # random stream ids (stories) are kept
    assert uuid.UUID(str(new_records[0][1])) == aggregates["alice_story"].id
    # aggregates load in the new log by their domain ids
    assert new.load(Follow, follow_id).active and new.load(Follow, follow_id).follower_id == ALICE
    assert new.load(Follow, Follow.stream_for(CAROL, ALICE)).active
    assert new.load(Tally, Tally.stream_for(FOLLOWS, ALICE), last=True).count == 1
    assert new.load(CloseFriendship, CloseFriendship.stream_for(BOB, ALICE)).active
    assert new.load(IdempotencyRecord, IdempotencyRecord.stream_for(ALICE, "k-1")).answer.status == 201
    assert new.load(Story, aggregates["bob_story"].id).fields["allowed_viewer_ids"] == [ALICE, CAROL]
    with new.reading() as load:
        assert load(Tally, Tally.stream_for(FOLLOWS, ALICE), last=True).count == 1
    # and the new log forgets Alice on erasure, which the old one could not
    erase_account(new, KEY, ALICE, NOW + timedelta(days=1))
    assert ALICE_TEXT not in orjson.dumps(envelopes(new)).decode()
    assert count(new, "AccountErased") == 1
    old.close()
    new.close()


def cli(args: list[str], url: str, **env: str):
    from stories.cli import cli as app

    environment = {
        "STORIES_EVENT_STORE_URL": url,
        "STORIES_PSEUDONYM_KEY": KEY.decode(),
        "STORIES_MASTER_KEYS": "",
        **env,
    }
    return CliRunner().invoke(app, args, env=environment, catch_exceptions=False)


def test_the_cli_reencrypts_exports_and_erases(two_logs):
    old_url, new_url = two_logs
    _, head = write_old_log(old_url)

    result = cli(["reencrypt", "--into", new_url, "--no-progress"], old_url)
    assert result.exit_code == 0, result.output
    assert f"copied {head} records" in result.output
    again = cli(["reencrypt", "--into", new_url, "--no-progress"], old_url)
    assert again.exit_code == 2 and "not empty" in again.output
    keyed_source = cli(["reencrypt", "--into", old_url, "--no-progress"], new_url)
    assert keyed_source.exit_code == 2

    exported = cli(["export", "--no-progress"], new_url)
    assert exported.exit_code == 0, exported.output
    lines = [orjson.loads(line) for line in exported.output.splitlines() if line.strip()]
    old = EventStore(old_url)
    assert [(e["event_type"], e["data"]) for e in lines] == [(e.event.event_type, e.event.data()) for e in old.read()]
    old.close()
    assert not any("erased" in e for e in lines)

    erased = cli(["erase", ALICE, "--yes"], new_url)
    assert erased.exit_code == 0, erased.output
    assert "erased; AccountErased at position" in erased.output
    assert cli(["erase", ALICE, "--yes"], new_url).output == erased.output  # idempotent

    exported = cli(["export", "--no-progress"], new_url)
    lines = [orjson.loads(line) for line in exported.output.splitlines() if line.strip()]
    assert ALICE not in exported.output and ALICE_TEXT not in exported.output and ALICE_REPLY not in exported.output
    assert Counter(e["event_type"] for e in lines)["AccountErased"] == 1
    flagged = {e["event_type"] for e in lines if e.get("erased")}
    assert flagged == {"StoryCreated", "StoryViewed", "StoryReplied", "UserFollowed", "CloseFriendAdded"}
    assert all(e.get("erased") is None for e in lines if e["event_type"] == "AccountErased")

    as_csv = cli(["export", "--no-progress", "--format", "csv"], new_url)
    assert as_csv.exit_code == 0
    rows = list(csv.reader(io.StringIO(as_csv.output)))
    assert rows[0][-1] == "erased" and len(rows) == len(lines) + 1
    assert [row[-1] for row in rows[1:]] == ["true" if e.get("erased") else "false" for e in lines]
    assert ALICE not in as_csv.output
    assert set(EVENT_TYPES) >= {e["event_type"] for e in lines}


def test_a_reshare_does_not_keep_what_an_erased_person_wrote(event_store_url):
    """Bob reshares Alice's story (a reshare copies the original's content into Bob's own
    StoryCreated); Alice is erased. The contract: nothing exported or replayed afterwards shows
    what she wrote, so her text must not read back from Bob's reshare either."""
    from domain.engagement import StoryShare

    store = EventStore(event_store_url)
    original = Story.create(
        uuid4(), ALICE, {"story_type": "text", "text_content": ALICE_TEXT, "privacy": "public"}, Platform.VIGNETTE, NOW
    )
    store.append(original.collect_events())
    reshare = Story.reshare(uuid4(), original, BOB, FRIENDS, {}, Platform.VIGNETTE, NOW + timedelta(minutes=1))
    share = StoryShare.record(original, reshare, NOW + timedelta(minutes=1))
    store.append(reshare.collect_events() + share.collect_events())
    erase_account(store, KEY, ALICE, NOW + timedelta(hours=1))
    for reader in (store, EventStore(event_store_url)):
        [_, bobs] = [e for e in envelopes(reader) if e["event_type"] == "StoryCreated"]
        assert bobs["data"]["user_id"] == BOB and bobs["data"]["reshared_from"] is None
        text = orjson.dumps(envelopes(reader)).decode()
        assert ALICE not in text
        assert ALICE_TEXT not in text, "Alice's text survives her erasure in Bob's reshare"
    store.close()


def test_another_command_process_stops_reading_an_erased_persons_data(event_store_url):
    """Two command API processes (scale-out): A has loaded Alice's story (her key is in its
    memory), B erases her. A never reads the log (so never meets AccountErased); the erasure
    must still reach it: commands/erasure.py says "once the key is gone nothing of theirs can be
    read again". Otherwise A goes on loading her story for others' commands (a reshare copies its
    content into the resharer's own story, sealed with the resharer's key)."""
    import time

    a, b = EventStore(event_store_url), EventStore(event_store_url)
    story = Story.create(
        uuid4(), ALICE, {"story_type": "text", "text_content": ALICE_TEXT, "privacy": "public"}, Platform.VIGNETTE, NOW
    )
    a.append(story.collect_events())
    assert a.load(Story, story.id).fields["text_content"] == ALICE_TEXT
    erase_account(b, KEY, ALICE, NOW + timedelta(hours=1))
    time.sleep(3)  # longer than any belief "not erased" is kept (personal_data.ERASED_CHECK_S)
    loaded = a.load(Story, story.id)
    assert loaded.fields["text_content"] is None and loaded.owner_id is None
    a.close()
    b.close()
