"""Rule violations. The HTTP layer maps each kind to a status; the domain knows no HTTP."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A command broke a rule. ``code`` is a stable snake_case identifier for clients."""

    code = "domain_error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class InvalidInput(DomainError):
    """The command is well-formed but its values break a rule (HTTP 422)."""

    code = "validation_error"


class NotFound(DomainError):
    """The thing does not exist, or the actor may not know it exists (HTTP 404)."""

    code = "not_found"


class Forbidden(DomainError):
    """The actor knows the thing exists but may not do this to it (HTTP 403)."""

    code = "forbidden"


class Conflict(DomainError):
    """The command collides with what already happened (HTTP 409)."""

    code = "conflict"


def field_error(field: str, message: str, *, code: str = "validation_error") -> InvalidInput:
    """An InvalidInput naming one field, shaped like the API's 422 details."""
    return InvalidInput(message, code=code, details=[{"field": field, "message": message}])


def limit_reached(kind: str, limit: int, message: str) -> Conflict:
    """A contract limit would be exceeded (HTTP 409 ``limit_reached``, ``details`` names it)."""
    return Conflict(message, code="limit_reached", details={"limit": limit, "kind": str(kind)})
