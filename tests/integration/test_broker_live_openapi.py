"""The query API's server-sent events are documented where HTTP endpoints are: its OpenAPI
document (``GET /openapi.json``; docs/BROKERS.md says why not the AsyncAPI one). This checks that
the document of an app built in-process describes both live endpoints as text/event-stream with
exactly the event names ``read_api/live.py`` sends, and that its ``/asyncapi.json`` is the
broker's document (checked against the event catalogue in ``tests/unit/test_broker_catalogue.py``)."""

from __future__ import annotations

import re
from pathlib import Path

from brokers.asyncapi import asyncapi_document
from read_api.app import create_app

LIVE_SOURCE = Path(__file__).resolve().parents[2] / "read_api" / "live.py"
LIVE_PATHS = ("/api/v1/stories/{story_id}/live", "/api/v1/stories/feed/live")


def _sent_event_names() -> set[str]:
    """Every ``event:`` name live.py writes: the first argument of its ``sse(...)`` calls."""
    names = set(re.findall(r"\bsse\(\s*\"([A-Za-z_]+)\"", LIVE_SOURCE.read_text(encoding="utf-8")))
    assert names, 'no sse("<event>", ...) call found in read_api/live.py'
    return names


def _documented_event_names(description: str) -> set[str]:
    """The event names a description lists: the bare `word`s in backticks (`event:`, `id:`, paths
    and headers have other characters in them)."""
    return set(re.findall(r"`([a-z_]+)`", description))


async def test_openapi_documents_the_live_endpoints_with_exactly_the_events_sent(read_side_settings, aiohttp_client):
    client = await aiohttp_client(create_app(read_side_settings))
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    sent = _sent_event_names()
    assert sent == {"story", "end", "tray"}
    for path in LIVE_PATHS:
        assert path in document["paths"], sorted(document["paths"])
        answer = document["paths"][path]["get"]["responses"]["200"]
        assert set(answer["content"]) == {"text/event-stream"}, path
        assert _documented_event_names(answer["description"]) == sent, path
        names = {p["name"] for p in document["paths"][path]["get"]["parameters"]}
        assert {"Last-Event-ID", "access_token"} <= names, path
    # no other endpoint claims to stream events
    streaming = {
        p
        for p, item in document["paths"].items()
        for op in item.values()
        if isinstance(op, dict)
        for r in op.get("responses", {}).values()
        if "text/event-stream" in r.get("content", {})
    }
    assert streaming == set(LIVE_PATHS)


async def test_the_query_api_serves_the_brokers_asyncapi_document(read_side_settings, aiohttp_client):
    client = await aiohttp_client(create_app(read_side_settings))
    response = await client.get("/asyncapi.json")
    assert response.status == 200
    assert await response.json() == asyncapi_document(read_side_settings.broker_prefix)
