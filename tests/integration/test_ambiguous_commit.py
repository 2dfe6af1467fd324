"""An ambiguous commit on PostgreSQL (issue 11 item 6): the connection drops after ``COMMIT``
reached the server and before its answer came back. eventsourcing retries the insert, which
fails on the batch's own rows; the group committer must see that the batch is stored and answer
from it, instead of re-running its commands (a second story, a second view, a stored vote
answered 409).

A small asyncio TCP proxy sits between the store and PostgreSQL; armed, it forwards the next
``COMMIT``, waits until the server has answered it (the transaction is durable), then drops the
connection without passing the answer on.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from urllib.parse import urlparse, urlunparse

import pytest

from commands import models
from commands import use_cases as uc
from commands.application import Answer, Idempotency, StoriesApplication
from commands.event_store import EventStore
from commands.group_commit import GroupCommitter
from commands.idempotency import request_fingerprint
from domain.platform import Platform
from write_api.app import answer_body

pytestmark = pytest.mark.timeout(120)

POLL = {"sticker_type": "poll", "poll": {"question": "Tea?", "options": [{"text": "yes"}, {"text": "no"}]}}
COMMIT = b"COMMIT"


class CommitDropper:
    """A TCP proxy in its own thread and event loop. ``arm()``: the next connection to send
    ``COMMIT`` has it forwarded, and is cut once the server's ``COMMIT`` answer arrives."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.loop = asyncio.new_event_loop()
        self.armed = threading.Event()
        self.dropped = threading.Event()
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, name="commit-dropper", daemon=True)

    def start(self) -> CommitDropper:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(10)
        return self

    def arm(self) -> None:
        self.dropped.clear()
        self.armed.set()

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in self._connections:
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            await self._relay(client_r, client_w)
        finally:
            self._connections.discard(task)
            client_w.transport.abort()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        commit_forwarded = asyncio.Event()

        def cut() -> None:
            for writer in (client_w, server_w):
                transport = writer.transport
                if not transport.is_closing():
                    transport.abort()

        async def upstream() -> None:  # the store -> PostgreSQL
            tail = b""
            try:
                while data := await client_r.read(65536):
                    window = tail + data
                    if self.armed.is_set() and COMMIT in window:
                        self.armed.clear()
                        commit_forwarded.set()
                    server_w.write(data)
                    await server_w.drain()
                    tail = window[-len(COMMIT) :]
            except (ConnectionError, OSError):
                pass
            finally:
                cut()

        async def downstream() -> None:  # PostgreSQL -> the store
            tail = b""
            try:
                while data := await server_r.read(65536):
                    window = tail + data
                    if commit_forwarded.is_set() and COMMIT + b"\x00" in window:
                        # CommandComplete "COMMIT": the batch is stored. Its answer never arrives.
                        self.dropped.set()
                        return
                    client_w.write(data)
                    await client_w.drain()
                    tail = window[-len(COMMIT) - 1 :]
            except (ConnectionError, OSError):
                pass
            finally:
                cut()

        await asyncio.gather(upstream(), downstream())


@pytest.fixture
def dropper(postgres_url):
    parsed = urlparse(postgres_url)
    proxy = CommitDropper(parsed.hostname or "127.0.0.1", parsed.port or 5432).start()
    yield proxy
    proxy.stop()


def through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parsed = urlparse(url)
    user = parsed.netloc.rsplit("@", 1)[0] + "@" if "@" in parsed.netloc else ""
    return urlunparse(parsed._replace(netloc=f"{user}127.0.0.1:{port}"))


def test_a_batch_whose_commit_answer_is_lost_is_stored_and_answered_once(postgres_schema_url, dropper):
    store = EventStore(through(postgres_schema_url, dropper.port))
    committer = GroupCommitter(store)
    app = StoriesApplication(store, committer, Platform.VIGNETTE)

    def create(user: str, **body):
        return uc.CreateStory(
            user,
            models.CreateStory.model_validate(
                {"story_type": "text", "text_content": "hi", "privacy": "public", **body}
            ),
        )

    async def scenario():
        (created, _) = await app.execute(create("owner", stickers=[POLL]))
        story = str(created.story_id)
        keyed_body = {"story_type": "text", "text_content": "keyed", "privacy": "public"}
        fingerprint = request_fingerprint("POST", "/api/v1/stories", keyed_body)
        key = Idempotency("keyed", "k-1", fingerprint, lambda result: Answer(201, answer_body(result)))
        # Hold the writer thread in a first batch of its own while the commands queue up, so
        # that they share the next batch: the one whose COMMIT answer is lost.
        gate = threading.Event()
        held = asyncio.ensure_future(committer.run(lambda batch: gate.wait(10)))
        await asyncio.sleep(0.3)
        vote = models.Interact.model_validate({"sticker_index": 0, "option_index": 1})
        commands = [
            app.execute(uc.Interact("voter", story, vote)),
            app.execute(uc.ViewStory("viewer", story)),
            app.execute(create("author")),
            app.execute(uc.CreateStory("keyed", models.CreateStory.model_validate(keyed_body)), key),
        ]
        # Their keys exist already (commands/personal_data.py), so the next COMMIT is the batch's.
        store.keys.ensure(["voter", "viewer", "author", "keyed"])
        tasks = [asyncio.ensure_future(c) for c in commands]
        await asyncio.sleep(0.3)
        dropper.arm()
        gate.set()
        await held
        answers = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
        again = models.CreateStory.model_validate(keyed_body)
        replay = await app.execute(uc.CreateStory("keyed", again), key)
        return story, answers, replay

    try:
        _story, answers, replay = asyncio.run(scenario())
        assert dropper.dropped.is_set(), "the proxy never cut a connection after a COMMIT"
        assert committer.unacknowledged == 1 and committer.conflicts == 0
        assert not any(isinstance(a, BaseException) for a in answers), answers
        (vote, p_vote), (view, p_view), (created, p_created), (keyed, p_keyed) = answers
        kinds = (uc.StickerAnswered, uc.Counted, uc.StoryPosted, uc.StoryPosted)
        assert all(isinstance(a, kind) for a, kind in zip((vote, view, created, keyed), kinds)), answers
        assert view.counted is True
        assert replay == (Answer(201, answer_body(keyed)), p_keyed)  # the stored first answer, at the same position

        events = list(store.read())
        by_type = Counter(e.event.event_type for e in events)
        assert by_type == {"StoryCreated": 3, "PollVoted": 1, "StoryViewed": 1}, by_type
        at = {(e.event.event_type, getattr(e.event, "user_id", None)): e.position for e in events}
        assert at[("PollVoted", "voter")] == p_vote
        assert at[("StoryCreated", "author")] == p_created
        assert at[("StoryCreated", "keyed")] == p_keyed
        assert [e.position for e in events if e.event.event_type == "StoryViewed"] == [p_view]
    finally:
        committer.close()
        store.close()
