"""Scale-out: one projector process against two that split the log by partition, on the
production services (a PostgreSQL log, Redis) and SecantusDB (this machine has no MongoDB).

Both runs project the same log from scratch; the figure is events/s until every view store
reached the log head. SecantusDB is one Python process, so it caps what two projectors gain
here; against MongoDB the Mongo side scales with the server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import redis
from pymongo import MongoClient

from bench.common import Row, log
from commands.event_store import EventStore
from commands.synthetic_load import generate
from domain.platform import Platform
from projections.redis_schema import VIEW_NAME
from stories.embedded import start_secantus

PG_ADMIN = os.environ.get("STORIES_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("STORIES_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ENGAGEMENTS = int(os.environ.get("BENCH_SCALE_OUT_ENGAGEMENTS", "30000"))


def _project(
    env: dict[str, str],
    partitions: int,
    head: int,
    mongo: MongoClient,
    database: str,
    client: redis.Redis,
    prefix: str,
    timeout_s: float = 600,
) -> float:
    exe = Path(sys.executable).parent / "stories"
    env = {
        **env,
        "STORIES_MONGODB_DATABASE": database,
        "STORIES_REDIS_PREFIX": prefix,
        "STORIES_PROJECTOR_PARTITIONS": str(partitions),
    }
    names = [
        f"{k}.p{i}of{partitions}" if partitions > 1 else k
        for k in ("mongo_views", VIEW_NAME)
        for i in range(partitions)
    ]
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [str(exe), "projector"],
            env={**env, "STORIES_PROJECTOR_PARTITION": str(i)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(partitions)
    ]
    try:
        while True:
            docs = {d["_id"]: d["position"] for d in mongo[database].projection_positions.find()}
            positions = [
                docs.get(n, 0) if n.startswith("mongo") else int(client.get(f"{prefix}position:{n}") or 0)
                for n in names
            ]
            if min(positions) >= head:
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"{partitions} projector(s) did not catch up in {timeout_s} s")
            time.sleep(0.1)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=20)


def run() -> list[Row]:
    run_id = uuid.uuid4().hex[:8]
    dbname = f"stories_bench_{run_id}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    pg_url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{dbname}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    server = start_secantus(tmp)
    client = redis.Redis.from_url(REDIS_URL)
    mongo = MongoClient(server.url, tz_aware=True)
    try:
        store = EventStore(pg_url)
        log(f"scale-out: generating a log ({ENGAGEMENTS} engagements) on PostgreSQL")
        asyncio.run(generate(store, Platform.VIGNETTE, users=300, stories=600, engagements=ENGAGEMENTS))
        head = store.head()
        events = sum(1 for _ in store.read())
        store.close()
        env = dict(
            os.environ,
            STORIES_EVENT_STORE_URL=pg_url,
            STORIES_MONGODB_URL=server.url,
            STORIES_REDIS_URL=REDIS_URL,
            STORIES_DATA_DIR=str(tmp),
            STORIES_PROJECTOR_BATCH="1000",
        )
        one = _project(env, 1, head, mongo, "one", client, f"bench-{run_id}-one:")
        two = _project(env, 2, head, mongo, "two", client, f"bench-{run_id}-two:")
        log(f"scale-out: {events} events; 1 projector {one:.1f} s, 2 partitioned projectors {two:.1f} s")
        return [
            Row("projector, 1 process (PostgreSQL log, SecantusDB + Redis)", events / one, "events/s"),
            Row(
                "projector, 2 partitioned processes",
                events / two,
                "events/s",
                baseline=events / one,
                baseline_name="1 process",
                goal=(">=", 1.0),
                note="rises when > 1; SecantusDB is one GIL-bound process, MongoDB would scale further",
            ),
        ]
    finally:
        for prefix in (f"bench-{run_id}-one:", f"bench-{run_id}-two:"):
            keys = list(client.scan_iter(match=prefix + "*", count=5000))
            for i in range(0, len(keys), 5000):
                client.delete(*keys[i : i + 5000])
        mongo.close()
        server.stop()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
