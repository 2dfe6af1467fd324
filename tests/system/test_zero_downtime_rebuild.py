"""``stories replay --into NAME`` under load, with the real processes (command API, projector,
query API, expirer, relay): a client polling the query API throughout never gets a 5xx nor an
answer older than one before it (``X-Stories-Position`` never goes back), and after the switch the
answers come from the new generation, which the projector keeps following."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
import uuid

import orjson

from projections import generations
from tests.e2e.read_side import STORIES, http_request
from tests.system.conftest import Load, assert_query_api_counts, launch_stack, teardown_stack

S = "/api/v1/stories"


class Poller:
    """A client reading the query API in a loop: statuses and served positions, in order."""

    def __init__(self, stack, user: str, paths) -> None:
        self.stack, self.paths = stack, paths
        self.token = stack.side.token(user, ttl=3600)
        self.answers: list[tuple[float, str, int, int]] = []  # (time, path, status, position)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            path = self.paths()[i % len(self.paths())]
            i += 1
            try:
                resp = http_request(
                    "127.0.0.1",
                    self.stack.side.query_port,
                    "GET",
                    path,
                    headers={"Authorization": f"Bearer {self.token}"},
                )
                self.answers.append((time.monotonic(), path, resp.status, int(resp.headers["x-stories-position"])))
            except OSError as error:  # a refused connection would be downtime too
                self.answers.append((time.monotonic(), path, 599, -1))
                print("poller:", error)
            time.sleep(0.01)


def _stories(*args: str, env, cwd, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([STORIES, *args], env=env, cwd=cwd, capture_output=True, timeout=timeout)


def test_replay_into_a_new_generation_switches_without_downtime(tmp_path, mongodb_url, redis_url):
    stack = launch_stack(tmp_path / "stack", mongodb_url, redis_url)
    env, cwd = stack.env, stack.side.data_dir
    gen = generations.named(stack.side.mongodb_database, stack.side.redis_prefix, "b")
    try:
        tag = uuid.uuid4().hex[:6]
        users = [f"user{i}-{tag}" for i in range(12)]
        load = Load(stack, users, seed=11)
        stop_load = threading.Event()

        def drive() -> None:
            asyncio.run(load.run(workers=6, pause_s=0.01, stop=_async_event(stop_load)))

        loader = threading.Thread(target=drive, daemon=True)
        loader.start()
        time.sleep(3)  # some history to rebuild
        story_paths = lambda: [f"{S}/feed", *(f"{S}/{story}" for story, _ in load.stories[:5])]  # noqa: E731
        poller = Poller(stack, users[0], story_paths)
        poller.thread.start()
        time.sleep(1)

        started = time.monotonic()
        out = _stories("replay", "--into", "b", env=env, cwd=cwd)
        assert out.returncode == 0, out.stderr.decode()[-3000:]
        print(out.stderr.decode()[-1500:], out.stdout.decode().strip(), f"({time.monotonic() - started:.1f} s)")
        pointer = stack.redis().get(generations.pointer_key(stack.side.redis_prefix))
        assert orjson.loads(pointer)["name"] == "b"

        time.sleep(4)  # the load goes on after the switch: the projector follows generation b
        stop_load.set()
        loader.join(timeout=60)
        assert not load.problems, load.problems[:10]
        head = stack.head()
        deadline = time.monotonic() + 60
        mongo, r = stack.mongo(), stack.redis()
        while generations.positions(mongo, r, gen)[0] < head:
            assert time.monotonic() < deadline, "the projector did not follow generation b"
            time.sleep(0.2)
        time.sleep(1.5)  # the query API reads the pointer once a second
        poller.stop.set()
        poller.thread.join(timeout=10)

        # No 5xx, and positions never went back, for this client, across the switch.
        assert poller.answers, "the poller got no answers"
        bad = [a for a in poller.answers if a[2] >= 500]
        assert not bad, bad[:5]
        went_back = [(a, b) for a, b in zip(poller.answers, poller.answers[1:]) if b[3] < a[3]]
        assert not went_back, went_back[:5]
        print(f"{len(poller.answers)} answers polled, positions {poller.answers[0][3]} .. {poller.answers[-1][3]}")

        # The old (default) generation stops moving; the served answers come from generation b:
        # drop the default one, and the query API still serves every count the load made.
        listed = _stories("generations", env=env, cwd=cwd)
        assert listed.returncode == 0, listed.stderr.decode()
        lines = listed.stdout.decode().splitlines()
        print("\n".join(lines))
        assert any(line.startswith(("* b ", "*b")) or line.split()[:2] == ["*", "b"] for line in lines), lines
        refused = _stories("generations", "--drop", "b", env=env, cwd=cwd)
        assert refused.returncode == 2, refused.stdout.decode()
        dropped = _stories("generations", "--drop", "default", env=env, cwd=cwd)
        assert dropped.returncode == 0, dropped.stderr.decode()
        assert stack.side.mongodb_database not in mongo.list_database_names()
        assert_query_api_counts(stack, load)
        # The expirer and the relay kept their keys under the configured prefix.
        assert r.get(stack.side.redis_prefix + "relay:position:redis") is not None
        assert not list(r.scan_iter(match=gen.redis_prefix + "relay:*"))
        stack.check_alive()
    finally:
        teardown_stack(stack, (gen.mongodb_database,), (gen.redis_prefix,))


def _async_event(flag: threading.Event) -> asyncio.Event:
    """An asyncio.Event (of the loop that awaits it) set when ``flag`` is."""

    class Bridge(asyncio.Event):
        def is_set(self) -> bool:  # Load.run's workers check it between commands
            return flag.is_set()

    return Bridge()
