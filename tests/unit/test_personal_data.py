"""Personal data sealed per person (commands/personal_data.py), on a key store in a SQLite file.

Every event type of the catalogue and every private record goes through the log's own mapper
(``PersonalDataMapper``): what is stored holds none of the personal values in clear, what is
read back is the event exactly; after one person's erasure exactly their fields read None.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commands.event_store import EventStore
from commands.idempotency import IdempotentRequestRecorded
from commands.personal_data import MARK, KeyStore, KeyStoreError, PersonalData, master_key_id, pseudonym
from domain.aggregate import SELF, DomainEvent
from domain.catalogue import EVENT_TYPES
from domain.ids import stream_id
from domain.limits import LiveStoriesRecorded, TallyRecorded
from domain.stickers import AnsweredStickersRecorded
from domain.stories import StoryCreated
from tests.erasure import as_erased

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
PRIVATE_RECORDS = (TallyRecorded, LiveStoriesRecorded, AnsweredStickersRecorded, IdempotentRequestRecorded)
ALL_TYPES = sorted([*EVENT_TYPES.values(), *PRIVATE_RECORDS], key=lambda cls: cls.__name__)
# Fields whose values are people's ids (each its own person in the samples).
ID_FIELDS = ("user_id", "owner_id", "viewer_id", "follower_id", "followee_id", "friend_id", "muted_id")


def b64key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def make_store(tmp_path, name: str = "events.sqlite3", **kwargs) -> EventStore:
    return EventStore(f"sqlite:///{tmp_path / name}", **kwargs)


# -- realistic events of every type --------------------------------------------------------------
#
# Person ids all start with "usr." and texts with "txt:": neither '.' nor ':' is in the url-safe
# base64 alphabet of a sealed value, so any occurrence of either marker in a stored record is a
# value in clear (and neither occurs in topics, field names, uuids or timestamps).


@dataclasses.dataclass
class People:
    ids: dict[str, str]  # field name -> person id
    viewers: list[str]  # allowed_viewer_ids
    hidden: list[str]  # hidden_from_ids
    original_owner: str  # reshared_from.user_id
    text: str


def people_strategy() -> st.SearchStrategy[People]:
    ident = st.from_regex(r"[A-Za-z0-9_\-]{3,20}", fullmatch=True)
    text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=200)
    return st.builds(
        lambda ids, viewers, hidden, orig, t: People(
            ids={f: f"usr.{f[:3]}.{i}" for f, i in zip(ID_FIELDS, ids)},
            viewers=sorted({f"usr.v.{v}" for v in viewers}),
            hidden=sorted({f"usr.h.{h}" for h in hidden}),
            original_owner=f"usr.orig.{orig}",
            text=f"txt:{t}",
        ),
        st.lists(ident, min_size=len(ID_FIELDS), max_size=len(ID_FIELDS)),
        st.lists(ident, min_size=1, max_size=4),
        st.lists(ident, max_size=3),
        ident,
        text,
    )


DEFAULT_PEOPLE = People(
    ids={f: f"usr.{f}" for f in ID_FIELDS},
    viewers=["usr.amy", "usr.bert", "usr.cleo"],
    hidden=["usr.hank"],
    original_owner="usr.orig-owner",
    text="txt:Sunset at the pier 🌅 — see you «there»",
)


def sample_values(people: People) -> dict[str, Any]:
    """A realistic value for every field name of every event type."""
    text = people.text
    return {
        **people.ids,
        "story_id": str(uuid4()),
        "reshare_id": str(uuid4()),
        "highlight_id": str(uuid4()),
        "story_type": "image",
        "media_id": f"txt:media-{text}",
        "media_url": f"https://cdn.example/txt:{text}.jpg",
        "thumbnail_url": f"https://cdn.example/txt:thumb-{text}.jpg",
        "text_content": text,
        "background_color": "#112233",
        "background_gradient": ["#000000", "#FFFFFF"],
        "duration": 5.0,
        "stickers": [
            {
                "sticker_type": "question",
                "x": 0.5,
                "y": 0.5,
                "width": 0.4,
                "height": 0.2,
                "rotation": 0,
                "question": {"question": f"{text}?"},
            },
            {
                "sticker_type": "mention",
                "x": 0.1,
                "y": 0.1,
                "width": 0.2,
                "height": 0.1,
                "rotation": 0,
                "mention": {"user_id": people.viewers[0]},
            },
        ],
        "privacy": "custom",
        "allowed_viewer_ids": list(people.viewers),
        "hidden_from_ids": list(people.hidden),
        "allow_replies": "everyone",
        "expires_at": (NOW + timedelta(hours=24)).isoformat(),
        "allow_sharing": True,
        "reshared_from": {"story_id": str(uuid4()), "user_id": people.original_owner},
        "changed": ["text_content", "stickers.0"],
        "expired_at": (NOW + timedelta(hours=24)).isoformat(),
        "view_number": 3,
        "life_hour": 2,
        "action": "tap_forward",
        "reply_number": 1,
        "text": f"{text} (reply)",
        "sticker_index": 0,
        "option_index": 1,
        "correct": False,
        "correct_answer_index": 0,
        "answer_number": 2,
        "value": 0.75,
        "tap_number": 1,
        "title": f"{text} title",
        "description": f"{text} description",
        "cover": {"media_url": f"https://cdn.example/txt:cover-{text}.jpg", "emoji": "🌅"},
        "story_ids": [str(uuid4()), str(uuid4())],
        "is_pinned": True,
        "is_archived": False,
        "changes": {"title": f"{text} new title", "description": f"{text} new"},
        "highlight_ids": [str(uuid4()), str(uuid4())],
        "pseudonym": hashlib.sha256(b"someone").hexdigest(),
        "kind": "follows",
        "count": 7,
        "live": {str(uuid4()): (NOW + timedelta(hours=6)).isoformat()},
        "answered": [0, 2],
        "revision": 1,
        "key": "retry-7f3a",
        "fingerprint": hashlib.sha256(b"POST").hexdigest(),
        "status": 201,
        "body": {"story_id": str(uuid4()), "text_content": text},
    }


def make_event(cls: type[DomainEvent], people: People = DEFAULT_PEOPLE, stream: UUID | None = None) -> DomainEvent:
    values = sample_values(people)
    fields = {
        f.name: values[f.name]
        for f in dataclasses.fields(cls)
        if f.name not in ("originator_id", "originator_version", "occurred_at")
    }
    return cls(
        originator_id=stream or stream_id("test", cls.__name__, people.ids["user_id"]),
        originator_version=1,
        occurred_at=NOW,
        **fields,
    )


def personal_values(event: DomainEvent) -> list[str]:
    """Every personal string in the event (people's ids, what they wrote), leaves of nested values."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for field in type(event).PERSONAL:
        walk(getattr(event, field))
    return found


def state_of(event: DomainEvent) -> dict[str, Any]:
    """The event's stored fields, but its stream: a reader gets the stream's stored (keyed) id."""
    return {k: v for k, v in vars(event).items() if not k.startswith("_") and k != "originator_id"}


def test_the_samples_cover_every_field_and_mark_every_personal_value():
    """Guards the test itself: each type builds, and each personal field's value carries a marker
    (so "no marker in the stored bytes" means "nothing personal in clear")."""
    for cls in ALL_TYPES:
        event = make_event(cls)
        for field in cls.PERSONAL:
            leaves = _leaves(getattr(event, field))
            assert any(v.startswith(("usr.", "txt:")) or "txt:" in v for v in leaves), (cls.__name__, field)


def _leaves(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return []


# -- round trip ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = make_store(tmp_path_factory.mktemp("pd"))
    store.head()
    yield store
    store.close()


def seal_and_open(store: EventStore, event: DomainEvent) -> tuple[bytes, DomainEvent]:
    mapper = store._mapper
    stored = mapper.to_stored_event(event)
    return bytes(stored.state), mapper.to_domain_event(stored)


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda cls: cls.__name__)
def test_every_type_round_trips_with_nothing_personal_in_clear(store, cls):
    event = make_event(cls)
    stored, back = seal_and_open(store, event)
    assert b"usr." not in stored and b"txt:" not in stored, stored
    for value in personal_values(event):
        if value.startswith(("usr.", "txt:")):
            assert value.encode() not in stored
    assert type(back) is cls
    assert state_of(back) == state_of(event)
    assert back.originator_id == store.keys.physical_stream(event.originator_id)
    assert back.erased_fields == frozenset() and not back.erased
    # every personal field that holds a value is sealed (a list of ids: each entry on its own)
    document = orjson.loads(stored)
    for field, owner in cls.PERSONAL.items():
        value = document.get(field)
        if owner == SELF and isinstance(value, list):
            assert value and all(isinstance(v, dict) and MARK in v for v in value), (field, value)
        else:
            assert isinstance(value, dict) and set(value) == {MARK, "c"}, (field, value)


@settings(max_examples=40)
@given(people=people_strategy(), cls=st.sampled_from(ALL_TYPES))
def test_any_people_and_text_round_trip_sealed(store, people, cls):
    event = make_event(cls, people)
    stored, back = seal_and_open(store, event)
    assert b"usr." not in stored and b"txt:" not in stored
    assert state_of(back) == state_of(event)


def test_sealing_the_same_event_twice_stores_different_bytes(store):
    """A fresh nonce per value: equal values do not give equal ciphertexts (no linking by equality)."""
    event = make_event(StoryCreated)
    first, _ = seal_and_open(store, event)
    second, _ = seal_and_open(store, event)
    assert first != second


def test_a_sealed_value_is_bound_to_its_field(store):
    """The field's name is the cipher's associated data: moving a ciphertext to another field
    does not decrypt there (AES-GCM refuses it, and it reads as gone, never as the other value)."""
    mapper = store._mapper
    event = make_event(StoryCreated)
    document = orjson.loads(mapper.to_stored_event(event).state)
    document["media_url"] = document["text_content"]
    tampered = dataclasses.replace(mapper.to_stored_event(event), state=orjson.dumps(document))
    back = mapper.to_domain_event(tampered)
    assert back.media_url is None and back.text_content == event.text_content


# -- erasure of one person -----------------------------------------------------------------------


def everyone_in(event: DomainEvent) -> set[str]:
    return set(PersonalData.people(type(event), state_of(event)))


@pytest.mark.parametrize("cls", [c for c in ALL_TYPES if c.PERSONAL], ids=lambda cls: cls.__name__)
def test_erasing_one_person_nulls_exactly_their_fields(tmp_path, cls):
    """For each person in the event, in a log of its own: erase them, and only what is theirs
    reads None (an id list loses only their entries); everyone else's reads as written."""
    event = make_event(cls)
    for n, person in enumerate(sorted(everyone_in(event))):
        store = make_store(tmp_path, f"log-{n}.sqlite3")
        stored = store._mapper.to_stored_event(event)
        store.keys.erase(person, pseudonym(b"k", person), NOW)
        back = store._mapper.to_domain_event(stored)
        expected = as_erased(event, person)
        assert back.erased_fields == expected.erased_fields != frozenset(), person
        assert state_of(back) == state_of(expected), person
        for field in back.erased_fields:
            value = getattr(back, field)
            if isinstance(value, list):
                assert value == [None if v == person else v for v in getattr(event, field)]
            else:
                assert value is None
        untouched = {f: v for f, v in state_of(event).items() if f not in back.erased_fields}
        assert {f: getattr(back, f) for f in untouched} == untouched
        # another process on the same log (nothing cached) reads the same
        other = make_store(tmp_path, f"log-{n}.sqlite3")
        again = other._mapper.to_domain_event(stored)
        assert state_of(again) == state_of(back) and again.erased_fields == back.erased_fields
        other.close()
        store.close()


def test_story_created_fields_by_owner(tmp_path):
    """The table for StoryCreated spelled out: the viewer lists per entry, and a reshare's content
    and ``reshared_from`` under the original author's key (what they wrote), its ``user_id`` under
    the resharer's."""
    event = make_event(StoryCreated)
    author, viewer, original = "usr.user_id", "usr.bert", "usr.orig-owner"
    store = make_store(tmp_path)
    stored = store._mapper.to_stored_event(event)
    document = orjson.loads(stored.state)
    assert document["reshared_from"][MARK] == document["text_content"][MARK] == store.keys.kid(original)
    assert document["user_id"][MARK] == store.keys.kid(author)
    assert [v[MARK] for v in document["allowed_viewer_ids"]] == [store.keys.kid(v) for v in event.allowed_viewer_ids]

    store.keys.erase(viewer, pseudonym(b"k", viewer), NOW)
    back = store._mapper.to_domain_event(stored)
    assert back.erased_fields == {"allowed_viewer_ids"}
    assert back.allowed_viewer_ids == ["usr.amy", None, "usr.cleo"]
    assert back.text_content == event.text_content and back.reshared_from == event.reshared_from

    store.keys.erase(original, pseudonym(b"k", original), NOW)
    back = store._mapper.to_domain_event(stored)
    assert back.erased_fields == {
        "allowed_viewer_ids",
        "reshared_from",
        "media_id",
        "media_url",
        "thumbnail_url",
        "text_content",
    }
    assert back.reshared_from is None and back.text_content is None and back.user_id == author

    store.keys.erase(author, pseudonym(b"k", author), NOW)
    back = store._mapper.to_domain_event(stored)
    assert back.erased_fields == {
        "allowed_viewer_ids",
        "reshared_from",
        "user_id",
        "media_id",
        "media_url",
        "thumbnail_url",
        "text_content",
        "stickers",
    }
    for field in ("user_id", "media_id", "media_url", "thumbnail_url", "text_content", "stickers", "reshared_from"):
        assert getattr(back, field) is None
    assert back.hidden_from_ids == event.hidden_from_ids  # "usr.hank" is still there
    assert back.story_type == "image" and back.privacy == "custom" and back.duration == 5.0
    store.close()


def test_an_erased_persons_event_envelope_says_erased(tmp_path):
    from commands.event_store import LoggedEvent

    event = make_event(EVENT_TYPES["StoryReplied"])
    store = make_store(tmp_path)
    stored = store._mapper.to_stored_event(event)
    assert "erased" not in LoggedEvent(1, store._mapper.to_domain_event(stored)).envelope("vignette")
    store.keys.erase("usr.user_id", pseudonym(b"k", "usr.user_id"), NOW)
    envelope = LoggedEvent(1, store._mapper.to_domain_event(stored)).envelope("vignette")
    assert envelope["erased"] is True
    assert envelope["data"]["user_id"] is None and envelope["data"]["text"] is None
    assert envelope["data"]["owner_id"] == "usr.owner_id"
    assert b"usr.user_id" not in orjson.dumps(envelope) and b"txt:" not in orjson.dumps(envelope)
    store.close()


def test_a_value_sealed_after_erasure_can_never_be_read(tmp_path):
    """(a) The erasing process itself seals later values with a key nobody keeps. (b) Another
    process that still had the key cached seals with the destroyed key: no process started after
    can read it, and the process itself stops reading it once it meets the AccountErased."""
    url = f"sqlite:///{tmp_path / 'events.sqlite3'}"
    victim = "usr.victim"
    reply = EVENT_TYPES["StoryReplied"]
    people = dataclasses.replace(DEFAULT_PEOPLE, ids={**DEFAULT_PEOPLE.ids, "user_id": victim})

    cached = EventStore(url)  # (b): has the key in memory
    cached._mapper.to_stored_event(make_event(reply, people))
    eraser = EventStore(url)
    eraser.keys.erase(victim, pseudonym(b"k", victim), NOW)

    # (a)
    late = eraser._mapper.to_stored_event(make_event(reply, people))
    back = eraser._mapper.to_domain_event(late)
    assert back.user_id is None and back.text is None and back.erased_fields == {"user_id", "text"}
    assert back.owner_id == "usr.owner_id"
    assert victim.encode() not in late.state and b"txt:" not in late.state

    # (b)
    stale = cached._mapper.to_stored_event(make_event(reply, people))
    assert victim.encode() not in stale.state and b"txt:" not in stale.state
    fresh = EventStore(url)
    for stored in (late, stale):
        back = fresh._mapper.to_domain_event(stored)
        assert back.user_id is None and back.text is None and back.erased_fields == {"user_id", "text"}
    cached.keys.erased_user(pseudonym(b"k", victim))  # what reading the AccountErased does
    back = cached._mapper.to_domain_event(stale)
    assert back.user_id is None and back.text is None
    for s in (cached, eraser, fresh):
        s.close()


def test_erasure_is_idempotent_and_keeps_the_first_time(tmp_path):
    store = make_store(tmp_path)
    name = pseudonym(b"k", "usr.a")
    store.keys.ensure(["usr.a"])
    store.keys.erase("usr.a", name, NOW)
    store.keys.erase("usr.a", name, NOW + timedelta(hours=1))
    assert store.keys.erased_since("") == [(name, NOW.isoformat())]
    assert store.keys.unannounced() == [name]
    store.keys.mark_announced(name, NOW)
    assert store.keys.unannounced() == []
    assert store.keys.for_reading(store.keys.kid("usr.a")) is None
    assert store.keys.erased_user(name) == "usr.a"
    # an account erased before it ever had a key (nothing written) is erased all the same
    store.keys.erase("usr.never", pseudonym(b"k", "usr.never"), NOW)
    again = make_store(tmp_path)
    assert [name for name, _ in again.keys.erased_since("")] == [name, pseudonym(b"k", "usr.never")]
    again.close()
    store.close()


def test_the_erased_id_is_dropped_after_the_purge_window(tmp_path):
    store = make_store(tmp_path, purge_window=timedelta(days=7))
    name = pseudonym(b"k", "usr.a")
    store.keys.erase("usr.a", name, NOW)
    store.keys.scrub(NOW + timedelta(days=6))
    assert store.keys.erased_user(name) == "usr.a"
    store.keys.scrub(NOW + timedelta(days=8))
    assert store.keys.erased_user(name) is None
    # the pseudonym stays: the erasure is still known (tokens refused, unannounced() works)
    assert store.keys.erased_since("") == [(name, NOW.isoformat())]
    # a later erasure scrubs the older ones too
    store.keys.erase("usr.b", pseudonym(b"k", "usr.b"), NOW)
    store.keys.erase("usr.c", pseudonym(b"k", "usr.c"), NOW + timedelta(days=9))
    assert store.keys.erased_user(pseudonym(b"k", "usr.b")) is None
    assert store.keys.erased_user(pseudonym(b"k", "usr.c")) == "usr.c"
    store.close()


def test_scrub_counts_the_ids_it_drops(tmp_path):
    """``scrub`` says how many ids it dropped (commands/personal_data.py ``KeyStore.scrub``)."""
    store = make_store(tmp_path, purge_window=timedelta(days=7))
    store.keys.erase("usr.a", pseudonym(b"k", "usr.a"), NOW)
    assert store.keys.scrub(NOW + timedelta(days=8)) == 1
    store.close()


# -- stream ids ----------------------------------------------------------------------------------


def test_streams_derived_from_user_ids_are_keyed_random_ones_kept(tmp_path):
    store = make_store(tmp_path)
    keys = store.keys
    random_id, derived = uuid4(), stream_id("follow", "usr.a", "usr.b")
    assert keys.physical_stream(random_id) == random_id
    stored = keys.physical_stream(derived)
    assert stored != derived and stored.version == 8 and stored.variant == derived.variant
    assert keys.physical_stream(derived) == stored  # deterministic
    assert keys.physical_stream(stream_id("follow", "usr.b", "usr.a")) != stored
    # another log keys the same stream elsewhere (its own stream key)
    assert make_store(tmp_path, "other.sqlite3").keys.physical_stream(derived) != stored
    # and another process on this log, the same place
    assert make_store(tmp_path).keys.physical_stream(derived) == stored
    store.close()


def bare_datastore(path):
    """A recorder's datastore on ``path``, with no key store opened on it yet."""
    from eventsourcing.persistence import InfrastructureFactory
    from eventsourcing.utils import Environment

    from commands.event_store import persistence_env

    factory = InfrastructureFactory.construct(Environment("stories", persistence_env(f"sqlite:///{path}")))
    return factory, factory.application_recorder()


def test_a_legacy_log_keeps_plain_stream_ids_for_good(tmp_path):
    factory, recorder = bare_datastore(tmp_path / "legacy.sqlite3")
    legacy = KeyStore(recorder.datastore, legacy_log=True)
    derived, random = stream_id("follow", "usr.a", "usr.b"), uuid4()
    assert legacy.physical_stream(derived) == derived and legacy.physical_stream(random) == random
    # the first opening decided: later openings keep it, whatever they are told
    assert KeyStore(recorder.datastore, legacy_log=False).physical_stream(derived) == derived
    assert EventStore(f"sqlite:///{tmp_path / 'legacy.sqlite3'}").keys.physical_stream(derived) == derived
    factory.close()
    factory, recorder = bare_datastore(tmp_path / "keyed.sqlite3")
    assert KeyStore(recorder.datastore, legacy_log=False).physical_stream(derived) != derived
    assert KeyStore(recorder.datastore, legacy_log=True).physical_stream(derived) != derived
    assert KeyStore(recorder.datastore, legacy_log=True).physical_stream(random) == random
    factory.close()


def test_an_event_store_opened_on_an_old_log_is_legacy(tmp_path):
    """A log that held events before the key store existed: found by the events in it."""
    from eventsourcing.persistence import StoredEvent

    from domain.social import Follow

    factory, recorder = bare_datastore(tmp_path / "old.sqlite3")
    edge = stream_id("follow", "usr.a", "usr.b")
    recorder.insert_events(
        [
            StoredEvent(
                edge,
                1,
                "domain.social:UserFollowed",
                orjson.dumps(
                    {
                        "occurred_at": {"_type_": "datetime_iso", "_data_": NOW.isoformat()},
                        "follower_id": "usr.a",
                        "followee_id": "usr.b",
                    }
                ),
            )
        ]
    )
    factory.close()
    store = EventStore(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    assert store.keys.meta.stream_key is None
    assert store.keys.physical_stream(edge) == edge
    follow = store.load(Follow, edge)
    assert follow.active and follow.follower_id == "usr.a"
    store.close()


# -- master keys ---------------------------------------------------------------------------------


def test_another_master_key_is_refused(tmp_path):
    k1, k2 = os.urandom(32), os.urandom(32)
    store = make_store(tmp_path, master_keys=b64key(k1))
    store.keys.ensure(["usr.a"])
    stored = store._mapper.to_stored_event(make_event(EVENT_TYPES["UserFollowed"]))
    datastore = store.recorder.datastore
    with pytest.raises(KeyStoreError):
        KeyStore(datastore, [k2])
    # with both, it opens and reads
    both = KeyStore(datastore, [k2, k1])
    assert PersonalData(both).open(EVENT_TYPES["UserFollowed"], orjson.loads(stored.state)) == frozenset()
    store.close()


def test_a_person_key_wrapped_with_an_unknown_master_key_is_refused(tmp_path):
    """The log's own secrets rewrapped but one person's key not: reading that person refuses
    rather than reading as erased."""
    k1, k2 = os.urandom(32), os.urandom(32)
    store = make_store(tmp_path, master_keys=b64key(k1))
    stored = store._mapper.to_stored_event(make_event(EVENT_TYPES["UserFollowed"]))
    ks = store.keys
    with ks.sql.transaction(commit=True) as cur:  # only the meta table rewrapped with k2
        for name, secret in (("kid_key", ks.meta.kid_key), ("stream_key", ks.meta.stream_key)):
            from commands.personal_data import _b64, _wrap

            cur.execute(
                f"UPDATE {ks.sql.meta} SET value = ? WHERE name = ?",
                (f"{master_key_id(k2)}:{_b64(_wrap(k2, secret, name.encode()))}", name),
            )
    only_k2 = KeyStore(store.recorder.datastore, [k2])
    with pytest.raises(KeyStoreError):
        PersonalData(only_k2).open(EVENT_TYPES["UserFollowed"], orjson.loads(stored.state))
    store.close()


def test_rotate_rewraps_so_the_old_master_key_can_go(tmp_path):
    k1, k2 = os.urandom(32), os.urandom(32)
    url = f"sqlite:///{tmp_path / 'events.sqlite3'}"
    first = EventStore(url, master_keys=b64key(k1))
    event = make_event(StoryCreated)
    stored = first._mapper.to_stored_event(event)
    stream = first.keys.physical_stream(stream_id("follow", "usr.a", "usr.b"))
    first.keys.erase("usr.hank", pseudonym(b"k", "usr.hank"), NOW)  # an erased one, id kept for the purge
    first.close()

    rotating = EventStore(url, master_keys=f"{b64key(k2)},{b64key(k1)}")
    people = len(everyone_in(event))
    assert rotating.keys.rotate() == people  # hank was among them, erased: rewrapped too
    assert rotating.keys.master_ids_in_use() == {master_key_id(k2)}
    assert rotating.keys.rotate() == 0
    rotating.close()

    later = EventStore(url, master_keys=b64key(k2))  # k1 dropped
    back = later._mapper.to_domain_event(stored)
    assert back.erased_fields == {"hidden_from_ids"} and back.text_content == event.text_content
    assert later.keys.physical_stream(stream_id("follow", "usr.a", "usr.b")) == stream
    assert later.keys.erased_user(pseudonym(b"k", "usr.hank")) == "usr.hank"
    later.close()
    with pytest.raises(KeyStoreError):
        EventStore(url, master_keys=b64key(k1))


def test_the_embedded_master_key_then_a_configured_one(tmp_path):
    """A log first used without STORIES_MASTER_KEYS keeps working when one is set, and after
    ``rotate`` every key is wrapped with the configured one."""
    k1 = os.urandom(32)
    url = f"sqlite:///{tmp_path / 'events.sqlite3'}"
    first = EventStore(url)
    event = make_event(EVENT_TYPES["StoryReplied"])
    stored = first._mapper.to_stored_event(event)
    first.close()
    configured = EventStore(url, master_keys=b64key(k1))
    assert configured._mapper.to_domain_event(stored).text == event.text
    configured.keys.rotate()
    assert configured.keys.master_ids_in_use() == {master_key_id(k1)}
    assert EventStore(url, master_keys=b64key(k1))._mapper.to_domain_event(stored).text == event.text
    configured.close()


def test_master_keys_setting_is_checked():
    from commands.personal_data import parse_master_keys

    key = os.urandom(32)
    assert parse_master_keys(f" {b64key(key)} , ") == [key]
    assert parse_master_keys(base64.urlsafe_b64encode(key).decode().rstrip("=")) == [key]
    assert parse_master_keys(None) == []
    with pytest.raises(KeyStoreError):
        parse_master_keys(b64key(os.urandom(16)))


# -- the pseudonym -------------------------------------------------------------------------------


def test_pseudonym_is_the_contracts_hmac_sha256():
    # RFC 4231, test case 2
    assert (
        pseudonym(b"Jefe", "what do ya want for nothing?")
        == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    assert pseudonym(b"k", "alice") == hmac.new(b"k", b"alice", hashlib.sha256).hexdigest()
    assert pseudonym(b"k", "alice") != pseudonym(b"other", "alice")


def test_key_ids_are_keyed_not_the_id(tmp_path):
    store = make_store(tmp_path)
    kid = store.keys.kid("usr.alice")
    assert "alice" not in kid and kid == store.keys.kid("usr.alice")
    assert kid != make_store(tmp_path, "other.sqlite3").keys.kid("usr.alice")
    store.close()
