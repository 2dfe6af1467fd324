"""The expiry projector: keeps the due time of every live story and expires each when due.

It follows the log into its own Redis view (``P:expiry:due``, a sorted set by due time, with its
own position) and, every ``STORIES_EXPIRY_INTERVAL_S`` or at the next due time if sooner, issues
the expire command for each due story. ``StoryExpired`` is appended at most once per story:
the command goes through optimistic concurrency on the story's stream and the domain refuses a
second expiry, so racing expirers, a restart mid-sweep or a sweep hours late all end with one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from commands.application import StoriesApplication, utc_now
from commands.event_store import EventStore
from commands.group_commit import GroupCommitter
from commands.use_cases import ExpireStory
from domain import stories as st
from domain.errors import DomainError
from domain.platform import Platform
from projections.redis_views import Keys, RedisViewStore
from projections.runner import ProjectionRunner
from stories.backends import SyncRedis

log = logging.getLogger(__name__)
SWEEP_LIMIT = 1000
SCHEDULE_VIEW = "expiry_schedule.v2"


def on_created(p, k: Keys, e: st.StoryCreated) -> None:
    p.zadd(k.expiry_due, {e.story_id: datetime.fromisoformat(e.expires_at).timestamp()})


def on_gone(p, k: Keys, e: st.StoryDeleted | st.StoryExpired) -> None:
    p.zrem(k.expiry_due, e.story_id)


SCHEDULE_HANDLERS: dict[type, Callable[..., Any]] = {
    st.StoryCreated: on_created,
    st.StoryDeleted: on_gone,
    st.StoryExpired: on_gone,
}


class Expirer:
    def __init__(
        self,
        store: EventStore,
        client: SyncRedis,
        prefix: str,
        platform: Platform,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.client, self.keys = client, Keys(prefix)
        # v2: the schedule's key carries a hash tag (Redis Cluster); the untagged one goes.
        client.delete(*self.keys.legacy_expiry)  # a cluster client splits this by slot
        self.schedule = ProjectionRunner(
            store, RedisViewStore(client, prefix, name=SCHEDULE_VIEW, handlers=SCHEDULE_HANDLERS), 5000
        )
        self.clock = clock or utc_now
        # Simulated seconds per real second (STORIES_SIMULATED_CLOCK); waits are real seconds.
        self.scale = float(getattr(self.clock, "scale", 1.0) or 1.0)
        self.committer = GroupCommitter(store)
        self.app = StoriesApplication(store, self.committer, platform, clock=self.clock)
        self.expired = 0
        self.last_sweep = 0.0
        self.failed_sweeps = 0

    async def sweep(self) -> int:
        """Catch the schedule up, then expire every due story, a page at a time; how many
        this sweep expired."""
        count = 0
        while True:
            await asyncio.to_thread(self.schedule.catch_up)  # also drops what the last page expired
            now = self.clock().timestamp()
            page = cast("list[bytes]", self.client.zrangebyscore(self.keys.expiry_due, "-inf", now, 0, SWEEP_LIMIT))
            due = [d.decode() for d in page]
            expired = sum(await asyncio.gather(*(self._expire(story_id) for story_id in due)))
            count += expired
            if len(due) < SWEEP_LIMIT or not expired:
                break
        if count:
            await asyncio.to_thread(self.schedule.catch_up)  # drop what we just expired
        self.expired += count
        return count

    async def _expire(self, story_id: str) -> int:
        try:
            await self.app.execute(ExpireStory(UUID(story_id)))
            return 1
        except DomainError as e:
            # already expired or deleted (another expirer won), or not due by our clock yet
            log.debug("story %s not expired: %s", story_id, e.code)
            return 0

    def seconds_to_next_due(self, interval_s: float) -> float:
        """Real seconds to wait: until the next due time on our clock (divided by its scale when
        the clock is simulated and accelerated), at most ``interval_s``."""
        head = cast("list[tuple[bytes, float]]", self.client.zrange(self.keys.expiry_due, 0, 0, withscores=True))
        if not head:
            return interval_s
        return max(0.0, min(interval_s, (head[0][1] - self.clock().timestamp()) / self.scale))

    def metrics(self):
        """The expirer's gauges, on a registry of their own (served at /metrics)."""
        from prometheus_client import CollectorRegistry, Gauge

        from stories.supervisor import safe

        registry = CollectorRegistry()
        store = self.schedule.store
        Gauge("stories_log_head", "newest log position", registry=registry).set_function(safe(store.head))
        Gauge(
            "stories_expirer_schedule_position", "log position the expiry schedule has applied", registry=registry
        ).set_function(lambda: self.schedule.position or 0)
        Gauge(
            "stories_expirer_expired_stories", "stories this process expired since it started", registry=registry
        ).set_function(lambda: self.expired)
        Gauge(
            "stories_expirer_last_sweep_timestamp_seconds",
            "when the last sweep finished (0: none yet)",
            registry=registry,
        ).set_function(lambda: self.last_sweep)
        Gauge(
            "stories_expirer_sweep_failures",
            "sweeps that failed (a dependency down) since it started",
            registry=registry,
        ).set_function(lambda: self.failed_sweeps)
        return registry

    def serve_ops(self, settings=None):
        """/health, /ready (the log and Redis reachable) and /metrics on STORIES_EXPIRER_PORT
        (``settings``: default, read from the environment as the process was started); None when unset."""
        from stories.settings import Settings
        from stories.supervisor import ops_port, serve_ops

        settings = settings or Settings()
        return serve_ops(
            "expirer",
            settings.host,
            ops_port(settings, "expirer"),
            self.metrics(),
            {"event_store": self.schedule.store.head, "redis": self.client.ping},
        )

    async def run(self, interval_s: float, stop: asyncio.Event, settings=None) -> None:
        """Sweep until ``stop`` is set, serving the ops endpoints (``serve_ops``) meanwhile."""
        ops = self.serve_ops(settings)
        try:
            await self._run(interval_s, stop)
        finally:
            if ops is not None:
                ops.stop()

    async def _run(self, interval_s: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                count = await self.sweep()
                if count:
                    log.info("expired %d stories", count)
                wait = self.seconds_to_next_due(interval_s)
                self.last_sweep = time.time()
            except Exception as error:  # a dependency is down: try again next interval
                log.warning("expiry sweep failed: %s", error)
                self.failed_sweeps += 1
                wait = interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(wait, 0.05))

    def close(self) -> None:
        self.committer.close()
