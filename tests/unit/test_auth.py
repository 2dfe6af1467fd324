"""Authentication settings and token checks, in process (issue 11, items 1, 2 and 4).

End to end over real processes: tests/e2e/test_auth_hardening.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import stat
import threading
import time
from pathlib import Path

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import stories.auth as auth  # attributes looked up in each test: a missing one fails that test alone
from stories.auth import AuthError, TokenVerifier, mint_token
from stories.settings import Settings, cursor_secret, jwt_settings_problem

SECRET = "a-test-secret-of-more-than-32-bytes-0123456789"
# The constant the repository used to publish as the dev-mode secret.
PUBLISHED_DEV_SECRET = "stories-dev-secret-do-not-use-in-production"


def settings(**kw) -> Settings:
    kw.setdefault("data_dir", Path("/nonexistent-data-dir"))
    return Settings(_env_file=None, **kw)


def claims(**extra) -> dict:
    now = int(time.time())
    return {"sub": "alice", "iat": now, **extra}


def hs256_by_hand(payload: dict, key: bytes) -> str:
    """HS256 with any key at all (PyJWT refuses a PEM key as an HMAC secret)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


def pem_public(key) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(autouse=True)
def _no_stories_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("STORIES_"):
            monkeypatch.delenv(name)


# -- item 2: exp is required; weak secrets and bad keys refuse to start ------------------------


def test_a_token_without_exp_is_refused():
    verifier = TokenVerifier(settings(jwt_secret=SECRET))
    with pytest.raises(AuthError, match="exp"):
        verifier.user_of("Bearer " + jwt.encode(claims(), SECRET, algorithm="HS256"))
    good = jwt.encode(claims(exp=int(time.time()) + 60), SECRET, algorithm="HS256")
    assert verifier.user_of("Bearer " + good) == "alice"


@pytest.mark.parametrize("secret", ["short", "x" * 31, "é" * 15])
def test_an_hs256_secret_under_32_bytes_is_refused_at_start_up(secret):
    problem = jwt_settings_problem(settings(jwt_secret=secret))
    assert problem and "32" in problem and secret not in problem, problem


def test_a_32_byte_secret_is_enough():
    assert jwt_settings_problem(settings(jwt_secret="x" * 32)) is None


@pytest.mark.parametrize(
    "pem",
    [
        "not a key",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        pem_public(ec.generate_private_key(ec.SECP256R1())),  # parses, but not RSA
        pem_public(rsa.generate_private_key(public_exponent=65537, key_size=1024)),  # too small
    ],
    ids=["garbage", "bad_base64_body", "ec_key", "rsa_1024"],
)
def test_an_rs256_public_key_that_does_not_work_is_refused_at_start_up(pem):
    problem = jwt_settings_problem(settings(jwt_public_key=pem))
    assert problem and "STORIES_JWT_PUBLIC_KEY" in problem, problem
    with pytest.raises(auth.AuthConfigError):
        TokenVerifier(settings(jwt_public_key=pem))


def test_rs256_verifies_with_the_public_key_only():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = pem_public(private)
    assert jwt_settings_problem(settings(jwt_public_key=pem)) is None
    one_line = pem.replace("\n", "\\n")  # a one-line .env value
    assert jwt_settings_problem(settings(jwt_public_key=one_line)) is None
    verifier = TokenVerifier(settings(jwt_public_key=one_line))
    token = jwt.encode(claims(exp=int(time.time()) + 60), private, algorithm="RS256")
    assert verifier.user_of(f"Bearer {token}") == "alice"
    with pytest.raises(AuthError):  # RS256 without exp
        verifier.user_of("Bearer " + jwt.encode(claims(), private, algorithm="RS256"))
    with pytest.raises(AuthError):  # the public key as an HMAC secret (algorithm confusion)
        verifier.user_of("Bearer " + hs256_by_hand(claims(exp=int(time.time()) + 60), pem.encode()))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AuthError):
        verifier.user_of("Bearer " + jwt.encode(claims(exp=int(time.time()) + 60), other, algorithm="RS256"))


# -- item 1: dev mode: loopback only, a secret per data directory ---------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "192.168.1.20", "10.0.0.1", "example.org", "[::]"])
def test_dev_mode_refuses_a_bind_beyond_loopback(host):
    problem = jwt_settings_problem(settings(dev_mode=True, host=host))
    assert problem and "loopback" in problem, problem
    # with a real secret too: dev mode never listens beyond loopback
    assert jwt_settings_problem(settings(dev_mode=True, host=host, jwt_secret=SECRET))
    assert jwt_settings_problem(settings(host=host, jwt_secret=SECRET)) is None  # not dev mode: fine


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.8.7", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_dev_mode_on_loopback_starts(host):
    assert jwt_settings_problem(settings(dev_mode=True, host=host)) is None


def test_each_data_directory_gets_its_own_dev_secret(tmp_path):
    a, b = settings(dev_mode=True, data_dir=tmp_path / "a"), settings(dev_mode=True, data_dir=tmp_path / "b")
    token_a = mint_token(a, "alice")
    secret_file = tmp_path / "a" / "dev-jwt-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert len(secret_file.read_text().strip()) >= 32
    assert TokenVerifier(a).user_of(f"Bearer {token_a}") == "alice"  # every process of that data dir
    with pytest.raises(AuthError):
        TokenVerifier(b).user_of(f"Bearer {token_a}")  # another data directory's secret
    published = jwt.encode(claims(exp=int(time.time()) + 60), PUBLISHED_DEV_SECRET, algorithm="HS256")
    for s in (a, b):
        with pytest.raises(AuthError):
            TokenVerifier(s).user_of(f"Bearer {published}")
    assert auth.dev_secret(a) == secret_file.read_text().strip() != auth.dev_secret(b)
    import stories.settings

    assert not hasattr(stories.settings, "DEV_SECRET")


def test_stories_token_outside_dev_mode_reads_the_data_directorys_secret(tmp_path):
    """Another shell, without STORIES_DEV_MODE, with the same data directory: the same secret."""
    service = settings(dev_mode=True, data_dir=tmp_path)
    verifier = TokenVerifier(service)
    token = mint_token(settings(data_dir=tmp_path), "bob")
    assert verifier.user_of(f"Bearer {token}") == "bob"
    with pytest.raises(auth.AuthConfigError, match="dev"):  # nothing made it yet: say so, do not make one
        mint_token(settings(data_dir=tmp_path / "fresh"), "bob")
    assert not (tmp_path / "fresh" / "dev-jwt-secret").exists()


def test_outside_dev_mode_no_secret_means_no_verifier(tmp_path):
    auth.dev_secret(settings(dev_mode=True, data_dir=tmp_path))  # a dev secret lying around is not used
    with pytest.raises(auth.AuthConfigError):
        TokenVerifier(settings(data_dir=tmp_path))
    assert jwt_settings_problem(settings(data_dir=tmp_path))


def test_processes_starting_together_agree_on_one_dev_secret(tmp_path):
    s = settings(dev_mode=True, data_dir=tmp_path / "racy")
    seen: list[str] = []
    threads = [threading.Thread(target=lambda: seen.append(auth.dev_secret(s))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 16 and len(set(seen)) == 1
    assert [p.name for p in (tmp_path / "racy").iterdir()] == ["dev-jwt-secret"]  # no temporary files left


def test_cursor_secret_in_dev_mode_is_the_data_directorys_secret(tmp_path):
    s = settings(dev_mode=True, data_dir=tmp_path)
    assert cursor_secret(s) == auth.dev_secret(s).encode()
    assert cursor_secret(s) != PUBLISHED_DEV_SECRET.encode()
    assert cursor_secret(settings(jwt_secret=SECRET)) == SECRET.encode()
    assert cursor_secret(settings(jwt_secret=SECRET, cursor_secret="c" * 40)) == b"c" * 40


# -- item 4: /ready says names and states, never the error's text ------------------------------


async def test_ready_names_dependencies_and_states_only(aiohttp_client, caplog):
    from stories.http import error_middleware, ready_handler

    async def ok() -> None:
        return None

    async def down() -> None:
        raise ConnectionError("mongo.internal.example.org:27017: auth failed for role stories_admin")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/ready", ready_handler({"mongodb": down, "redis": ok}))
    app.router.add_get("/ready-ok", ready_handler({"mongodb": ok, "redis": ok}))
    client = await aiohttp_client(app)
    with caplog.at_level(logging.WARNING):
        resp = await client.get("/ready")
        raw = await resp.text()
    assert resp.status == 503 and resp.headers.get("Retry-After"), raw
    body = await resp.json()
    assert body["error"]["code"] == "not_ready" and body["error"]["details"] == {"mongodb": "down"}, body
    for leak in ("internal.example.org", "27017", "stories_admin", "auth failed"):
        assert leak not in raw, raw
    assert "mongo.internal.example.org:27017" in caplog.text  # the details go to the log
    resp = await client.get("/ready-ok")
    assert resp.status == 200 and await resp.json() == {"status": "ready", "checks": {"mongodb": "ok", "redis": "ok"}}
