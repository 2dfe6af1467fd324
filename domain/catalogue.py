"""Every domain event type by name: what the log may hold and what leaves the service."""

from __future__ import annotations

from domain import accounts, engagement, highlights, social, stories
from domain.aggregate import DomainEvent

EVENT_TYPES: dict[str, type[DomainEvent]] = {
    cls.__name__: cls
    for module in (stories, engagement, highlights, social, accounts)
    for cls in vars(module).values()
    if isinstance(cls, type)
    and issubclass(cls, DomainEvent)
    and cls.__module__ == module.__name__
    and cls is not engagement.StickerEvent
}
