"""Bearer JWTs: HS256 with a shared secret, or RS256 with a PEM public key. ``sub`` is the actor.

``exp`` is required. Dev mode (``STORIES_DEV_MODE=true`` with no secret or key set) signs and
verifies with a random secret of its own data directory (``STORIES_DATA_DIR/dev-jwt-secret``,
mode 0600, created on first use), which every process of that data directory and
``stories token`` read: no secret published anywhere can forge a token. Dev mode listens on
loopback only.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jwt
from jwt.types import Options

from domain.ids import is_user_id
from stories.settings import Settings

CACHE_SIZE = 100_000
CACHE_TTL_S = 300.0  # a verified token is re-checked at least this often (and never past its exp)
MIN_SECRET_BYTES = 32  # HS256: at least the hash's size (RFC 7518 section 3.2)
MIN_RSA_BITS = 2048
DEV_SECRET_FILE = "dev-jwt-secret"


class AuthError(Exception):
    pass


class AuthConfigError(Exception):
    """The JWT settings cannot work: a process must refuse to start."""


# -- the keys ------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1 (the empty host means every interface: not loopback)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def dev_bind_problem(settings: Settings) -> str | None:
    """Dev mode never listens beyond loopback."""
    if settings.dev_mode and not is_loopback(settings.host):
        return (
            f"dev mode (STORIES_DEV_MODE=true) listens on loopback only, and STORIES_HOST={settings.host!r} "
            "is not loopback: use 127.0.0.1, or set STORIES_DEV_MODE=false with STORIES_JWT_SECRET "
            f"({MIN_SECRET_BYTES}+ random bytes) or STORIES_JWT_PUBLIC_KEY"
        )
    return None


def load_public_key(pem: str) -> Any:
    """The RS256 verification key from PEM text (literal ``\\n`` accepted for one-line env files)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = pem.strip().replace("\\n", "\n")
    try:
        key = load_pem_public_key(text.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise AuthConfigError(
            "STORIES_JWT_PUBLIC_KEY is not a PEM public key (-----BEGIN PUBLIC KEY----- ... -----END PUBLIC KEY-----)"
        ) from None
    if not isinstance(key, RSAPublicKey):
        raise AuthConfigError("STORIES_JWT_PUBLIC_KEY is not an RSA key (RS256 needs one)")
    if key.key_size < MIN_RSA_BITS:
        raise AuthConfigError(f"STORIES_JWT_PUBLIC_KEY is a {key.key_size}-bit RSA key: at least {MIN_RSA_BITS} bits")
    return key


def secret_problem(secret: str) -> str | None:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        return (
            f"STORIES_JWT_SECRET is {len(secret.encode())} bytes: HS256 needs at least {MIN_SECRET_BYTES} "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
        )
    return None


def dev_secret_path(settings: Settings) -> Path:
    return settings.data_dir / DEV_SECRET_FILE


def dev_secret(settings: Settings, create: bool = True) -> str:
    """The data directory's own dev secret; made on first use (atomically, mode 0600) when ``create``.
    AuthConfigError when it is missing (and not to be created) or unusable."""
    path = dev_secret_path(settings)
    try:
        return _read_dev_secret(path)
    except FileNotFoundError:
        if not create:
            raise AuthConfigError(
                f"no STORIES_JWT_SECRET set and no dev secret in {path} "
                "(start the service in dev mode first, e.g. `make run`, with the same STORIES_DATA_DIR)"
            ) from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48) + "\n")
            with contextlib.suppress(FileExistsError):
                os.link(temp, path)  # whole or not at all; when processes race, the first one wins
        finally:
            temp.unlink(missing_ok=True)
        return _read_dev_secret(path)
    except OSError as e:
        raise AuthConfigError(f"cannot create the dev secret {path}: {e}") from None


def _read_dev_secret(path: Path) -> str:
    text = path.read_text().strip()
    if len(text.encode()) < MIN_SECRET_BYTES:
        raise AuthConfigError(f"the dev secret {path} is too short or empty: delete it to have a new one made")
    return text


def hs256_secret(settings: Settings, minting: bool = False) -> str:
    """STORIES_JWT_SECRET, else in dev mode the data directory's own secret (made on first use).
    ``minting`` (``stories token`` from another shell) also takes an existing dev secret outside dev mode."""
    if settings.jwt_secret:
        return settings.jwt_secret
    if settings.dev_mode:
        return dev_secret(settings, create=True)
    if minting:
        return dev_secret(settings, create=False)
    raise AuthConfigError(
        "no STORIES_JWT_SECRET or STORIES_JWT_PUBLIC_KEY set (set STORIES_DEV_MODE=true for local use)"
    )


# -- verifying and minting -----------------------------------------------------------------


class ErasedAccounts:
    """The pseudonyms of erased accounts (``../shared/CONTRACT.md``, "Erasure"), so that their
    tokens are refused. Each API process keeps them in memory, fed from its side's own record
    (the command API: the key store; the query API: the read model), and checks every request
    against them: an HMAC, and only once any account has been erased."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._pseudonyms: set[str] = set()
        self.since = ""  # the newest erasure seen (ISO time or position: the feeder's own mark)

    def add(self, pseudonyms: Iterable[str]) -> None:
        self._pseudonyms.update(pseudonyms)

    def __contains__(self, user_id: str) -> bool:
        if not self._pseudonyms:
            return False
        return hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest() in self._pseudonyms

    def __len__(self) -> int:
        return len(self._pseudonyms)


class TokenVerifier:
    def __init__(self, settings: Settings, erased: ErasedAccounts | None = None) -> None:
        self.erased = erased if erased is not None else ErasedAccounts(b"")
        if settings.jwt_public_key:
            self._key, self._algorithms = load_public_key(settings.jwt_public_key), ["RS256"]
        else:
            self._key, self._algorithms = hs256_secret(settings), ["HS256"]
        self._audience = settings.jwt_audience
        self._options: Options = {"require": ["sub", "exp"], "verify_aud": bool(self._audience)}
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
                return self._not_erased(cached[0])
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
        if not isinstance(sub, str) or not is_user_id(sub):
            raise AuthError("token subject must be 1 to 64 characters of A-Za-z0-9_.-")
        if len(self._verified) >= CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (sub, min(float(claims["exp"]), time.time() + CACHE_TTL_S))
        return self._not_erased(sub)

    def _not_erased(self, user_id: str) -> str:
        if user_id in self.erased:
            raise AuthError("this account has been erased")
        return user_id


def mint_token(settings: Settings, user_id: str, ttl_s: int = 3600) -> str:
    """A dev token signed with STORIES_JWT_SECRET, else the data directory's dev secret (made
    here in dev mode; outside dev mode it must exist already, made by a dev-mode service).
    RS256 needs the private key: not here."""
    if not is_user_id(user_id):
        raise ValueError("user id must be 1 to 64 characters of A-Za-z0-9_.-")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + ttl_s}
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, hs256_secret(settings, minting=True), algorithm="HS256")
