"""The AsyncAPI document of every event the relay publishes, on Redis Streams and NATS JetStream.

Built with FastStream's own generator from publish-only brokers that never connect:

* Redis: one channel per event type, all on stream ``<prefix>.events`` (XADD), payload the typed
  envelope (``brokers/envelope_model.py``), carried as UTF-8 JSON in the entry's one field ``event``.
* NATS: one channel per subject ``<prefix>.events.<event_type>`` in JetStream stream ``<PREFIX>``,
  the message body being the envelope's UTF-8 JSON and ``Nats-Msg-Id`` its ``event_id``.

Each message is marked ``contentType: application/json``, its correlation id is the payload's
``event_id`` and its description says where the JSON sits (FastStream's generator would otherwise
point the correlation id at a ``correlation_id`` header, which Redis entries no longer carry).

``asyncapi_document(prefix)`` returns it as a dict; ``stories asyncapi`` prints it as
JSON; ``faststream docs serve brokers.asyncapi:app`` serves it as HTML.
"""

from __future__ import annotations

from typing import Any

from brokers.envelope_model import ENVELOPE_MODELS
from brokers.publishers import (
    DEFAULT_MAX_LEN,
    REDIS_EVENT_FIELD,
    nats_stream_name,
    nats_subject,
    redis_stream_name,
)

TITLE = "Stories domain events"
VERSION = "2.0.0"  # 2: plain JSON on Redis (field ``event``; 1.x: field ``__data__``, FastStream's binary envelope)
DESCRIPTION = (
    "Every domain event of the Stories service, in one JSON envelope, published by the relay in "
    "log position order, at least once: deduplicate on event_id. Plain JSON on both brokers, "
    f"nothing framework-specific: on Redis each entry of the stream has exactly one field, "
    f"`{REDIS_EVENT_FIELD}`, holding the envelope as UTF-8 JSON (XREAD + json.loads in any language); "
    "on NATS JetStream the message body is the envelope as UTF-8 JSON and the Nats-Msg-Id header "
    "is its event_id. Entries written to Redis before version 2.0.0 have the field __data__ "
    "(FastStream's binary envelope) instead; see docs/BROKERS.md."
)
CONTENT_TYPE = "application/json"


def _redis_message_description(prefix: str, event_type: str) -> str:
    return (
        f"One entry of Redis stream {redis_stream_name(prefix)}: "
        f"`XADD {redis_stream_name(prefix)} * {REDIS_EVENT_FIELD} <payload as UTF-8 JSON>`. "
        f"Its only field, `{REDIS_EVENT_FIELD}`, is this {event_type} envelope."
    )


def _nats_message_description(prefix: str, event_type: str) -> str:
    return (
        f"Message body: this {event_type} envelope as UTF-8 JSON, on subject "
        f"{nats_subject(prefix, event_type)} of JetStream stream {nats_stream_name(prefix)}; "
        "header Nats-Msg-Id = event_id (JetStream drops re-publications within its duplicate window)."
    )


def _factory(prefix: str):
    """FastStream's AsyncAPI factory, with each message's content type, correlation id and
    description set to the wire format (also for ``faststream docs gen/serve``, which call it)."""
    from faststream.specification import AsyncAPI

    class StoriesAsyncAPI(AsyncAPI):
        def to_specification(self):
            # FastStream annotates the abstract ``Specification``; schema 3.0.0 gives its
            # ``ApplicationSchema`` (``components.messages``: pydantic models, edited in place).
            specification: Any = super().to_specification()
            for name, message in specification.components.messages.items():
                broker = name.partition(":")[0]  # the titles: redis:<stream>:<type>, nats:<subject>
                reference = str(message.payload.get("$ref", ""))  # #/components/schemas/<type>Envelope
                if broker not in ("redis", "nats") or not reference.endswith("Envelope"):
                    continue
                event_type = reference.rsplit("/", 1)[-1].removesuffix("Envelope")
                message.contentType = CONTENT_TYPE
                if message.correlationId is not None:
                    message.correlationId = type(message.correlationId)(
                        location="$message.payload#/event_id",
                        description="event_id: stable across re-publications; deduplicate on it",
                    )
                describe = _redis_message_description if broker == "redis" else _nats_message_description
                message.description = describe(prefix, event_type)
            return specification

    return StoriesAsyncAPI


def _specification(prefix: str, redis_url: str, nats_url: str):
    from faststream.nats import JStream, NatsBroker
    from faststream.redis import RedisBroker, StreamSub

    redis_broker = RedisBroker(redis_url, description=f"Redis Streams: stream {redis_stream_name(prefix)}")
    nats_broker = NatsBroker(nats_url, description=f"NATS JetStream: stream {nats_stream_name(prefix)}")
    jstream = JStream(nats_stream_name(prefix), subjects=[f"{prefix}.events.>"], declare=False)
    for event_type, model in ENVELOPE_MODELS.items():
        redis_broker.publisher(
            stream=StreamSub(redis_stream_name(prefix), maxlen=DEFAULT_MAX_LEN or None),
            schema=model,
            title=f"redis:{redis_stream_name(prefix)}:{event_type}",
            description=f"{event_type} events on Redis stream {redis_stream_name(prefix)} (one stream for "
            f"every type: filter on the JSON's event_type); entry field {REDIS_EVENT_FIELD!r} "
            "= the envelope's JSON",
        )
        nats_broker.publisher(
            nats_subject(prefix, event_type),
            stream=jstream,
            schema=model,
            title=f"nats:{nats_subject(prefix, event_type)}",
            description=f"{event_type} events in JetStream stream {nats_stream_name(prefix)}; "
            "body = the envelope's JSON, Nats-Msg-Id = event_id",
        )
    return _factory(prefix)(
        redis_broker, nats_broker, title=TITLE, version=VERSION, description=DESCRIPTION, schema_version="3.0.0"
    )


def asyncapi_document(
    prefix: str = "stories", redis_url: str = "redis://localhost:6379", nats_url: str = "nats://localhost:4222"
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document, as a JSON-ready dict."""
    return _specification(prefix, redis_url, nats_url).to_specification().to_jsonable()


def asyncapi_app(prefix: str = "stories"):
    """A FastStream app object for ``faststream docs gen/serve`` (never run)."""
    from faststream import FastStream

    spec = _specification(prefix, "redis://localhost:6379", "nats://localhost:4222")
    return FastStream(spec.brokers[0], specification=spec)


def __getattr__(name: str):  # ``brokers.asyncapi:app`` for the faststream CLI, built on first use
    if name == "app":
        return asyncapi_app()
    raise AttributeError(name)
