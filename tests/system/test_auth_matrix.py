"""The authentication matrix: every endpoint of both APIs (as each API's own /openapi.json lists
them), called with every kind of bad credential, answers 401 in the contract's error shape with no
data in the body and changes nothing; owner-only endpoints called by another user answer 403
(the resource's existence is known to the caller) or 404 (it is hidden from them), likewise
without data and without effect.

"Changes nothing" is checked on the log itself: its head before and after each group of calls,
``stories export | wc -l`` over the whole module, and the position of a later write (which must
come right after the head as it was before the matrix).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from typing import Any

import jwt
import pytest

from tests.e2e.read_side import STORIES, ReadSide

pytestmark = pytest.mark.timeout(120)

S, H = "/api/v1/stories", "/api/v1/highlights"
SECRET_TEXT = f"TOP-SECRET-{uuid.uuid4().hex[:8]}"
POLL = {"sticker_type": "poll", "poll": {"question": f"{SECRET_TEXT}?", "options": [{"text": "a"}, {"text": "b"}]}}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(payload: dict[str, Any], secret: str) -> str:
    """HS256 over any payload at all (PyJWT's encode would refuse some of the bad ones)."""
    return jwt.api_jws.PyJWS().encode(json.dumps(payload).encode(), secret, algorithm="HS256")


def claims(sub: Any = "alice", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    out = {"iat": now, "exp": now + 3600, **extra}
    if sub is not ...:
        out["sub"] = sub
    return out


# Each bad credential: (name, Authorization header value or None) from the stack's real secret.
def bad_credentials(rs: ReadSide, owner: str) -> list[tuple[str, str | None]]:
    good = signed(claims(owner), rs.secret)
    head, _payload, signature = good.split(".")
    tampered = f"{head}.{_b64(json.dumps(claims('bob')).encode())}.{signature}"
    unsigned = f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims(owner)).encode())}."
    bearer = lambda token: f"Bearer {token}"  # noqa: E731
    return [
        ("no_token", None),
        ("empty_bearer", "Bearer "),
        ("basic_scheme", "Basic " + base64.b64encode(f"{owner}:pw".encode()).decode()),
        ("token_without_scheme", good),
        ("garbage", bearer("not.a.jwt")),
        ("forged_wrong_secret", bearer(signed(claims(owner), rs.secret + "-wrong"))),
        ("forged_alg_none", bearer(unsigned)),
        ("tampered_payload", bearer(tampered)),
        ("expired", bearer(signed(claims(owner, exp=int(time.time()) - 60), rs.secret))),
        ("exp_missing", bearer(signed({"sub": owner, "iat": int(time.time())}, rs.secret))),
        ("not_yet_valid", bearer(signed(claims(owner, nbf=int(time.time()) + 3600), rs.secret))),
        ("sub_missing", bearer(signed(claims(...), rs.secret))),
        ("sub_empty", bearer(signed(claims(""), rs.secret))),
        ("sub_with_space", bearer(signed(claims("ali ce"), rs.secret))),
        ("sub_too_long", bearer(signed(claims("a" * 65), rs.secret))),
        ("sub_not_a_string", bearer(signed(claims(12345), rs.secret))),
        ("sub_unicode", bearer(signed(claims("alicé"), rs.secret))),
        ("sub_path", bearer(signed(claims("../alice"), rs.secret))),
        ("sub_trailing_newline", bearer(signed(claims(owner + "\n"), rs.secret))),
    ]


class World:
    """What the matrix points at: alice's stories and highlight, and the log's head."""

    def __init__(self, rs: ReadSide) -> None:
        tag = uuid.uuid4().hex[:8]
        self.rs = rs
        self.alice, self.bob, self.carol = f"alice-{tag}", f"bob-{tag}", f"carol-{tag}"
        self.public, _ = rs.story(self.alice, privacy="public", text_content=SECRET_TEXT, stickers=[POLL])
        self.spare, _ = rs.story(self.alice, privacy="public", text_content=SECRET_TEXT)
        self.hidden, _ = rs.story(self.alice, privacy="close_friends", text_content=SECRET_TEXT)
        self.highlight = rs.write(
            "POST", H, self.alice, {"title": SECRET_TEXT, "story_ids": [self.public]}, expect=201
        ).body["highlight_id"]
        rs.view(self.carol, self.public)
        rs.write("POST", f"/api/v1/close-friends/{self.carol}", self.alice, expect=201)
        self.position = rs.write("PUT", f"/api/v1/following/{self.carol}", self.alice).position
        self.secrets = (SECRET_TEXT, self.carol)  # never in a refusal's body

    def path(self, template: str, story: str | None = None) -> str:
        return (
            template.replace("{story_id}", story or self.public)
            .replace("{highlight_id}", self.highlight)
            .replace("{user_id}", self.carol)
        )

    def body(self, method: str, template: str) -> Any:
        """A valid body for each command, so credentials are the only thing wrong."""
        bodies = {
            ("POST", S): {"story_type": "text", "text_content": "new"},
            ("POST", S + "/{story_id}/view"): None,
            ("POST", S + "/{story_id}/reply"): {"text": "hi"},
            ("POST", S + "/{story_id}/interact"): {"sticker_index": 0, "option_index": 0},
            ("DELETE", S + "/{story_id}"): None,
            ("POST", S + "/{story_id}/navigate"): {"action": "exit"},
            ("POST", S + "/{story_id}/share"): None,
            ("PATCH", S + "/{story_id}"): {"text_content": "x"},
            ("PUT", "/api/v1/muted/{user_id}"): None,
            ("DELETE", "/api/v1/muted/{user_id}"): None,
            ("POST", H): {"title": "mine", "story_ids": [self.public]},
            ("POST", H + "/reorder"): {"highlight_ids": [self.highlight]},
            ("PATCH", H + "/{highlight_id}"): {"title": "renamed"},
            ("POST", H + "/{highlight_id}/stories"): {"story_ids": [self.spare]},
            ("DELETE", H + "/{highlight_id}/stories"): {"story_ids": [self.public]},
            ("DELETE", H + "/{highlight_id}"): None,
            ("POST", "/api/v1/close-friends/{user_id}"): None,
            ("DELETE", "/api/v1/close-friends/{user_id}"): None,
            ("PUT", "/api/v1/following/{user_id}"): None,
            ("DELETE", "/api/v1/following/{user_id}"): None,
            ("DELETE", "/api/v1/account"): None,
        }
        if method == "GET":
            return None
        assert (method, template) in bodies, f"new command endpoint {method} {template}: add it to the matrix"
        return bodies[(method, template)]

    def head(self) -> int:
        from commands.event_store import EventStore

        store = EventStore(self.rs.event_store_url)
        try:
            return store.head()
        finally:
            store.close()

    def export(self) -> list[dict]:
        out = subprocess.run(
            [STORIES, "export", "--no-progress"], env=self.rs.env, capture_output=True, timeout=60, cwd=self.rs.data_dir
        )
        assert out.returncode == 0, out.stderr.decode()[-2000:]
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def export_count(self) -> int:
        return len(self.export())


@pytest.fixture(scope="module")
def world(read_side) -> World:
    w = World(read_side)
    w.exported = w.export_count()
    return w


def endpoints(rs: ReadSide, api: str) -> list[tuple[str, str]]:
    port = rs.command_port if api == "command" else rs.query_port
    from tests.e2e.read_side import http_request

    resp = http_request("127.0.0.1", port, "GET", "/openapi.json")
    assert resp.status == 200
    document = resp.body
    out = [(method.upper(), path) for path, ops in document["paths"].items() for method in ops]
    for method, path in out:  # the document says so too
        op = document["paths"][path][method.lower()]
        assert "401" in op["responses"] and op.get("security"), (method, path)
    return sorted(out)


def call(rs: ReadSide, api: str, method: str, path: str, body: Any, authorization: str | None):
    headers = {} if authorization is None else {"Authorization": authorization}
    if api == "query":
        return rs.query(path, headers=headers)
    if body is None:
        return rs.command(method, path, headers=headers)
    return rs.command(method, path, json_body=body, headers=headers)


def check_refusal(resp, expected: set[int], what: str, secrets: tuple[str, ...], ids: tuple[str, ...] = ()) -> None:
    assert resp.status in expected, f"{what}: expected {sorted(expected)}, got {resp!r}"
    assert (resp.header("content-type") or "").startswith("application/json"), (what, resp.headers)
    body = resp.body
    assert isinstance(body, dict) and set(body) == {"error"}, (what, body)
    error = body["error"]
    assert set(error) <= {"code", "message", "details"}, (what, body)
    assert isinstance(error["code"], str) and error["code"].replace("_", "").isalpha() and error["code"].islower(), body
    assert isinstance(error["message"], str) and error["message"], body
    raw = resp.raw.decode("utf-8", "replace")
    for secret in secrets + ids:
        assert secret not in raw, f"{what}: body leaks {secret!r}: {raw[:300]}"


@pytest.mark.parametrize("api", ["command", "query"])
def test_every_endpoint_refuses_every_bad_credential(read_side, world, api):
    rs, w = read_side, world
    routes = endpoints(rs, api)
    assert len(routes) == (21 if api == "command" else 15), routes
    before = w.head()
    calls = 0
    failures = []
    for name, authorization in bad_credentials(rs, w.alice):
        for method, template in routes:
            resp = call(rs, api, method, w.path(template), w.body(method, template), authorization)
            calls += 1
            try:
                check_refusal(resp, {401}, f"{name}: {method} {template}", w.secrets, (w.hidden,))
                assert resp.body["error"]["code"] == "unauthorized", resp
                if api == "query":  # every query answer, a 401 included, says where the read models stood
                    assert (resp.header("x-stories-position") or "").isdigit(), (name, method, template, resp.headers)
            except AssertionError as error:
                failures.append(str(error)[:400])
    assert not failures, f"{len(failures)} of {calls} calls:\n" + "\n".join(failures[:20])
    assert w.head() == before, "a refused request appended to the log"


# Owner-only endpoints, called by bob (a valid user who is not the owner). On alice's public, live
# story the caller already knows it exists: 403. On her close-friends story they do not: 404.
WRONG_USER = [
    ("command", "DELETE", S + "/{story_id}", "public", {403}),
    ("command", "DELETE", S + "/{story_id}", "hidden", {404}),
    ("command", "PATCH", S + "/{story_id}", "public", {403}),
    ("command", "PATCH", S + "/{story_id}", "hidden", {404}),
    ("command", "PATCH", H + "/{highlight_id}", None, {403}),
    ("command", "POST", H + "/{highlight_id}/stories", None, {403}),
    ("command", "DELETE", H + "/{highlight_id}/stories", None, {403}),
    ("command", "DELETE", H + "/{highlight_id}", None, {403}),
    # bob's "whole list" cannot be alice's highlight
    ("command", "POST", H + "/reorder", None, {403, 404, 409, 422}),
    ("query", "GET", "/api/v1/viewers/story/{story_id}", "public", {403}),
    ("query", "GET", "/api/v1/viewers/story/{story_id}", "hidden", {404}),
    ("query", "GET", "/api/v1/viewers/story/{story_id}/insights", "public", {403}),
    ("query", "GET", "/api/v1/viewers/story/{story_id}/insights", "hidden", {404}),
    ("query", "GET", "/api/v1/viewers/story/{story_id}/answers", "public", {403}),
    ("query", "GET", "/api/v1/viewers/story/{story_id}/answers", "hidden", {404}),
]


@pytest.mark.parametrize(
    "api,method,template,story,expected", WRONG_USER, ids=[f"{m}-{t}-{s or ''}" for _a, m, t, s, _e in WRONG_USER]
)
def test_owner_only_endpoints_refuse_another_user(read_side, world, api, method, template, story, expected):
    rs, w = read_side, world
    assert (method, template) in endpoints(rs, api)
    story_id = {"public": w.public, "hidden": w.hidden, None: None}[story]
    before = w.head()
    token = f"Bearer {rs.token(w.bob)}"
    resp = call(rs, api, method, w.path(template, story_id), w.body(method, template), token)
    ids = (w.hidden,) if story == "hidden" else ()
    check_refusal(resp, expected, f"bob: {method} {template} ({story})", w.secrets, ids)
    assert w.head() == before, "a refused request appended to the log"


def test_owner_still_sees_everything_unchanged(read_side, world):
    """After the whole matrix alice's stories, highlight and lists are as she left them, the log
    holds exactly what it held (``stories export``), and the next write lands right after it."""
    rs, w = read_side, world
    assert w.export_count() == w.exported
    for story in (w.public, w.spare, w.hidden):
        served = rs.read(f"{S}/{story}", w.alice, w.position).body
        assert served["text_content"] == SECRET_TEXT and served["reply_count"] == 0
    served = rs.read(f"{S}/{w.public}", w.alice, w.position).body
    assert served["view_count"] == 1 and served["stickers"][0]["poll"]["total_votes"] == 0
    highlight = rs.read(f"{H}/{w.highlight}", w.alice, w.position).body
    assert highlight["title"] == SECRET_TEXT, highlight
    assert [s["story_id"] for s in highlight["stories"]["items"]] == [w.public], highlight
    assert highlight["story_ids"] == [w.public] and highlight["stories"]["next_cursor"] is None, highlight
    for path in ("/api/v1/close-friends/", "/api/v1/close-friends"):
        friends = rs.items(path, w.alice, w.position)
        assert [f["user_id"] for f in friends] == [w.carol], friends
    head = w.head()
    # The last write's batch ends with its private batch marker (commands/batch_marker.py).
    assert head == w.position + 1, "something was appended after the world was set up"
    # The next write lands right after it. (A follow also appends the follower's private follow
    # count record, which ``stories export`` leaves out: its answer's position may be past head + 1.)
    at = rs.follow(w.bob, w.alice)
    assert head < at <= head + 2, (head, at)
    events = w.export()
    assert len(events) == w.exported + 1, events[w.exported :]
    followed = events[-1]
    assert followed["event_type"] == "UserFollowed" and followed["position"] == at, followed
    assert w.bob in json.dumps(followed) and w.alice in json.dumps(followed), followed
