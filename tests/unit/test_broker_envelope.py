"""The published envelope's pydantic models, the AsyncAPI document, and the Redis envelope decoder."""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime, timezone
from uuid import uuid4

import orjson
import pytest

from brokers.asyncapi import asyncapi_document
from brokers.envelope_model import DATA_MODELS, ENVELOPE_MODELS, Envelope, ValidationError, parse_envelope
from brokers.publishers import broker_kind, nats_stream_name, nats_subject, redis_stream_name
from brokers.relay import position_key
from brokers.tail import decode_faststream_binary, decode_redis_entry
from commands.event_store import LoggedEvent
from domain.catalogue import EVENT_TYPES

CONTRACT_TYPES = """StoryCreated StoryViewed StoryReplied PollVoted QuizAnswered QuestionAnswered CountdownFollowed
CountdownUnfollowed SliderAnswered LinkTapped StoryDeleted StoryExpired HighlightCreated HighlightUpdated
HighlightStoriesAdded HighlightStoriesRemoved HighlightsReordered HighlightDeleted CloseFriendAdded
CloseFriendRemoved UserFollowed UserUnfollowed""".split()
BASE = {"originator_id", "originator_version", "occurred_at"}
SAMPLES = {str: "x1", int: 3, float: 0.5, bool: True}


def _sample(hint):
    if hint in SAMPLES:
        return SAMPLES[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return [_sample(args[0])] if args and args[0] in SAMPLES else [{"k": "v"}]
    if origin is dict:
        return {"k": "v", "n": 1}
    if type(None) in args:  # X | None
        return _sample(next(a for a in args if a is not type(None)))
    raise AssertionError(f"no sample for {hint!r}")


def _logged(name: str, position: int = 42) -> LoggedEvent:
    cls = EVENT_TYPES[name]
    hints = typing.get_type_hints(cls)
    fields = {f.name: _sample(hints[f.name]) for f in dataclasses.fields(cls) if f.name not in BASE}
    event = cls(originator_id=uuid4(), originator_version=2,
                occurred_at=datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc), **fields)
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


@pytest.mark.parametrize("change", [
    {"data": {"story_id": "s", "owner_id": "o", "viewer_id": "v"}},  # view_number missing
    {"data": {"story_id": "s", "owner_id": "o", "viewer_id": "v", "view_number": "many"}},
    {"event_id": "not-a-uuid"},
    {"position": 0},
    {"platform": "myspace"},
])
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


def test_names_follow_the_contract():
    assert redis_stream_name() == "stories.events"
    assert nats_stream_name() == "STORIES" and nats_stream_name("my.app") == "MY_APP"
    assert nats_subject("stories", "StoryViewed") == "stories.events.StoryViewed"
    assert broker_kind("redis://h:6379/0") == "redis" and broker_kind("nats://h:4222") == "nats"
    assert position_key("stories:", "nats") == "stories:relay:position:nats"
    assert position_key("stories", "redis") == "stories:relay:position:redis"
    with pytest.raises(ValueError):
        broker_kind("kafka://h:9092")


async def test_the_stdlib_decoder_reads_faststreams_binary_envelope():
    from faststream.redis.parser.binary import BinaryMessageFormatV1

    envelope = _logged("StoryCreated").envelope("vignette")
    raw = await BinaryMessageFormatV1.encode(
        message=envelope, reply_to=None, headers={"event_type": "StoryCreated"}, correlation_id=envelope["event_id"],
    )
    body, headers = decode_faststream_binary(raw)
    fs_body, fs_headers = BinaryMessageFormatV1.parse(raw)
    assert body == fs_body and headers == fs_headers
    assert headers["event_type"] == "StoryCreated" and headers["correlation_id"] == envelope["event_id"]
    assert headers["content-type"] == "application/json"
    assert decode_redis_entry({b"__data__": raw}) == orjson.loads(orjson.dumps(envelope))
    assert decode_faststream_binary(b'{"plain": 1}') == (b'{"plain": 1}', {})
