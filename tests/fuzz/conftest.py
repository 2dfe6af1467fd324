"""Fixtures for API schema fuzzing against the real processes.

``command_side`` is one ``stories command-api`` process (rate limit off); ``query_side`` is the
command API + projector + query API on the session's SecantusDB and the machine's Redis (the
launchers of ``tests/e2e``; ``min_position`` waits shortened to 0.05 s). Each is seeded with a
few stories, highlights, follows, views, votes and close friends by the fuzzing user ``fuzzer``
and by others, so that generated path ids sometimes name something that exists.

``command_schema`` / ``query_schema`` load each running API's own ``/openapi.json`` with
schemathesis (fixed seed) and attach, for that schema only:

- an auth provider: every request carries a valid HS256 token for ``fuzzer`` (the security
  scheme is not generated, so negative cases never drop or break the token);
- ``before_generate_path_parameters`` / ``before_generate_body``: about half of the generated
  cases have their path ids (and highlight bodies' ``story_ids``) drawn from the seeded ids;
- ``filter_failure``: drops exactly the failures that are not new: the contract's 503
  ``position_not_reached`` for a fuzzed ``min_position`` beyond the read models, the statuses of
  ``KNOWN_UNDOCUMENTED`` and the 5xx signatures of ``known_bug`` (each pinned by a strict xfail
  in test_fuzz_regressions.py); all are counted and printed in the summary;
- ``after_call``: counts requests per operation and status (``FuzzStats``), so the test module
  can check the request budget; the counts are printed in the terminal summary.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.core.failures import ServerError
from schemathesis.openapi.checks import UndefinedStatusCode

from tests.e2e.conftest import CommandApi
from tests.e2e.conftest import launch as launch_command_api
from tests.e2e.read_side import ReadSide
from tests.e2e.read_side import cleanup as cleanup_read_side
from tests.e2e.read_side import launch as launch_read_side

FUZZ_USER = "fuzzer"
ALICE, BOB = "alice", "bob"
# An id that names nothing, mixed into the seeded ids so "not found" paths are exercised deliberately too.
UNKNOWN_ID = "7f1c1e0e-0000-4000-8000-000000000000"
SEED_CONFIG = 20260101  # schemathesis / hypothesis seed: the run is the same every time

S, H = "/api/v1/stories", "/api/v1/highlights"
MEDIA = "https://cdn.example.org/seed.jpg"


def all_stickers() -> list[dict]:
    """One sticker of every type, so interactions on seeded stories reach every handler."""
    return [
        {"sticker_type": "poll", "poll": {"question": "Swim?", "options": [{"text": "yes"}, {"text": "later"}]}},
        {
            "sticker_type": "quiz",
            "quiz": {"question": "2+2?", "options": [{"text": "4"}, {"text": "5"}], "correct_answer_index": 0},
        },
        {"sticker_type": "question", "question": {"text": "Ask me anything"}},
        {"sticker_type": "countdown", "countdown": {"title": "Launch", "end_time": "2099-01-01T00:00:00Z"}},
        {"sticker_type": "slider", "slider": {"question": "How hot?", "emoji": "🔥", "min_value": 0, "max_value": 10}},
        {"sticker_type": "link", "link": {"url": "https://example.org/", "label": "site"}},
        {"sticker_type": "mention", "mention": {"user_id": ALICE}},
        {"sticker_type": "location", "location": {"name": "Beach", "lat": 1.5, "lng": 2.5}},
        {"sticker_type": "music", "music": {"title": "Song", "artist": "Band", "track_id": "t1"}},
    ]


@dataclass
class Seeded:
    """What the seeding created: ids generated paths sometimes use."""

    story_ids: list[str] = field(default_factory=list)
    highlight_ids: list[str] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=lambda: [FUZZ_USER, ALICE, BOB])
    position: int = 0

    def path_values(self) -> dict[str, list[str]]:
        return {
            "story_id": [*self.story_ids, UNKNOWN_ID],
            "highlight_id": [*self.highlight_ids, UNKNOWN_ID],
            "user_id": [*self.user_ids, "nobody"],
        }


Write = Callable[[str, str, str, Any], Any]  # (method, path, user, json body) -> response with .status/.body


def seed(write: Write) -> Seeded:
    """Follows, close friends, mutes, stories of every privacy, engagement, a reshare, an edit and
    highlights, by ``fuzzer`` and others."""
    out = Seeded()

    def do(method: str, path: str, user: str, body: Any = None, expect: int | None = None) -> Any:
        resp = write(method, path, user, body)
        assert 200 <= resp.status < 300 and (expect is None or resp.status == expect), (method, path, resp)
        out.position = max(out.position, int(resp.headers["x-stories-position"]))
        return resp

    def story(user: str, **body: Any) -> str:
        body.setdefault("story_type", "text")
        if body["story_type"] == "text":
            body.setdefault("text_content", f"a story by {user}")
        story_id = do("POST", S, user, body, 201).body["story_id"]
        out.story_ids.append(story_id)
        return story_id

    for a, b in [(FUZZ_USER, ALICE), (ALICE, FUZZ_USER), (FUZZ_USER, BOB), (BOB, FUZZ_USER), (ALICE, BOB)]:
        do("PUT", f"/api/v1/following/{b}", a)
    do("POST", f"/api/v1/close-friends/{ALICE}", FUZZ_USER, expect=201)
    do("POST", f"/api/v1/close-friends/{FUZZ_USER}", ALICE, expect=201)

    mine_text = story(FUZZ_USER, privacy="public")
    mine_stickers = story(FUZZ_USER, story_type="image", media_url=MEDIA, privacy="public", stickers=all_stickers())
    mine_cf = story(FUZZ_USER, privacy="close_friends")
    story(FUZZ_USER, privacy="custom", allowed_viewer_ids=[ALICE])
    story(FUZZ_USER, story_type="video", media_id="vid-1", privacy="followers")
    deleted = story(FUZZ_USER, privacy="public")
    do("DELETE", f"{S}/{deleted}", FUZZ_USER, expect=204)

    alice_stickers = story(ALICE, story_type="image", media_url=MEDIA, privacy="public", stickers=all_stickers())
    alice_followers = story(ALICE, privacy="followers")
    story(ALICE, privacy="close_friends")
    story(ALICE, privacy="custom", allowed_viewer_ids=[BOB])  # hidden from fuzzer
    story(ALICE, privacy="public", hidden_from_ids=[FUZZ_USER])  # hidden from fuzzer
    story(BOB, privacy="public", allow_replies="off")
    story(BOB, privacy="followers")

    for viewer in (ALICE, BOB):
        do("POST", f"{S}/{mine_text}/view", viewer, expect=202)
        do("POST", f"{S}/{mine_stickers}/view", viewer, expect=202)
    do("POST", f"{S}/{mine_stickers}/interact", ALICE, {"sticker_index": 0, "option_index": 1})
    do("POST", f"{S}/{mine_stickers}/interact", ALICE, {"sticker_index": 2, "text": "why?"})
    do("POST", f"{S}/{mine_stickers}/reply", ALICE, {"text": "nice"}, 201)
    do("POST", f"{S}/{alice_stickers}/view", FUZZ_USER, expect=202)
    do("POST", f"{S}/{alice_followers}/view", FUZZ_USER, expect=202)
    # product depth: a navigation, a reshare, an edit, a mute kept and one undone (a tombstone)
    do("POST", f"{S}/{mine_text}/navigate", ALICE, {"action": "exit"}, 202)
    out.story_ids.append(do("POST", f"{S}/{alice_stickers}/share", FUZZ_USER, None, 201).body["story_id"])
    do("PATCH", f"{S}/{mine_text}", FUZZ_USER, {"background_color": "#112233"}, 200)
    do("PUT", f"/api/v1/muted/{BOB}", FUZZ_USER)
    do("PUT", f"/api/v1/muted/{ALICE}", FUZZ_USER)
    do("DELETE", f"/api/v1/muted/{ALICE}", FUZZ_USER, expect=204)

    for user, title, ids in [
        (FUZZ_USER, "Summer", [mine_text, mine_stickers]),
        (FUZZ_USER, "Friends", [mine_cf]),
        (ALICE, "Alice's", [alice_stickers, alice_followers]),
    ]:
        out.highlight_ids.append(do("POST", H, user, {"title": title, "story_ids": ids}, 201).body["highlight_id"])
    do("PATCH", f"{H}/{out.highlight_ids[1]}", FUZZ_USER, {"is_pinned": True})
    return out


# -- request accounting -----------------------------------------------------------------------


@dataclass
class FuzzStats:
    """Requests the fuzzer sent to one API, by operation and status."""

    api: str
    requests: int = 0
    by_operation: Counter = field(default_factory=Counter)
    by_status: Counter = field(default_factory=Counter)
    started: float | None = None
    finished: float | None = None
    # (operation, status, error code) of undocumented statuses tolerated as known findings
    tolerated: Counter = field(default_factory=Counter)
    position_503: int = 0  # 503 position_not_reached answers to a fuzzed min_position
    # (operation, status, regression test) of known bugs the fuzzer hit again
    known_bugs: Counter = field(default_factory=Counter)

    def record(self, case: schemathesis.Case, response: schemathesis.Response) -> None:
        if self.started is None:
            self.started = time.monotonic()
        self.finished = time.monotonic()
        self.requests += 1
        self.by_operation[case.operation.label] += 1
        self.by_status[response.status_code] += 1

    @property
    def seconds(self) -> float:
        return (self.finished or 0) - (self.started or 0)

    def summary(self) -> str:
        ops = "\n".join(f"    {n:5d}  {label}" for label, n in sorted(self.by_operation.items()))
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.by_status.items()))
        text = (
            f"{self.api}: {self.requests} requests in {self.seconds:.1f}s\n"
            f"  by status: {statuses}\n  by operation:\n{ops}"
        )
        if self.position_503:
            text += f"\n  503 position_not_reached (min_position beyond the read models): {self.position_503}"
        if self.tolerated:
            known = "\n".join(
                f"    {n:5d}  {op} -> {status} ({code})" for (op, status, code), n in sorted(self.tolerated.items())
            )
            text += f"\n  undocumented statuses tolerated as known findings:\n{known}"
        if self.known_bugs:
            bugs = "\n".join(
                f"    {n:5d}  {op} -> {status} (known bug: test_fuzz_regressions.py::{test})"
                for (op, status, test), n in sorted(self.known_bugs.items())
            )
            text += f"\n  known bugs hit again (strict xfail regression tests):\n{bugs}"
        return text


# -- known findings -------------------------------------------------------------------------

# Statuses the APIs really return that their generated /openapi.json does not list, found by the
# fuzzer (status_code_conformance). They are findings about stories/http.py::openapi_document
# (the Route tables' ``errors``), not bugs in the handlers. The fuzz run tolerates exactly these
# (operation, status) pairs, and only while the document still lacks them: once a status is
# documented the check passes on its own, and the strict-xfail tests in test_fuzz_regressions.py
# that read the live document start failing, which says: delete the entry here.
KNOWN_UNDOCUMENTED: dict[tuple[str, str], set[int]] = {}

MAX_U64 = 2**64 - 1


def known_bug(case: schemathesis.Case, response: schemathesis.Response) -> str | None:
    """The test in test_fuzz_regressions.py (a strict xfail) that pins this 5xx, when it is a known
    bug; None for anything else. Like KNOWN_UNDOCUMENTED, a signature that no longer occurs costs
    nothing, and the xfail turning into a pass says when to delete it. (None known now.)"""
    return None


# STORIES_FUZZ_DISCOVER=1: tolerate (and list in the summary) every undocumented status, to see
# all of them in one run instead of the first per operation.
DISCOVER = os.environ.get("STORIES_FUZZ_DISCOVER") == "1"


def position_not_reached(response: schemathesis.Response) -> bool:
    """The contract's read-your-writes answer: a fuzzed ``min_position`` beyond what the read
    models have reached is a 503 ``position_not_reached`` with ``Retry-After`` after a bounded wait.
    That 503 is the documented answer, not a server error; any other 5xx (another 503 included)
    still fails the run."""
    if response.status_code != 503 or "retry-after" not in response.headers:  # lower-cased names
        return False
    try:
        error = response.json()["error"]
        return error["code"] == "position_not_reached" and error["details"]["requested"] > error["details"]["current"]
    except Exception:
        return False


def _error_code(response: schemathesis.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except Exception:
        return "?"


# -- schemas ---------------------------------------------------------------------------------


def _seeded_paths(values: dict[str, list[str]]) -> Callable:
    def hook(context: schemathesis.HookContext, strategy: st.SearchStrategy) -> st.SearchStrategy:
        def with_known(params: Any) -> st.SearchStrategy:
            if not isinstance(params, dict) or not any(k in values for k in params):
                return st.just(params)
            return st.fixed_dictionaries(
                {k: (st.sampled_from(values[k]) if k in values else st.just(v)) for k, v in params.items()}
            )

        return st.one_of(strategy, strategy.flatmap(with_known))

    return hook


def _seeded_bodies(story_ids: list[str]) -> Callable:
    def hook(context: schemathesis.HookContext, strategy: st.SearchStrategy) -> st.SearchStrategy:
        def with_known(body: Any) -> st.SearchStrategy:
            if not isinstance(body, dict) or not isinstance(body.get("story_ids"), list):
                return st.just(body)
            return st.lists(st.sampled_from(story_ids), min_size=1, max_size=4).map(
                lambda ids: {**body, "story_ids": ids}
            )

        return st.one_of(strategy, strategy.flatmap(with_known))

    return hook


def load_schema(base_url: str, token: str, seeded: Seeded, stats: FuzzStats) -> schemathesis.BaseSchema:
    """The API's own /openapi.json, with auth, seeded ids and request accounting attached."""
    # with-security-parameters = false: the bearer scheme is not a generated parameter, so negative
    # cases never drop or mangle the token; every request is authenticated by the provider below
    # (401s are covered by test_fuzz_regressions.py).
    config = schemathesis.Config.from_dict({"seed": SEED_CONFIG, "generation": {"with-security-parameters": False}})
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config, wait_for_schema=15)
    schema.config.update(base_url=base_url, request_timeout=15)

    class FixedUserToken:
        """A valid HS256 token for ``fuzzer`` on every request."""

        def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
            return token

        def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
            case.headers = case.headers or {}
            case.headers["Authorization"] = f"Bearer {data}"

    # retry_on=[]: a 401 is an answer to check, not a reason to fetch a token again.
    schema.auth(refresh_interval=None, retry_on=[])(FixedUserToken)
    schema.hook("before_generate_path_parameters")(_seeded_paths(seeded.path_values()))
    schema.hook("before_generate_body")(_seeded_bodies([*seeded.story_ids, UNKNOWN_ID]))

    @schema.hook("filter_failure")
    def expected_answers(
        context: schemathesis.HookContext, failure: Any, case: schemathesis.Case, response: schemathesis.Response
    ) -> bool:
        """Drop (and count) the failures that are not failures: see ``position_not_reached`` and
        ``KNOWN_UNDOCUMENTED``. Everything else fails the run."""
        if isinstance(failure, ServerError) and position_not_reached(response):
            stats.position_503 += 1
            return False
        if isinstance(failure, (ServerError, UndefinedStatusCode)) and (bug := known_bug(case, response)):
            if isinstance(failure, ServerError):  # one response fails both checks: count it once
                stats.known_bugs[(case.operation.label, response.status_code, bug)] += 1
            return False
        if not isinstance(failure, UndefinedStatusCode):
            return True
        key = (case.operation.method.upper(), case.operation.path)
        if not (DISCOVER or response.status_code in KNOWN_UNDOCUMENTED.get(key, ())):
            return True
        stats.tolerated[(case.operation.label, response.status_code, _error_code(response))] += 1
        return False

    @schema.hook("after_call")
    def count(context: schemathesis.HookContext, case: schemathesis.Case, response: schemathesis.Response) -> None:
        stats.record(case, response)

    return schema


# -- processes -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def command_side(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CommandApi, Seeded]]:
    """A seeded ``stories command-api`` (rate limit off)."""
    api = launch_command_api(tmp_path_factory.mktemp("fuzz-command-api"), rate_limit_per_s=0)
    try:
        seeded = seed(lambda m, p, u, b: api.request(m, p, u, b) if b is not None else api.request(m, p, u))
        yield api, seeded
    finally:
        api.stop()


@pytest.fixture(scope="module")
def query_side(
    tmp_path_factory: pytest.TempPathFactory, mongodb_url: str, redis_url: str
) -> Iterator[tuple[ReadSide, Seeded]]:
    """A seeded command API + projector + query API; min_position waits are short (a fuzzed
    ``min_position`` above the log head answers 503 after 0.05 s, not 2 s)."""
    side = launch_read_side(tmp_path_factory.mktemp("fuzz-read-side"), mongodb_url, redis_url, min_position_wait_s=0.05)
    try:
        seeded = seed(lambda m, p, u, b: side.command(m, p, u, b) if b is not None else side.command(m, p, u))
        # An expired story of the fuzzer's own, so /stories/archive has something in it.
        expired, position = side.backdated_story(FUZZ_USER, hours_ago=30, privacy="public")
        seeded.story_ids.append(expired)
        seeded.position = max(seeded.position, position)
        # Wait until the read models have applied everything seeded.
        deadline = time.monotonic() + 30
        while True:
            resp = side.query(f"{S}/feed", FUZZ_USER, at=seeded.position)
            if resp.status == 200:
                break
            assert time.monotonic() < deadline, (resp, side.logs())
            time.sleep(0.1)
        yield side, seeded
    finally:
        side.stop()
        cleanup_read_side(side)


_STATS: list[FuzzStats] = []  # printed in the terminal summary


@pytest.fixture(scope="module")
def command_stats() -> FuzzStats:
    _STATS.append(FuzzStats("command API"))
    return _STATS[-1]


@pytest.fixture(scope="module")
def query_stats() -> FuzzStats:
    _STATS.append(FuzzStats("query API"))
    return _STATS[-1]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    ran = [stats for stats in _STATS if stats.requests]
    if ran:
        terminalreporter.section("schemathesis fuzzing")
        for stats in ran:
            terminalreporter.write_line(stats.summary())


@pytest.fixture(scope="module")
def command_schema(command_side, command_stats) -> schemathesis.BaseSchema:
    api, seeded = command_side
    return load_schema(api.base_url, api.token(FUZZ_USER, ttl=3600), seeded, command_stats)


@pytest.fixture(scope="module")
def query_schema(query_side, query_stats) -> schemathesis.BaseSchema:
    side, seeded = query_side
    return load_schema(f"http://127.0.0.1:{side.query_port}", side.token(FUZZ_USER, ttl=3600), seeded, query_stats)


# -- pytest 9.2 compatibility shim -----------------------------------------------------------
# schemathesis 4.32.5's lazy ``from_fixture(...).parametrize()`` reads and writes
# ``request.node._nodeid`` (to label each operation's subtest). pytest 9.2 keeps node ids in
# ``Node._id`` and has no ``_nodeid`` any more, so every lazily parametrized test fails with
# "AttributeError: 'Function' object has no attribute '_nodeid'". Give ``Function`` a read-only
# ``_nodeid`` (writes are ignored: results are still reported per operation as subtests, labelled
# "METHOD /path"). Only on a pytest that lacks the attribute; drop this once schemathesis
# supports pytest 9.2.
def _install_nodeid_shim() -> None:
    from _pytest import nodes, python

    if "_id" in getattr(nodes.Node, "__slots__", ()) and not hasattr(python.Function, "_nodeid"):
        python.Function._nodeid = property(lambda self: self.nodeid, lambda self, value: None)


_install_nodeid_shim()
