"""The soak: does storage level off under steady traffic? (``python -m bench soak``)

Starts the real processes (command API, query API, projector, expirer; the relay with
``--relay``) on fresh embedded servers (SecantusDB, Valkey), in dev mode, on one simulated clock
(``STORIES_SIMULATED_CLOCK``, every process agrees on it), and drives ``--days`` simulated days
of steady traffic through the command API over HTTP: a fixed population of users with a social
graph (a few follows and unfollows a day), stories with stickers (poll, quiz, question, slider,
countdown) living 6/12/24/48 h with some close-friends and custom audiences, views, votes,
answers, replies, a few deletes, highlights; the expirer expires stories on its own.

At the end of every simulated day it records Redis ``used_memory`` and key count, MongoDB's
per-collection document counts and sizes (``collStats`` / ``dbStats``) and the size of its data
directory, the largest answer (bytes) any query endpoint gave the driver that day, and the feed
page (``limit=20``) latency p50/p99 of that day. It prints a table, writes the per-day figures
to ``bench/soak_results.json`` and returns summary rows for RESULTS.md (``make bench``).

Goals (reported, never asserted): from day 3 to the last day, Redis used_memory and key count
stay within ±10 % of day 3's, the feed page p99 within ±20 %, and no answer exceeds 256 KiB.

Knobs: ``python -m bench soak --days N --scale X --users U`` (or BENCH_SOAK_DAYS /
BENCH_SOAK_SCALE / BENCH_SOAK_USERS / BENCH_SOAK_SEED). The default scale (2880: one simulated
hour = 1.25 real s) runs 14 days in about 7 minutes of traffic.

``tests/system/test_soak.py`` uses the same stack and driver (smaller, and in two waves).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH_DIR,
    OUT_DIR,
    SECRET,
    STORIES_BIN,
    EmbeddedBackends,
    Process,
    Row,
    free_port,
    log,
    median,
    mint_tokens,
    percentile,
    stories_env,
)
from projections.redis_schema import VIEW_NAME
from stories.clock import SimulatedClock, simulated_clock_spec

S, H = "/api/v1/stories", "/api/v1/highlights"
RESULTS_JSON = BENCH_DIR / "soak_results.json"
DEFAULT_DAYS, DEFAULT_SCALE, DEFAULT_USERS = 14, 2880.0, 300
LIFETIMES_H = (6, 12, 24, 48)
PAGE_LIMIT_BYTES = 256 * 1024


# -- the stack ------------------------------------------------------------------------------


class LoggedProcess(Process):
    """bench.common.Process with its log in a directory of our choice."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115  # the child writes to it until stop() closes it
        self.proc = subprocess.Popen(
            list(argv),
            env=env,
            cwd=log_dir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


_STORY_TAG = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class SoakStack:
    """Fresh embedded SecantusDB + Valkey and the real processes, all on one simulated clock that
    starts at the real now (Redis TTLs are absolute times on Valkey's real clock: an origin in the
    past would make every safety-net TTL fire at once) and runs ``scale`` times faster."""

    PROCESSES = ("command-api", "projector", "query-api", "expirer")

    def __init__(
        self,
        workdir: Path,
        scale: float,
        *,
        relay: bool = False,
        expiry_interval_s: float = 1.0,
        log_dir: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.log_dir = log_dir or OUT_DIR / "soak"
        workdir.mkdir(parents=True, exist_ok=True)
        epoch = time.time()
        origin = datetime.fromtimestamp(epoch, UTC).replace(microsecond=0)
        epoch = origin.timestamp()  # the timeline starts at the real now, to the second
        self.clock = SimulatedClock(origin, epoch, scale)
        self.scale = scale
        tag = uuid.uuid4().hex[:8]
        self.prefix, self.database = f"soak-{tag}:", f"soak_{tag}"
        self.backends = EmbeddedBackends(workdir / "servers")
        self.processes: dict[str, LoggedProcess] = {}
        self.command_port, self.query_port = free_port(), free_port()
        self.env = stories_env(
            workdir,
            STORIES_DEV_MODE="true",
            STORIES_SIMULATED_CLOCK=simulated_clock_spec(origin, epoch, scale),
            STORIES_MONGODB_URL=self.backends.mongo_url,
            STORIES_MONGODB_DATABASE=self.database,
            STORIES_REDIS_URL=self.backends.redis_url,
            STORIES_REDIS_PREFIX=self.prefix,
            STORIES_BROKER_URL=self.backends.redis_url,
            STORIES_BROKER_PREFIX=f"soak-{tag}",
            STORIES_COMMAND_PORT=str(self.command_port),
            STORIES_QUERY_PORT=str(self.query_port),
            STORIES_EXPIRY_INTERVAL_S=str(expiry_interval_s),
            **(extra_env or {}),
        )
        self.event_store_url = f"sqlite:///{(workdir / 'events.sqlite3').resolve()}"
        self.env["STORIES_EVENT_STORE_URL"] = self.event_store_url
        try:
            self._start("command-api")
            self.processes["command-api"].wait_http(self.command_port, timeout=60)
            self._start("projector")
            self._start("query-api")
            self.processes["query-api"].wait_http(self.query_port, "/ready", timeout=60)
            self._start("expirer")
            if relay:
                self._start("relay")
            time.sleep(0.5)
            self.check_alive()
        except BaseException:
            self.stop()
            raise
        import redis
        from pymongo import MongoClient

        from commands.event_store import EventStore

        self.redis = redis.Redis.from_url(self.backends.redis_url, socket_timeout=30)
        self.mongo = MongoClient(self.backends.mongo_url, serverSelectionTimeoutMS=5000)
        self.store = EventStore(self.event_store_url)

    def _start(self, name: str) -> None:
        self.processes[name] = LoggedProcess(f"soak-{name}", [str(STORIES_BIN), name], self.env, self.log_dir)

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.proc.returncode}; see {proc.log_path}:\n{proc.tail()}")

    def logs(self, n: int = 15) -> str:
        return "\n".join(f"--- {name}\n{p.tail(n)}" for name, p in self.processes.items())

    def now(self) -> datetime:
        return self.clock()

    def sleep_until(self, moment: datetime) -> float:
        """Sleep (real time) until the simulated clock reads ``moment``; how long it slept."""
        wait = (moment - self.now()).total_seconds() / self.scale
        if wait > 0:
            time.sleep(wait)
        return max(wait, 0.0)

    # positions ----------------------------------------------------------------------------

    def head(self) -> int:
        return self.store.head()

    def positions(self) -> tuple[int, int, int]:
        """(log head, MongoDB views' position, Redis views' position), read from the stores."""
        from projections.redis_views import Keys

        doc = self.mongo[self.database]["projection_positions"].find_one({"_id": "mongo_views"}) or {}
        redis_position = int(self.redis.get(Keys(self.prefix).position(VIEW_NAME)) or 0)
        return self.head(), doc.get("position", 0), redis_position

    def wait_caught_up(self, timeout: float = 60.0) -> tuple[int, int, int]:
        deadline = time.monotonic() + timeout
        while True:
            head, m, r = last = self.positions()
            if min(m, r) >= head:
                return last
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"read models not caught up after {timeout:.0f} s: head {head}, mongo {m}, redis {r}\n{self.logs()}"
                )
            self.check_alive()
            time.sleep(0.1)

    # storage ------------------------------------------------------------------------------

    def redis_keys(self) -> list[bytes]:
        return list(self.redis.scan_iter(match=self.prefix + "*", count=2000))

    def story_stamps(self, keys: list[bytes]) -> list[bytes]:
        """An ended story's stamps (``at:{<story id>}``): they outlive the story by a fixed real
        time (``redis_views.STAMP_LIFE_MS`` + grace) so that a stalled projector cannot bring the
        story back; and the erasure indexes (``named:{<user>}``), which expire with the last story
        they list, plus grace. Bounded by age, not by the simulated clock, so counted apart."""
        head, named = f"{self.prefix}at:{{".encode(), f"{self.prefix}named:{{".encode()
        return [
            k for k in keys if k.startswith(named) or (k.startswith(head) and _STORY_TAG.fullmatch(k[len(head) : -1]))
        ]

    def redis_stats(self, memory_per_key: bool = False) -> dict[str, Any]:
        info = self.redis.info("memory")
        keys = self.redis_keys()
        stamps = self.story_stamps(keys)
        keys = sorted(set(keys) - set(stamps))
        longest = max((int(self.redis.pttl(k)) for k in stamps), default=0)
        out = {
            "used_memory": int(info["used_memory"]),
            "dbsize": int(self.redis.dbsize()),
            "prefix_keys": len(keys),
            "story_stamps": len(stamps),
            "story_stamps_longest_ttl_ms": longest,
        }
        if memory_per_key:
            total = 0
            for i in range(0, len(keys), 1000):
                pipe = self.redis.pipeline(transaction=False)
                for key in keys[i : i + 1000]:
                    pipe.memory_usage(key, samples=0)
                total += sum(int(x or 0) for x in pipe.execute())
            out["prefix_key_bytes"] = total
        return out

    def mongo_stats(self) -> dict[str, Any]:
        db = self.mongo[self.database]
        collections: dict[str, dict[str, int]] = {}
        for name in sorted(db.list_collection_names()):
            try:
                stats = db.command("collStats", name)
                collections[name] = {
                    "count": int(stats.get("count", 0)),
                    "size": int(stats.get("size", 0)),
                    "index_size": int(stats.get("totalIndexSize", 0)),
                }
            except Exception:  # a server without collStats: counts only
                collections[name] = {"count": db[name].estimated_document_count(), "size": -1, "index_size": -1}
        out: dict[str, Any] = {"collections": collections, "documents": sum(c["count"] for c in collections.values())}
        try:
            stats = db.command("dbStats")
            out.update(
                data_size=int(stats.get("dataSize", 0)),
                storage_size=int(stats.get("storageSize", 0)),
                index_size=int(stats.get("indexSize", 0)),
            )
        except Exception:
            pass
        out["data_dir_bytes"] = dir_bytes(self.workdir / "servers" / "secantus")
        return out

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            try:
                self.processes[name].stop(timeout=15)
            except Exception as error:
                log(f"stopping {name}: {error!r}")
        for attr in ("redis", "mongo", "store"):
            client = getattr(self, attr, None)
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        if getattr(self, "backends", None) is not None:
            self.backends.close()

    def __enter__(self) -> SoakStack:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, name))
    return total


# -- the traffic ----------------------------------------------------------------------------


@dataclass
class Traffic:
    """Rates of the steady traffic (per simulated day unless said otherwise)."""

    follows_per_user: int = 25  # set up before the run
    close_friends_per_user: int = 4  # set up before the run
    posts_per_user: float = 1.0
    views_per_story: float = 12.0
    interactions_per_story: float = 4.0
    replies_per_story: float = 0.6
    feed_reads_per_user: float = 3.0
    story_reads_per_story: float = 2.0
    owner_reads_per_story: float = 2.0  # viewers, answers, insights of their own stories
    other_reads_per_user: float = 0.5  # user stories, highlights, a highlight, close friends, archive, user insights
    follow_changes: float = 8.0  # follows and as many unfollows a day
    close_friend_changes: float = 2.0
    deletes: float = 6.0
    highlight_writes: float = 12.0


@dataclass
class Story:
    story_id: str
    owner: str
    expires_at: datetime
    privacy: str
    audience: list[str]
    stickers: list[str]  # sticker types, by index
    deleted: bool = False


@dataclass
class Day:
    """What the driver saw during one simulated day."""

    feed_latencies: list[float] = field(default_factory=list)
    largest: dict[str, int] = field(default_factory=dict)  # endpoint -> largest answer in bytes
    statuses: Counter = field(default_factory=Counter)  # "kind status" -> count
    errors: int = 0
    feed_entries: list[int] = field(default_factory=list)

    def seen(self, kind: str, size: int) -> None:
        if size > self.largest.get(kind, -1):
            self.largest[kind] = size


def page_items(body: Any, legacy: str) -> list:
    """A list answer, as a page ``{"items", "next_cursor"}`` or in today's ``{legacy: [...]}``."""
    if isinstance(body, dict):
        if isinstance(body.get("items"), list):
            return body["items"]
        if isinstance(body.get(legacy), list):
            return body[legacy]
    return []


EXPECTED = {  # statuses the traffic may provoke legitimately (a story expiring or deleted under it)
    "post": {201},
    "view": {202, 404},
    "interact": {200, 404, 409},
    "reply": {201, 404},
    "delete": {204, 404},
    "follow": {200},
    "unfollow": {200, 204},
    "close_friend": {200, 201, 204, 409},  # 409: a racing duplicate
    "highlight": {201, 404, 409, 422},
    "highlight_add": {200, 404, 409, 422},
}


class Driver:
    """Steady traffic through the command API, reads through the query API (aiohttp, bounded
    concurrency); what it knows of the world is what it wrote."""

    def __init__(
        self, stack: SoakStack, users: int, seed: int = 7, traffic: Traffic | None = None, concurrency: int = 16
    ) -> None:
        self.stack = stack
        self.rng = random.Random(seed)
        self.traffic = traffic or Traffic()
        self.users = [f"soaker{i:04d}" for i in range(users)]
        self.tokens = dict(zip(self.users, mint_tokens(SECRET, self.users, ttl_s=12 * 3600)))
        self.following: dict[str, set[str]] = defaultdict(set)
        self.followers: dict[str, set[str]] = defaultdict(set)
        self.close: dict[str, set[str]] = defaultdict(set)
        self.stories: dict[str, Story] = {}
        self.live: list[str] = []
        self.own: dict[str, list[str]] = defaultdict(list)  # user -> their stories (not deleted), oldest first
        self.answered: set[tuple[str, str, int]] = set()
        self.countdowns: set[tuple[str, str, int]] = set()
        self.highlights: dict[str, list[tuple[str, set[str]]]] = defaultdict(list)
        self.accepted: Counter = Counter()
        self.unexpected: list[str] = []
        self.day = Day()
        self.concurrency = concurrency
        self._sem: asyncio.Semaphore | None = None
        self._session = None

    # -- HTTP --------------------------------------------------------------------------------

    async def __aenter__(self) -> Driver:
        import aiohttp

        self._sem = asyncio.Semaphore(self.concurrency)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency * 2), timeout=aiohttp.ClientTimeout(total=30)
        )
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._session.close()

    async def _call(
        self,
        kind: str,
        method: str,
        port: int,
        path: str,
        user: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, float]:
        import aiohttp

        hdrs = {"Authorization": f"Bearer {self.tokens[user]}", **(headers or {})}
        assert self._sem is not None
        async with self._sem:
            started = time.perf_counter()
            try:
                async with self._session.request(
                    method, f"http://127.0.0.1:{port}{path}", json=body, headers=hdrs
                ) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError) as error:
                self.day.errors += 1
                self.unexpected.append(f"{kind} {method} {path}: {error!r}")
                return 0, None, 0.0
            elapsed = time.perf_counter() - started
        self.day.statuses[f"{kind} {status}"] += 1
        if port == self.stack.query_port:
            self.day.seen(kind, len(raw))
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        return status, data, elapsed

    async def command(self, kind: str, method: str, path: str, user: str, body: Any = None) -> tuple[int, Any]:
        status, data, _ = await self._call(kind, method, self.stack.command_port, path, user, body)
        if status not in EXPECTED.get(kind, {200, 201, 202, 204}):
            self.unexpected.append(f"{kind} {method} {path} by {user} -> {status} {str(data)[:200]}")
        elif 200 <= status < 300:
            self.accepted[kind] += 1
        return status, data

    async def query(
        self, kind: str, path: str, user: str, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, float]:
        status, data, elapsed = await self._call(kind, "GET", self.stack.query_port, path, user, headers=headers)
        if (status >= 500 and status != 503) or status in (0, 400, 401, 415, 422):  # 503: min_position not reached yet
            self.unexpected.append(f"GET {path} by {user} -> {status} {str(data)[:200]}")
        return status, data, elapsed

    async def gather(self, jobs: list, spread_s: float = 0.0) -> None:
        """Run ``jobs`` in a random order; with ``spread_s``, start them evenly over that many real
        seconds (steady traffic, not one burst an hour)."""
        self.rng.shuffle(jobs)
        if spread_s <= 0 or len(jobs) < 2:
            await asyncio.gather(*jobs)
            return
        step = spread_s / len(jobs)

        async def later(job, delay: float) -> None:
            await asyncio.sleep(delay)
            await job

        await asyncio.gather(*(later(job, i * step) for i, job in enumerate(jobs)))

    # -- the social graph --------------------------------------------------------------------

    async def follow(self, a: str, b: str) -> None:
        status, _ = await self.command("follow", "PUT", f"/api/v1/following/{b}", a)
        if status == 200:
            self.following[a].add(b)
            self.followers[b].add(a)

    async def unfollow(self, a: str, b: str) -> None:
        status, _ = await self.command("unfollow", "DELETE", f"/api/v1/following/{b}", a)
        if 200 <= status < 300:
            self.following[a].discard(b)
            self.followers[b].discard(a)

    async def add_close_friend(self, a: str, b: str) -> None:
        status, _ = await self.command("close_friend", "POST", f"/api/v1/close-friends/{b}", a)
        if 200 <= status < 300:
            self.close[a].add(b)

    async def remove_close_friend(self, a: str, b: str) -> None:
        status, _ = await self.command("close_friend", "DELETE", f"/api/v1/close-friends/{b}", a)
        if 200 <= status < 300:
            self.close[a].discard(b)

    async def setup_graph(self) -> None:
        """Every user follows ``follows_per_user`` others (popularity skewed) and puts a few of
        those they follow on their close-friends list."""
        t = self.traffic
        weights = [1.0 / (1 + i) ** 0.5 for i in range(len(self.users))]
        jobs = []
        for user in self.users:
            picks: set[str] = set()
            want = min(t.follows_per_user, len(self.users) - 1)
            while len(picks) < want:
                other = self.rng.choices(self.users, weights)[0]
                if other != user:
                    picks.add(other)
            jobs += [self.follow(user, other) for other in sorted(picks)]
        await self.gather(jobs)
        jobs = []
        for user in self.users:
            pool = sorted(self.following[user] | self.followers[user])
            for friend in self.rng.sample(pool, min(t.close_friends_per_user, len(pool))):
                jobs.append(self.add_close_friend(user, friend))
        await self.gather(jobs)

    async def graph_changes(self, follows: int, close_changes: int) -> None:
        jobs = []
        for _ in range(follows):
            a, b = self.rng.sample(self.users, 2)
            jobs.append(self.follow(a, b))
            a = self.rng.choice(self.users)
            if self.following[a]:
                jobs.append(self.unfollow(a, self.rng.choice(sorted(self.following[a]))))
        for _ in range(close_changes):
            a = self.rng.choice(self.users)
            if self.close[a] and self.rng.random() < 0.5:
                jobs.append(self.remove_close_friend(a, self.rng.choice(sorted(self.close[a]))))
            elif self.following[a]:
                jobs.append(self.add_close_friend(a, self.rng.choice(sorted(self.following[a]))))
        await self.gather(jobs)

    # -- stories -----------------------------------------------------------------------------

    def sticker(self, kind: str, now: datetime) -> dict:
        r = self.rng
        place = {"x": round(r.random(), 3), "y": round(r.random(), 3), "width": 0.5, "height": 0.2}
        n = r.randint(2, 4)
        options = [{"text": f"option {i}"} for i in range(n)]
        payload = {
            "poll": {"question": "Which one?", "options": options},
            "quiz": {"question": "Guess?", "options": options, "correct_answer_index": r.randrange(n)},
            "question": {"text": "Ask me anything"},
            "slider": {"question": "How much?", "emoji": "🔥", "min_value": 0, "max_value": 10},
            "countdown": {"title": "Launch", "end_time": (now + timedelta(hours=r.randint(2, 96))).isoformat()},
            "mention": {"user_id": r.choice(self.users)},
            "location": {"name": "Lisbon", "lat": 38.72, "lng": -9.14},
            "music": {"title": "Song", "artist": "Band", "track_id": f"t{r.randrange(1000)}"},
            "link": {"url": "https://example.com/a", "label": "read"},
        }[kind]
        return {"sticker_type": kind, **place, kind: payload}

    async def post(self, user: str, now: datetime, lifetimes: Sequence[int] = LIFETIMES_H) -> None:
        r = self.rng
        kinds = r.sample(["poll", "quiz", "question", "slider", "countdown"], r.choice([1, 1, 2, 2, 3]))
        if r.random() < 0.3:
            kinds.append(r.choice(["mention", "location", "music", "link"]))
        roll = r.random()
        privacy = (
            "public" if roll < 0.3 else "followers" if roll < 0.82 else "close_friends" if roll < 0.95 else "custom"
        )
        body: dict[str, Any] = {
            "stickers": [self.sticker(k, now) for k in kinds],
            "privacy": privacy,
            "expires_in_hours": r.choice(list(lifetimes)),
        }
        if r.random() < 0.5:
            body.update(
                story_type="text",
                text_content=f"a day in the life of {user} " + "#" * r.randrange(80),
                background_color="#223344",
            )
        else:
            media = uuid.uuid4().hex
            body.update(
                story_type=r.choice(["image", "video"]),
                media_id=media,
                media_url=f"https://cdn.example.com/m/{media}.jpg",
                thumbnail_url=f"https://cdn.example.com/t/{media}.jpg",
            )
        if privacy == "custom":
            pool = sorted(self.followers[user]) or [u for u in self.users if u != user]
            body["allowed_viewer_ids"] = r.sample(pool, min(len(pool), r.randint(1, 8)))
        status, data = await self.command("post", "POST", S, user, body)
        if status != 201:
            return
        if privacy == "public":
            audience = sorted(self.followers[user]) + r.sample(self.users, 5)
        elif privacy == "followers":
            audience = sorted(self.followers[user])
        elif privacy == "close_friends":
            audience = sorted(self.close[user])
        else:
            audience = list(body["allowed_viewer_ids"])
        audience = [u for u in audience if u != user]
        story = Story(
            data["story_id"],
            user,
            datetime.fromisoformat(data["expires_at"].replace("Z", "+00:00")),
            privacy,
            audience,
            kinds,
        )
        self.stories[story.story_id] = story
        self.live.append(story.story_id)
        self.own[user].append(story.story_id)

    def prune(self, now: datetime) -> None:
        self.live = [s for s in self.live if not self.stories[s].deleted and self.stories[s].expires_at > now]

    def pick_live(self, now: datetime, margin: timedelta) -> Story | None:
        """A random live story with someone in its audience, that stays live a while longer."""
        for _ in range(8):
            if not self.live:
                return None
            story = self.stories[self.rng.choice(self.live)]
            if not story.deleted and story.expires_at > now + margin and story.audience:
                return story
        return None

    async def view(self, story: Story) -> None:
        await self.command("view", "POST", f"{S}/{story.story_id}/view", self.rng.choice(story.audience))

    async def interact(self, story: Story) -> None:
        r = self.rng
        interactive = [
            i for i, k in enumerate(story.stickers) if k in ("poll", "quiz", "question", "slider", "countdown")
        ]
        if not interactive:
            return
        index = r.choice(interactive)
        kind = story.stickers[index]
        user = r.choice(story.audience)
        key = (story.story_id, user, index)
        if kind in ("poll", "quiz"):
            if key in self.answered:
                return
            self.answered.add(key)
            body = {"sticker_index": index, "option_index": r.randrange(2)}
        elif kind == "slider":
            if key in self.answered:
                return
            self.answered.add(key)
            body = {"sticker_index": index, "value": round(r.uniform(0, 10), 1)}
        elif kind == "question":
            body = {"sticker_index": index, "text": f"question from {user}: " + "?" * r.randrange(60)}
        else:
            following = key in self.countdowns
            (self.countdowns.discard if following else self.countdowns.add)(key)
            body = {"sticker_index": index, "action": "unfollow" if following else "follow"}
        await self.command("interact", "POST", f"{S}/{story.story_id}/interact", user, body)

    async def reply(self, story: Story) -> None:
        await self.command(
            "reply",
            "POST",
            f"{S}/{story.story_id}/reply",
            self.rng.choice(story.audience),
            {"text": "so good " + "!" * self.rng.randrange(20)},
        )

    async def delete(self, story: Story) -> None:
        story.deleted = True
        status, _ = await self.command("delete", "DELETE", f"{S}/{story.story_id}", story.owner)
        if status == 204 and story.story_id in self.own[story.owner]:
            self.own[story.owner].remove(story.story_id)

    async def highlight(self, user: str) -> None:
        mine = self.own.get(user) or []
        if not mine:
            return
        r = self.rng
        existing = [h for h in self.highlights[user] if len(h[1]) < 90]
        if existing and r.random() < 0.7:
            hid, members = r.choice(existing)
            candidates = [s for s in mine[-20:] if s not in members]
            if not candidates:
                return
            story_id = r.choice(candidates)
            status, _ = await self.command(
                "highlight_add", "POST", f"{H}/{hid}/stories", user, {"story_ids": [story_id]}
            )
            if 200 <= status < 300:
                members.add(story_id)
            return
        if len(self.highlights[user]) >= 150:
            return
        chosen = r.sample(mine[-10:], min(len(mine[-10:]), r.randint(1, 3)))
        status, data = await self.command(
            "highlight", "POST", H, user, {"title": f"trip {r.randrange(100)}", "story_ids": chosen}
        )
        if status == 201:
            self.highlights[user].append((data["highlight_id"], set(chosen)))

    # -- reads -------------------------------------------------------------------------------

    async def read_feed(self, user: str) -> None:
        status, data, elapsed = await self.query("feed", f"{S}/feed?limit=20", user)
        if status == 200:
            self.day.feed_latencies.append(elapsed)
            self.day.feed_entries.append(len(page_items(data, "feed")))

    async def read_story(self, story: Story) -> None:
        reader = self.rng.choice([*story.audience, story.owner])
        await self.query("story", f"{S}/{story.story_id}", reader)

    async def owner_reads(self, user: str) -> None:
        mine = self.own.get(user)
        if not mine:
            return
        story = self.stories[self.rng.choice(mine[-30:])]
        what = self.rng.random()
        if what < 0.4:
            await self.query("viewers", f"/api/v1/viewers/story/{story.story_id}?limit=20", user)
        elif what < 0.6 and "question" in story.stickers:
            index = story.stickers.index("question")
            await self.query(
                "answers", f"/api/v1/viewers/story/{story.story_id}/answers?limit=20&sticker_index={index}", user
            )
        else:
            await self.query("insights", f"/api/v1/viewers/story/{story.story_id}/insights", user)

    async def other_read(self, user: str) -> None:
        r = self.rng
        what = r.randrange(6)
        if what == 0:
            other = r.choice(sorted(self.following[user]) or self.users)
            await self.query("user_stories", f"{S}/user/{other}?limit=20", user)
        elif what == 1:
            other = r.choice(sorted(self.following[user]) or self.users)
            await self.query("highlights_of", f"{H}/user/{other}?limit=20", user)
        elif what == 2:
            owners = [u for u in self.users if self.highlights[u]]
            if owners:
                owner = r.choice(owners)
                hid, _ = r.choice(self.highlights[owner])
                await self.query("highlight", f"{H}/{hid}?limit=20", r.choice([owner, user]))
        elif what == 3:
            await self.query("close_friends", "/api/v1/close-friends/?limit=20", user)
        elif what == 4:
            await self.query("archive", f"{S}/archive?limit=20", user)
        else:
            await self.query("user_insights", "/api/v1/viewers/user/insights", user)

    # -- one simulated hour ------------------------------------------------------------------

    def _count(self, per_day: float) -> int:
        x = per_day / 24.0
        return int(x) + (1 if self.rng.random() < x - int(x) else 0)

    async def hour(
        self,
        now: datetime,
        *,
        post: bool = True,
        engage: bool = True,
        reads: bool = True,
        graph: bool = True,
        lifetimes: Sequence[int] = LIFETIMES_H,
        posts_scale: float = 1.0,
        spread_s: float = 0.0,
    ) -> None:
        """One simulated hour of traffic (bounded concurrency), spread over ``spread_s`` real
        seconds (0: all at once)."""
        t, r = self.traffic, self.rng
        n_users = len(self.users)
        self.prune(now)
        jobs: list = []
        if post:
            jobs += [
                self.post(r.choice(self.users), now, lifetimes)
                for _ in range(self._count(t.posts_per_user * n_users * posts_scale))
            ]
        stories_per_day = t.posts_per_user * n_users
        margin = timedelta(minutes=20) + timedelta(seconds=spread_s * self.stack.scale)  # live until sent
        if engage:
            for rate, action in (
                (t.views_per_story, self.view),
                (t.interactions_per_story, self.interact),
                (t.replies_per_story, self.reply),
            ):
                for _ in range(self._count(rate * stories_per_day)):
                    story = self.pick_live(now, margin)
                    if story:
                        jobs.append(action(story))
            for _ in range(self._count(t.deletes)):
                story = self.pick_live(now, margin)
                if story:
                    jobs.append(self.delete(story))
            jobs += [self.highlight(r.choice(self.users)) for _ in range(self._count(t.highlight_writes))]
        if graph:
            follows, close = self._count(t.follow_changes), self._count(t.close_friend_changes)
            if follows or close:
                jobs.append(self.graph_changes(follows, close))
        if reads:
            jobs += [self.read_feed(r.choice(self.users)) for _ in range(self._count(t.feed_reads_per_user * n_users))]
            for _ in range(self._count(t.story_reads_per_story * stories_per_day)):
                story = self.pick_live(now, margin)
                if story:
                    jobs.append(self.read_story(story))
            jobs += [
                self.owner_reads(r.choice(self.users))
                for _ in range(self._count(t.owner_reads_per_story * stories_per_day))
            ]
            jobs += [
                self.other_read(r.choice(self.users)) for _ in range(self._count(t.other_reads_per_user * n_users))
            ]
        await self.gather(jobs, spread_s)

    def take_day(self) -> Day:
        day, self.day = self.day, Day()
        return day


# -- the benchmark ----------------------------------------------------------------------------


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


async def _soak(stack: SoakStack, days: int, users: int, seed: int) -> dict[str, Any]:
    per_day: list[dict[str, Any]] = []
    async with Driver(stack, users, seed) as driver:
        t0 = time.monotonic()
        await driver.setup_graph()
        stack.wait_caught_up(120)
        graph_s = time.monotonic() - t0
        log(f"soak: {users} users, {sum(driver.accepted.values())} follows/close friends set up in {graph_s:.1f} s")
        before = {"redis": stack.redis_stats(memory_per_key=True), "mongo": stack.mongo_stats()}
        driver.take_day()
        start = stack.now()
        late_hours, behind_s = 0, 0.0
        run_started = time.monotonic()
        for h in range(days * 24):
            due = start + timedelta(hours=h)
            lag = (stack.now() - due).total_seconds() / stack.scale
            if lag > 0.5:  # more than half a real second behind schedule
                late_hours += 1
                behind_s = max(behind_s, lag)
            stack.sleep_until(due)
            await driver.hour(stack.now(), spread_s=0.85 * 3600 / stack.scale)
            if (h + 1) % 24 == 0:
                day_number = (h + 1) // 24
                stack.sleep_until(start + timedelta(hours=h + 1))
                stack.check_alive()
                day = driver.take_day()
                head, m, r = stack.positions()
                figures = {
                    "day": day_number,
                    "simulated_at": stack.now().isoformat(),
                    "real_elapsed_s": round(time.monotonic() - run_started, 1),
                    "redis": stack.redis_stats(memory_per_key=True),
                    "mongo": stack.mongo_stats(),
                    "live_stories": len(driver.live),
                    "stories_posted": len(driver.stories),
                    "feed_requests": len(day.feed_latencies),
                    "feed_p50_ms": round(median(day.feed_latencies) * 1000, 2),
                    "feed_p99_ms": round(percentile(day.feed_latencies, 99) * 1000, 2),
                    "feed_entries_avg": round(sum(day.feed_entries) / len(day.feed_entries), 1)
                    if day.feed_entries
                    else 0,
                    "largest_answer_bytes": max(day.largest.values(), default=0),
                    "largest_answer_endpoint": max(day.largest, key=day.largest.get) if day.largest else "",
                    "largest_by_endpoint": dict(sorted(day.largest.items())),
                    "requests": sum(day.statuses.values()),
                    "statuses": dict(sorted(day.statuses.items())),
                    "errors": day.errors,
                    "projection_lag_events": head - min(m, r),
                    "late_hours_so_far": late_hours,
                }
                per_day.append(figures)
                log(
                    f"soak day {day_number}: redis {figures['redis']['used_memory']:,} B, "
                    f"{figures['redis']['prefix_keys']:,} keys; mongo {figures['mongo']['documents']:,} docs; "
                    f"live {figures['live_stories']}; feed p99 {figures['feed_p99_ms']} ms; largest "
                    f"{figures['largest_answer_bytes']:,} B ({figures['largest_answer_endpoint']}); "
                    f"{figures['requests']:,} requests; lag {figures['projection_lag_events']} events"
                )
        unexpected = driver.unexpected[:50]
        accepted = dict(driver.accepted)
    return {
        "before": before,
        "days": per_day,
        "late_hours": late_hours,
        "max_behind_s": round(behind_s, 2),
        "unexpected": unexpected,
        "accepted": accepted,
        "graph_setup_s": round(graph_s, 1),
    }


def drift(values: list[float], base: float) -> tuple[float, float, float]:
    """(largest |v/base - 1| in %, min ratio, max ratio)."""
    if not base or not values:
        return float("nan"), float("nan"), float("nan")
    ratios = [v / base for v in values]
    return max(abs(x - 1) for x in ratios) * 100, min(ratios), max(ratios)


def summary_rows(result: dict[str, Any], base_day: int = 3) -> list[Row]:
    days = result["days"]
    last = days[-1]["day"] if days else 0
    window = [d for d in days if d["day"] >= base_day]
    rows: list[Row] = []
    if not window:
        return [Row(f"soak: fewer than {base_day} simulated days run", float("nan"), "")]
    base = window[0]
    span = f"days {base_day}-{last}"
    for name, get, goal in (
        ("Redis used_memory", lambda d: d["redis"]["used_memory"], 10.0),
        ("Redis key count", lambda d: d["redis"]["prefix_keys"], 10.0),
        ("feed page (limit=20) p99", lambda d: d["feed_p99_ms"], 20.0),
    ):
        values = [get(d) for d in window]
        worst, lo, hi = drift(values, get(base))
        rows.append(
            Row(
                f"soak: {name}, largest drift from day {base_day} ({span})",
                worst,
                "%",
                goal=("<=", goal),
                goal_on_value=True,
                note=f"day {base_day} {get(base):,} -> day {last} {values[-1]:,}; ratio to day {base_day} "
                f"{lo:.3f}..{hi:.3f}; per day: " + ", ".join(f"{v:,}" for v in values),
            )
        )
    largest = max(d["largest_answer_bytes"] for d in days)
    where = max(days, key=lambda d: d["largest_answer_bytes"])
    rows.append(
        Row(
            f"soak: largest query answer (days 1-{last})",
            largest / 1024,
            "KiB",
            goal=("<=", PAGE_LIMIT_BYTES / 1024),
            goal_on_value=True,
            note=f"{where['largest_answer_endpoint']} on day {where['day']}",
        )
    )
    mongo_docs = [d["mongo"]["documents"] for d in window]
    rows.append(
        Row(
            f"soak: MongoDB documents day {last} (permanent: archive, viewers, answers, highlights)",
            mongo_docs[-1],
            "docs",
            baseline=mongo_docs[0],
            baseline_name=f"day {base_day}",
            note="grows with the permanent documents only; per day: " + ", ".join(f"{v:,}" for v in mongo_docs),
        )
    )
    rows.append(
        Row(
            f"soak: feed page p50 day {last}",
            window[-1]["feed_p50_ms"],
            "ms",
            baseline=base["feed_p50_ms"],
            baseline_name=f"day {base_day}",
        )
    )
    rows.append(
        Row(
            "soak: simulated hours sent late (> 0.5 s behind the clock)",
            result["late_hours"],
            "hours",
            note=f"worst {result['max_behind_s']} s behind; scale {result['scale']:g}, {result['users']} users, "
            f"{result['real_s']:.0f} s real for {last} simulated days",
        )
    )
    return rows


def print_days(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"soak: {result['users']} users, {len(result['days'])} simulated days at x{result['scale']:g}")
    for col in (
        "day",
        "Redis used_memory",
        "Redis keys",
        "Mongo docs",
        "Mongo data",
        "Mongo dir",
        "live stories",
        "feed p50 ms",
        "feed p99 ms",
        "largest answer",
        "requests",
        "lag ev",
    ):
        table.add_column(col, justify="right")
    for d in result["days"]:
        table.add_row(
            str(d["day"]),
            f"{d['redis']['used_memory']:,}",
            f"{d['redis']['prefix_keys']:,}",
            f"{d['mongo']['documents']:,}",
            f"{d['mongo'].get('data_size', 0):,}",
            f"{d['mongo']['data_dir_bytes']:,}",
            str(d["live_stories"]),
            f"{d['feed_p50_ms']:.2f}",
            f"{d['feed_p99_ms']:.2f}",
            f"{d['largest_answer_bytes']:,} ({d['largest_answer_endpoint']})",
            f"{d['requests']:,}",
            str(d["projection_lag_events"]),
        )
    Console(width=max(160, Console().width)).print(table)


def soak(
    days: int, scale: float, users: int, seed: int = 7, relay: bool = False, results_path: Path | None = RESULTS_JSON
) -> dict[str, Any]:
    workdir = OUT_DIR / "soak-data"
    shutil.rmtree(workdir, ignore_errors=True)
    started = time.monotonic()
    log(f"soak: {days} simulated days at x{scale:g} (~{days * 86400 / scale:.0f} s of traffic), {users} users")
    with SoakStack(workdir, scale, relay=relay) as stack:
        result = asyncio.run(_soak(stack, days, users, seed))
        result.update(
            scale=scale,
            users=users,
            seed=seed,
            origin=stack.clock.origin.isoformat(),
            real_s=time.monotonic() - started,
            relay=relay,
        )
    shutil.rmtree(workdir, ignore_errors=True)
    print_days(result)
    if result["unexpected"]:
        log(f"soak: {len(result['unexpected'])} unexpected answers (first): " + "; ".join(result["unexpected"][:5]))
    if results_path is not None:
        results_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
        log(f"soak: wrote {results_path}")
    return result


def run() -> list[Row]:
    """For ``python -m bench`` (RESULTS.md)."""
    days = int(_env_number("BENCH_SOAK_DAYS", DEFAULT_DAYS))
    scale = _env_number("BENCH_SOAK_SCALE", DEFAULT_SCALE)
    users = int(_env_number("BENCH_SOAK_USERS", DEFAULT_USERS))
    seed = int(_env_number("BENCH_SOAK_SEED", 7))
    relay = os.environ.get("BENCH_SOAK_RELAY", "") in ("1", "true")
    result = soak(days, scale, users, seed, relay)
    return summary_rows(result)


if __name__ == "__main__":
    from bench.__main__ import print_rows

    print_rows(run(), "soak")
