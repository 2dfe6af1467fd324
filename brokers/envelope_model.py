"""Pydantic models of what the relay publishes: the contract's envelope and each event's ``data``.

The ``data`` models are generated from the domain event dataclasses (``domain/catalogue.py``), so a
field added to an event shows up here, in the AsyncAPI document and in the tests without a second
edit. ``parse_envelope`` gives a consumer the typed envelope of a known event type and the generic
one of a type it does not know yet (new types are added, old shapes stay readable: upcasting).
"""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from typing import Annotated, Any, Literal, Union
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from domain.aggregate import DomainEvent
from domain.catalogue import EVENT_TYPES
from domain.platform import Platform

_BASE_FIELDS = {f.name for f in dataclasses.fields(DomainEvent)}  # originator_id / _version, occurred_at


class Envelope(BaseModel):
    """One domain event as it leaves the service (the contract's JSON envelope)."""

    model_config = ConfigDict(extra="ignore")

    event_id: UUID = Field(description="Stable id of this event; consumers deduplicate on it")
    event_type: str = Field(description="The domain event's name, e.g. StoryViewed", examples=["StoryViewed"])
    stream_id: UUID = Field(description="The aggregate stream the event belongs to")
    stream_version: int = Field(ge=1, description="1, 2, ... within the stream")
    position: int = Field(ge=1, description="Place in the one global log order; the relay publishes in this order")
    occurred_at: datetime = Field(description="When the event happened (ISO 8601, UTC)")
    platform: Platform = Field(description="The product profile that wrote it")
    schema_version: int = Field(ge=1, description="The event type's shape version (old shapes are upcast)")
    data: dict[str, Any] = Field(description="The event's own fields")
    erased: bool = Field(
        default=False,
        description="True when a person this event names was erased: "
        'their personal fields read null (docs/BROKERS.md, "Erasure"); absent otherwise',
    )


def _data_model(name: str, cls: type[DomainEvent]) -> type[BaseModel]:
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in _BASE_FIELDS:
            continue
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = Field(default_factory=f.default_factory)
        else:
            default = ...
        # A personal field reads null once its person is erased (the envelope's ``erased``).
        hint = hints[f.name] | None if f.name in cls.PERSONAL else hints[f.name]
        fields[f.name] = (hint, default)
    doc = (cls.__doc__ or "").strip()
    if doc.startswith(name + "("):  # the dataclass's generated repr-like doc says nothing
        doc = ""
    return create_model(
        f"{name}Data",
        __config__=ConfigDict(extra="ignore"),
        __doc__=doc or f"The data of a {name} event.",
        **fields,
    )


def _envelope_model(name: str, data_model: type[BaseModel]) -> type[Envelope]:
    return create_model(
        f"{name}Envelope",
        __base__=Envelope,
        __doc__=f"A {name} event in the envelope.",
        event_type=(Literal[name], Field(description="The domain event's name")),  # type: ignore[arg-type]  # a Literal of a run-time name
        data=(data_model, Field(description=f"The fields of {name}")),
    )


DATA_MODELS: dict[str, type[BaseModel]] = {name: _data_model(name, cls) for name, cls in EVENT_TYPES.items()}
ENVELOPE_MODELS: dict[str, type[Envelope]] = {name: _envelope_model(name, m) for name, m in DATA_MODELS.items()}

# A union built at run time from the catalogue (so not the X | Y form).
_ENVELOPES = Union[tuple(ENVELOPE_MODELS.values())]  # type: ignore[valid-type]  # noqa: UP007
AnyEnvelope = Annotated[_ENVELOPES, Field(discriminator="event_type")]  # type: ignore[valid-type]
_ANY = TypeAdapter(AnyEnvelope)


def parse_envelope(raw: dict[str, Any] | bytes | str) -> Envelope:
    """The typed envelope of a known event type; the generic ``Envelope`` for an unknown type.
    Raises ``pydantic.ValidationError`` when a known type's envelope or data is malformed."""
    if isinstance(raw, (bytes, str)):
        generic = Envelope.model_validate_json(raw)
        if generic.event_type not in ENVELOPE_MODELS:
            return generic
        return ENVELOPE_MODELS[generic.event_type].model_validate_json(raw)
    event_type = raw.get("event_type") if isinstance(raw, dict) else None
    if event_type in ENVELOPE_MODELS:
        return _ANY.validate_python(raw)
    return Envelope.model_validate(raw)


__all__ = ["DATA_MODELS", "ENVELOPE_MODELS", "AnyEnvelope", "Envelope", "ValidationError", "parse_envelope"]
