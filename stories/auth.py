"""Bearer JWTs: HS256 with a shared secret, or RS256 with a PEM public key. ``sub`` is the actor."""

from __future__ import annotations

import time

import jwt

from domain.ids import is_user_id
from stories.settings import DEV_SECRET, Settings


CACHE_SIZE = 100_000
CACHE_TTL_S = 300.0  # also bounds how long a token without exp is trusted without a re-check


class AuthError(Exception):
    pass


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        if settings.jwt_public_key:
            self._key, self._algorithms = settings.jwt_public_key, ["RS256"]
        else:
            self._key, self._algorithms = settings.jwt_secret or DEV_SECRET, ["HS256"]
        self._audience = settings.jwt_audience
        self._options = {"require": ["sub"], "verify_aud": bool(self._audience)}
        # Verified tokens until they expire: a client sends the same token on every request,
        # and verifying it is the largest single cost of a cheap command.
        self._verified: dict[str, tuple[str, float]] = {}

    def user_of(self, authorization: str | None) -> str:
        """The verified ``sub`` of an ``Authorization: Bearer`` header, or AuthError."""
        if not authorization:
            raise AuthError("missing Authorization: Bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("expected Authorization: Bearer <token>")
        cached = self._verified.get(token)
        if cached is not None:
            if time.time() < cached[1]:
                return cached[0]
            del self._verified[token]
        try:
            claims = jwt.decode(
                token.strip(), self._key, algorithms=self._algorithms, audience=self._audience, options=self._options
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.PyJWTError as error:
            raise AuthError(f"invalid token: {error}") from None
        sub = claims.get("sub")
        if not is_user_id(sub):
            raise AuthError("token subject must be 1 to 64 characters of A-Za-z0-9_.-")
        if len(self._verified) >= CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (sub, min(float(claims.get("exp", "inf")), time.time() + CACHE_TTL_S))
        return sub


def mint_token(settings: Settings, user_id: str, ttl_s: int = 3600) -> str:
    """A dev token signed with the configured HS256 secret (RS256 needs the private key: not here)."""
    if not is_user_id(user_id):
        raise ValueError("user id must be 1 to 64 characters of A-Za-z0-9_.-")
    now = int(time.time())
    claims = {"sub": user_id, "iat": now, "exp": now + ttl_s}
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret or DEV_SECRET, algorithm="HS256")
