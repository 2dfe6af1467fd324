"""The projector process: one runner per view store, each in its own thread, each with its own
position. Run several processes and the recorded positions keep them from applying twice."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from datetime import datetime

from prometheus_client import CollectorRegistry, Gauge
from pymongo import MongoClient

from commands.event_store import EventStore, open_event_store
from projections import generations
from projections.generations import Generation
from projections.mongo_views import MongoViewStore
from projections.redis_schema import VIEW_NAME
from projections.redis_views import Keys, RedisViewStore
from projections.runner import Partition, ProjectionRunner
from stories.backends import mongo_client, redis_client
from stories.settings import Settings
from stories.supervisor import ops_port, safe, serve_ops

log = logging.getLogger(__name__)


def partitions(settings: Settings) -> list[Partition]:
    """The partitions this process projects: one when STORIES_PROJECTOR_PARTITION is set, else all."""
    count = settings.projector_partitions
    chosen = [settings.projector_partition] if settings.projector_partition is not None else range(count)
    return [Partition(i, count) for i in chosen]


def build_runners(
    settings: Settings, store: EventStore, generation: Generation | None = None
) -> list[ProjectionRunner]:
    """The runners of this process's partitions, into ``generation``'s stores (default: the one
    the pointer names now, ``projections.generations``)."""
    mongo, client = mongo_client(settings), redis_client(settings)
    if generation is None:
        generation = generations.current(client, settings.mongodb_database, settings.redis_prefix)
    runners = []
    for part in partitions(settings):
        for view in (
            MongoViewStore(mongo, generation.mongodb_database, part.name("mongo_views")),
            RedisViewStore(
                client,
                generation.redis_prefix,
                part.name(VIEW_NAME),
                grace=settings.redis_grace,
                wait_replicas=settings.redis_wait_replicas,
            ),
        ):
            runners.append(ProjectionRunner(store, view, settings.projector_batch, partition=part))
    return runners


def projector_metrics(store: EventStore, runners: list[ProjectionRunner]) -> CollectorRegistry:
    """Gauges over ``runners``, read at each scrape (the list is updated in place when the
    projector moves to another generation: the same views, in the same order)."""
    registry = CollectorRegistry()
    Gauge("stories_log_head", "newest log position", registry=registry).set_function(safe(store.head))
    position = Gauge("stories_projection_position", "applied log position", ["view"], registry=registry)
    lag = Gauge("stories_projection_lag_events", "events behind the log head", ["view"], registry=registry)
    for i, runner in enumerate(runners):
        position.labels(runner.view.name).set_function(_applied(runners, i))
        lag.labels(runner.view.name).set_function(safe(_behind(store, runners, i)))
    return registry


def _applied(runners: list[ProjectionRunner], i: int) -> Callable[[], float]:
    """The position of ``runners[i]``, whichever runner holds that place at the scrape."""
    return lambda: runners[i].position or 0


def _behind(store: EventStore, runners: list[ProjectionRunner], i: int) -> Callable[[], float]:
    """How far ``runners[i]`` (at the scrape) is behind the log head."""
    return lambda: store.head() - (runners[i].position or 0)


def readiness_checks(settings: Settings, store: EventStore, *names: str) -> dict[str, Callable[[], object]]:
    """/ready checks of the dependencies ``names`` (default: the projector's: the log, MongoDB and
    Redis), each on a client of its own with short timeouts."""
    checks: dict[str, Callable[[], object]] = {}
    for name in names or ("event_store", "mongodb", "redis"):
        if name == "event_store":
            checks[name] = store.head
        elif name == "mongodb":
            checks[name] = _ping_mongo(mongo_client(settings))
        elif name == "redis":
            checks[name] = redis_client(settings).ping
    return checks


def _ping_mongo(mongo: MongoClient) -> Callable[[], object]:
    return lambda: mongo.admin.command("ping")


def publish_log_head(settings: Settings, store: EventStore, stop: threading.Event) -> None:
    """Tell the query API how far the log reaches, for its lag metric (it never reads the log)."""
    client = redis_client(settings)
    key = Keys(settings.redis_prefix).position("log_head")
    while not stop.wait(0.5):
        with contextlib.suppress(Exception):  # the runners log the outage
            client.set(key, store.head())


def run_projector(
    settings: Settings, stop: threading.Event | None = None, clock: Callable[[], datetime] | None = None
) -> None:
    """``clock``: the process's clock (``stories.clock.clock_from``). The projections themselves
    take every time from the events they apply; it is built here so that a bad
    STORIES_SIMULATED_CLOCK refuses the projector at start-up like every other process."""
    stop = stop or threading.Event()
    if clock is None:
        from stories.clock import clock_from

        clock = clock_from(settings)
    store = open_event_store(settings)
    pointer = redis_client(settings)
    generation = generations.current(pointer, settings.mongodb_database, settings.redis_prefix)
    runners = build_runners(settings, store, generation)
    ops = serve_ops(
        "projector",
        settings.host,
        ops_port(settings, "projector"),
        projector_metrics(store, runners),
        readiness_checks(settings, store),
    )
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    head = threading.Thread(target=publish_log_head, args=(settings, store, stop), daemon=True)
    head.start()
    following = _follow(runners, generation)
    # The generation pointer (``stories replay --into``), read once a second: on a change, the
    # runners finish their batch and stop, and new ones continue in the new generation's stores
    # from its own positions. The expirer and the relay keep their keys: they are not read models.
    while not stop.wait(generations.WATCH_INTERVAL_S):
        try:
            wanted = generations.current(pointer, settings.mongodb_database, settings.redis_prefix)
            if wanted.where != generation.where:
                fresh = build_runners(settings, store, wanted)
                following.stop()
                runners[:] = fresh
                generation = wanted
                following = _follow(runners, generation)
        except Exception as error:  # Redis or MongoDB down: the runners report it; try again
            log.warning("reading the generation pointer failed: %s", error)
    following.stop()
    head.join(timeout=10)
    if ops is not None:
        ops.stop()
    store.close()


class _Following:
    def __init__(self, stop: threading.Event, threads: list[threading.Thread]) -> None:
        self._stop, self.threads = stop, threads

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(timeout=30)


def _follow(runners: list[ProjectionRunner], generation: Generation) -> _Following:
    """One thread per runner, each until the returned handle is stopped."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=r.run_forever, args=(stop,), name=f"projector-{r.view.name}", daemon=True)
        for r in runners
    ]
    for t in threads:
        t.start()
    log.info(
        "projector following the log into generation %s (MongoDB %s, Redis prefix %s): %s",
        generation.name,
        generation.mongodb_database,
        generation.redis_prefix,
        ", ".join(r.view.name for r in runners),
    )
    return _Following(stop, threads)
