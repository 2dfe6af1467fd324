"""The published envelope's pydantic models, the AsyncAPI document, the Redis entry format (one
field ``event``: the envelope's JSON) and the decoder of the format of before the upgrade."""

from __future__ import annotations

import dataclasses
import typing
from datetime import UTC, datetime
from uuid import uuid4

import orjson
import pytest

from brokers.asyncapi import asyncapi_document
from brokers.envelope_model import DATA_MODELS, ENVELOPE_MODELS, Envelope, ValidationError, parse_envelope
from brokers.publishers import (
    REDIS_EVENT_FIELD,
    RedisStreamPublisher,
    broker_kind,
    encode_envelope,
    nats_stream_name,
    nats_subject,
    redis_entry_fields,
    redis_stream_name,
)
from brokers.relay import position_key
from brokers.tail import decode_faststream_binary, decode_redis_entry, faststream_decoder, is_legacy_entry
from commands.event_store import LoggedEvent
from domain.catalogue import EVENT_TYPES

CONTRACT_TYPES = [
    "StoryCreated",
    "StoryViewed",
    "StoryReplied",
    "PollVoted",
    "QuizAnswered",
    "QuestionAnswered",
    "CountdownFollowed",
    "CountdownUnfollowed",
    "SliderAnswered",
    "LinkTapped",
    "StoryDeleted",
    "StoryExpired",
    "HighlightCreated",
    "HighlightUpdated",
    "HighlightStoriesAdded",
    "HighlightStoriesRemoved",
    "HighlightsReordered",
    "HighlightDeleted",
    "CloseFriendAdded",
    "CloseFriendRemoved",
    "UserFollowed",
    "UserUnfollowed",
]
BASE = {"originator_id", "originator_version", "occurred_at"}
SAMPLES = {str: "x1", int: 3, float: 0.5, bool: True}


def _sample(hint):
    if hint in SAMPLES:
        return SAMPLES[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return [_sample(args[0])] if args and args[0] in SAMPLES else [{"k": "v"}]
    if origin is dict:
        return {"k": "v"} if args and args[1] is str else {"k": "v", "n": 1}
    if type(None) in args:  # X | None
        return _sample(next(a for a in args if a is not type(None)))
    raise AssertionError(f"no sample for {hint!r}")


def _logged(name: str, position: int = 42) -> LoggedEvent:
    cls = EVENT_TYPES[name]
    hints = typing.get_type_hints(cls)
    fields = {f.name: _sample(hints[f.name]) for f in dataclasses.fields(cls) if f.name not in BASE}
    event = cls(
        originator_id=uuid4(), originator_version=2, occurred_at=datetime(2026, 1, 1, 12, 0, tzinfo=UTC), **fields
    )
    return LoggedEvent(position, event)


def test_every_event_type_has_models_and_the_contract_lists_are_covered():
    assert set(CONTRACT_TYPES) <= set(EVENT_TYPES)
    assert set(DATA_MODELS) == set(ENVELOPE_MODELS) == set(EVENT_TYPES)


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_data_model_fields_are_the_event_fields(name):
    expected = [f.name for f in dataclasses.fields(EVENT_TYPES[name]) if f.name not in BASE]
    assert list(DATA_MODELS[name].model_fields) == expected


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_a_published_envelope_parses_into_its_typed_model(name):
    logged = _logged(name)
    envelope = logged.envelope("vignette")
    wire = orjson.dumps(envelope)
    for raw in (orjson.loads(wire), wire):
        parsed = parse_envelope(raw)
        assert type(parsed) is ENVELOPE_MODELS[name]
        assert parsed.event_id == logged.event_id
        assert parsed.stream_id == logged.event.originator_id
        assert (parsed.position, parsed.stream_version) == (42, 2)
        assert parsed.schema_version == EVENT_TYPES[name].class_version
        assert parsed.occurred_at == logged.event.occurred_at
        assert parsed.platform == "vignette"
        assert parsed.data.model_dump() == envelope["data"]
    # and the model's JSON is the envelope again
    again = orjson.loads(parsed.model_dump_json())
    assert again.pop("erased") is False  # the wire carries it only on events with erased data
    assert {**again, "occurred_at": None} == {**orjson.loads(wire), "occurred_at": None}


def test_an_unknown_event_type_parses_as_the_generic_envelope():
    envelope = _logged("StoryViewed").envelope("entativa") | {"event_type": "StoryBoosted", "data": {"by": 2}}
    parsed = parse_envelope(envelope)
    assert type(parsed) is Envelope and parsed.data == {"by": 2}
    assert type(parse_envelope(orjson.dumps(envelope))) is Envelope


def test_extra_fields_are_ignored_so_old_consumers_read_new_shapes():
    envelope = _logged("StoryViewed").envelope("vignette")
    envelope["data"]["added_later"] = 1
    envelope["trace"] = "t"
    assert parse_envelope(envelope).data.view_number == 3


@pytest.mark.parametrize(
    "change",
    [
        {"data": {"story_id": "s", "owner_id": "o", "viewer_id": "v"}},  # view_number missing
        {"data": {"story_id": "s", "owner_id": "o", "viewer_id": "v", "view_number": "many"}},
        {"event_id": "not-a-uuid"},
        {"position": 0},
        {"platform": "myspace"},
    ],
)
def test_malformed_envelopes_are_rejected(change):
    with pytest.raises(ValidationError):
        parse_envelope(_logged("StoryViewed").envelope("vignette") | change)


def test_asyncapi_document_describes_every_event_on_both_brokers():
    document = asyncapi_document(prefix="shop")
    assert document["asyncapi"] == "3.0.0"
    channels = document["channels"]
    schemas = document["components"]["schemas"]
    for name in EVENT_TYPES:
        redis_channel = channels[f"redis:shop.events:{name}"]
        assert redis_channel["address"] == "shop.events"
        assert redis_channel["bindings"]["redis"]["method"] == "xadd"
        nats_channel = channels[f"nats:shop.events.{name}"]
        assert nats_channel["address"] == nats_subject("shop", name) == f"shop.events.{name}"
        assert f"{name}Envelope" in schemas and f"{name}Data" in schemas
        assert schemas[f"{name}Envelope"]["properties"]["event_type"]["const"] == name
    assert len(document["operations"]) == 2 * len(EVENT_TYPES)
    assert all(op["action"] == "send" for op in document["operations"].values())


def test_asyncapi_document_describes_the_plain_json_wire_format():
    document = asyncapi_document(prefix="shop")
    assert "`event`" in document["info"]["description"]
    messages = document["components"]["messages"]
    assert len(messages) == 2 * len(EVENT_TYPES)
    for name in EVENT_TYPES:
        for key in (f"redis:shop.events:{name}:Message", f"nats:shop.events.{name}:Message"):
            message = messages[key]
            assert message["payload"] == {"$ref": f"#/components/schemas/{name}Envelope"}
            assert message["contentType"] == "application/json"
            # Redis entries carry no headers any more: the id to deduplicate on is in the JSON.
            assert message["correlationId"]["location"] == "$message.payload#/event_id"
        redis_message = messages[f"redis:shop.events:{name}:Message"]["description"]
        assert "XADD shop.events * event " in redis_message and name in redis_message
        assert "__data__" not in redis_message
        assert "Nats-Msg-Id = event_id" in messages[f"nats:shop.events.{name}:Message"]["description"]


def test_names_follow_the_contract():
    assert redis_stream_name() == "stories.events"
    assert nats_stream_name() == "STORIES" and nats_stream_name("my.app") == "MY_APP"
    assert nats_subject("stories", "StoryViewed") == "stories.events.StoryViewed"
    assert broker_kind("redis://h:6379/0") == "redis" and broker_kind("nats://h:4222") == "nats"
    assert position_key("stories:", "nats") == "stories:relay:position:nats"
    assert position_key("stories", "redis") == "stories:relay:position:redis"
    with pytest.raises(ValueError):
        broker_kind("kafka://h:9092")


# -- the Redis entry: one field, ``event``, the envelope's JSON ------------------------------------


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_a_redis_entry_is_one_field_event_holding_the_envelope_json(name):
    envelope = _logged(name).envelope("vignette")
    fields = redis_entry_fields(envelope)
    assert REDIS_EVENT_FIELD == "event" and list(fields) == ["event"]
    # As any client reads it back (redis-py without decode_responses: bytes keys and values).
    wire = {key.encode(): value for key, value in fields.items()}
    assert set(wire) == {b"event"}
    assert wire[b"event"] == encode_envelope(envelope)
    text = wire[b"event"].decode("utf-8")  # UTF-8 JSON, nothing framework-specific around it
    assert text.startswith("{") and text.endswith("}")
    import json

    assert json.loads(text) == orjson.loads(orjson.dumps(envelope))
    assert decode_redis_entry(wire) == json.loads(text)
    assert decode_redis_entry({"event": text}) == json.loads(text)  # decode_responses=True clients
    assert not is_legacy_entry(wire)
    parsed = parse_envelope(wire[b"event"])
    assert type(parsed) is ENVELOPE_MODELS[name] and str(parsed.event_id) == envelope["event_id"]


def test_non_ascii_text_is_utf8_json():
    envelope = _logged("StoryReplied").envelope("vignette")
    envelope["data"]["text"] = "Ça va? 👋"
    raw = redis_entry_fields(envelope)["event"]
    assert "Ça va? 👋".encode() in raw  # not \u-escaped: plain UTF-8
    assert decode_redis_entry({b"event": raw})["data"]["text"] == "Ça va? 👋"


class _FakePipeline:
    def __init__(self, calls: list) -> None:
        self.calls = calls

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

    def xadd(self, name, fields, **options):
        self.calls.append(("xadd", name, fields, options))
        return self

    def xtrim(self, name, **options):
        self.calls.append(("xtrim", name, options))
        return self

    async def execute(self):
        self.calls.append(("exec",))
        return [f"{i}-0".encode() for i, call in enumerate(self.calls) if call[0] == "xadd"] + [0]


class _FakeRedis:
    def __init__(self) -> None:
        self.calls: list = []
        self.transaction: bool | None = None

    def pipeline(self, transaction: bool = True):
        self.transaction = transaction
        return _FakePipeline(self.calls)


@pytest.mark.parametrize("max_len, expected_maxlen", [(0, None), (5000, 5000)])
async def test_the_publisher_xadds_exactly_the_event_field_in_one_transaction(max_len, expected_maxlen):
    envelopes = [_logged("StoryViewed", position=p).envelope("vignette") for p in (3, 5, 9)]
    publisher = RedisStreamPublisher("redis://127.0.0.1:1/0", "shop", max_len=max_len, retention=3600)
    publisher._client = fake = _FakeRedis()
    await publisher.publish(envelopes)
    assert fake.transaction is True  # MULTI/EXEC: the batch whole or not at all
    xadds = [c for c in fake.calls if c[0] == "xadd"]
    assert [(c[1], c[2]) for c in xadds] == [("shop.events", {"event": orjson.dumps(e)}) for e in envelopes]
    assert all(c[3] == {"maxlen": expected_maxlen, "approximate": True} for c in xadds)
    # The same transaction ends with the trim by age, then EXEC.
    assert fake.calls[-2][0] == "xtrim" and fake.calls[-2][1] == "shop.events"
    assert fake.calls[-2][2]["approximate"] is True and int(fake.calls[-2][2]["minid"]) > 0
    assert fake.calls[-1] == ("exec",)


# -- the format of before the upgrade (field ``__data__``, FastStream's binary envelope) -----------


def test_entries_that_are_not_events_are_refused():
    with pytest.raises(ValueError, match="'event'"):
        decode_redis_entry({})  # a pending entry trimmed away comes back from XREADGROUP without fields


async def test_a_faststream_subscriber_gets_the_envelope_with_the_decoder():
    from faststream.redis.parser.binary import BinaryMessageFormatV1

    envelope = _logged("PollVoted").envelope("vignette")
    legacy = await BinaryMessageFormatV1.encode(
        message=envelope,
        reply_to=None,
        headers={"event_type": "PollVoted"},
        correlation_id=envelope["event_id"],
    )
    expected = orjson.loads(orjson.dumps(envelope))
    for fields in ({b"event": encode_envelope(envelope)}, {b"__data__": legacy}):
        message = type("Message", (), {"raw_message": {"type": "stream", "data": fields}})()
        assert await faststream_decoder(message) == expected


async def test_the_stdlib_decoder_reads_faststreams_binary_envelope():
    from faststream.redis.parser.binary import BinaryMessageFormatV1

    envelope = _logged("StoryCreated").envelope("vignette")
    raw = await BinaryMessageFormatV1.encode(
        message=envelope,
        reply_to=None,
        headers={"event_type": "StoryCreated"},
        correlation_id=envelope["event_id"],
    )
    body, headers = decode_faststream_binary(raw)
    fs_body, fs_headers = BinaryMessageFormatV1.parse(raw)
    assert body == fs_body and headers == fs_headers
    assert headers["event_type"] == "StoryCreated" and headers["correlation_id"] == envelope["event_id"]
    assert headers["content-type"] == "application/json"
    assert decode_redis_entry({b"__data__": raw}) == orjson.loads(orjson.dumps(envelope))
    assert decode_redis_entry({"__data__": raw}) == orjson.loads(orjson.dumps(envelope))
    assert is_legacy_entry({b"__data__": raw}) and not is_legacy_entry({b"event": b"{}"})
    assert decode_faststream_binary(b'{"plain": 1}') == (b'{"plain": 1}', {})
