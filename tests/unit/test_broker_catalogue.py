"""The AsyncAPI document (``brokers/asyncapi.py``) against the event catalogue: every domain event
type the relay can publish is in the document, on both brokers, with its payload fields, and in
the README's "Event catalogue" table with the same fields and schema version; and nothing is in
one of them that is not in the others. Runs in ``make test``, so CI fails when they drift."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from brokers.asyncapi import asyncapi_document
from commands.event_store import _DOMAIN_EVENTS
from domain.catalogue import EVENT_TYPES

README = Path(__file__).resolve().parents[2] / "README.md"
BASE = {"originator_id", "originator_version", "occurred_at"}  # the envelope's, not data's
ENVELOPE_FIELDS = [
    "event_id",
    "event_type",
    "stream_id",
    "stream_version",
    "position",
    "occurred_at",
    "platform",
    "schema_version",
    "data",
]
OPTIONAL_ENVELOPE_FIELDS = ["erased"]  # only on events an erased person's data was in
PREFIX = "stories"


def _readme_catalogue() -> dict[str, tuple[int, list[str]]]:
    """The README's "Event catalogue" table: event type → (schema version, data fields)."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Event catalogue\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README.md has no '## Event catalogue' section"
    rows = {}
    for line in match.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        name = cells[0].strip("`")
        assert name not in rows, f"{name} is listed twice"
        rows[name] = (int(cells[1]), re.findall(r"`([^`]+)`", cells[2]))
    assert rows, "the Event catalogue section has no table rows"
    return rows


def _domain() -> dict[str, tuple[int, list[str]]]:
    """What the relay can publish: every domain event class the log hands it (EventStore.read_batch
    keeps exactly these), by event type."""
    published = {cls.__name__: cls for cls in _DOMAIN_EVENTS}
    assert published == EVENT_TYPES
    return {
        name: (cls.class_version, [f.name for f in dataclasses.fields(cls) if f.name not in BASE])
        for name, cls in published.items()
    }


@pytest.fixture(scope="module")
def document() -> dict:
    return asyncapi_document(prefix=PREFIX)


def _resolve(document: dict, reference: str) -> tuple[str, dict]:
    assert reference.startswith("#/components/schemas/"), reference
    name = reference.rsplit("/", 1)[-1]
    return name, document["components"]["schemas"][name]


def _asyncapi_events(document: dict) -> dict[str, dict[str, list[str]]]:
    """Event type → {broker: data fields} from the document's messages, through their payloads."""
    found: dict[str, dict[str, list[str]]] = {}
    for key, message in document["components"]["messages"].items():
        broker = key.partition(":")[0]
        _name, envelope = _resolve(document, message["payload"]["$ref"])
        assert list(envelope["properties"]) == ENVELOPE_FIELDS + OPTIONAL_ENVELOPE_FIELDS, key
        assert set(envelope["required"]) == set(ENVELOPE_FIELDS), key
        event_type = envelope["properties"]["event_type"]["const"]
        _data_name, data = _resolve(document, envelope["properties"]["data"]["$ref"])
        assert broker in ("redis", "nats"), key
        assert broker not in found.get(event_type, {}), f"{event_type} twice on {broker}"
        found.setdefault(event_type, {})[broker] = list(data.get("properties", {}))
    return found


def test_every_published_event_type_is_in_the_asyncapi_document_on_both_brokers_and_only_those(document):
    domain, found = _domain(), _asyncapi_events(document)
    assert set(found) == set(domain), (
        f"missing from AsyncAPI: {sorted(set(domain) - set(found))}; "
        f"not a published event: {sorted(set(found) - set(domain))}"
    )
    for name, by_broker in found.items():
        assert set(by_broker) == {"redis", "nats"}, name


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_asyncapi_payload_fields_are_the_event_fields(document, name):
    fields = _domain()[name][1]
    for broker, data_fields in _asyncapi_events(document)[name].items():
        assert data_fields == fields, f"{name} on {broker}"


def test_the_readme_catalogue_lists_exactly_the_published_event_types():
    readme, domain = _readme_catalogue(), _domain()
    assert set(readme) == set(domain), (
        f"missing from README's Event catalogue: {sorted(set(domain) - set(readme))}; "
        f"listed but not published: {sorted(set(readme) - set(domain))}"
    )


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_the_readme_catalogue_row_has_the_event_and_asyncapi_payload_fields(document, name):
    _version, fields = _readme_catalogue()[name]
    assert fields == _domain()[name][1]
    assert fields == _asyncapi_events(document)[name]["redis"]


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_the_readme_catalogue_schema_version_is_the_events(name):
    assert _readme_catalogue()[name][0] == _domain()[name][0]


def test_the_readme_lists_the_envelope_fields_of_the_asyncapi_payload():
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Event catalogue\n(.*?)(?=^\| event type)", text, re.S | re.M).group(1)
    listed = re.findall(r"`([a-z_]+)`", section.split("; `data`")[0])
    assert listed == ENVELOPE_FIELDS
