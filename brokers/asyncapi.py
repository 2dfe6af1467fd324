"""The AsyncAPI document of every event the relay publishes, on Redis Streams and NATS JetStream.

Built with FastStream's own generator from publish-only brokers that never connect:

* Redis: one channel per event type, all on stream ``<prefix>.events`` (XADD), payload the typed
  envelope (``brokers/envelope_model.py``).
* NATS: one channel per subject ``<prefix>.events.<event_type>`` in JetStream stream ``<PREFIX>``.

``asyncapi_document(prefix)`` returns it as a dict; ``python -m brokers asyncapi`` prints it as
JSON; ``faststream docs serve brokers.asyncapi:app`` serves it as HTML.
"""

from __future__ import annotations

from typing import Any

from brokers.envelope_model import ENVELOPE_MODELS
from brokers.publishers import DEFAULT_MAX_LEN, nats_stream_name, nats_subject, redis_stream_name

TITLE = "Stories domain events"
VERSION = "1.0.0"
DESCRIPTION = (
    "Every domain event of the Stories service, in one JSON envelope, published by the relay in "
    "log position order, at least once: deduplicate on event_id. On Redis each stream entry holds "
    "one field, __data__, in FastStream's binary envelope (see docs/BROKERS.md); on NATS the "
    "message body is the envelope's JSON and Nats-Msg-Id is the event_id."
)


def _specification(prefix: str, redis_url: str, nats_url: str):
    from faststream.nats import JStream, NatsBroker
    from faststream.redis import RedisBroker, StreamSub
    from faststream.specification import AsyncAPI

    redis_broker = RedisBroker(redis_url, description=f"Redis Streams: stream {redis_stream_name(prefix)}")
    nats_broker = NatsBroker(nats_url, description=f"NATS JetStream: stream {nats_stream_name(prefix)}")
    jstream = JStream(nats_stream_name(prefix), subjects=[f"{prefix}.events.>"], declare=False)
    for event_type, model in ENVELOPE_MODELS.items():
        redis_broker.publisher(
            stream=StreamSub(redis_stream_name(prefix), maxlen=DEFAULT_MAX_LEN or None), schema=model,
            title=f"redis:{redis_stream_name(prefix)}:{event_type}",
            description=f"{event_type} events on Redis stream {redis_stream_name(prefix)} "
                        f"(header event_type={event_type}; correlation_id = event_id)",
        )
        nats_broker.publisher(
            nats_subject(prefix, event_type), stream=jstream, schema=model,
            title=f"nats:{nats_subject(prefix, event_type)}",
            description=f"{event_type} events in JetStream stream {nats_stream_name(prefix)} "
                        f"(Nats-Msg-Id = event_id)",
        )
    return AsyncAPI(redis_broker, nats_broker, title=TITLE, version=VERSION, description=DESCRIPTION,
                    schema_version="3.0.0")


def asyncapi_document(prefix: str = "stories", redis_url: str = "redis://localhost:6379",
                      nats_url: str = "nats://localhost:4222") -> dict[str, Any]:
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
