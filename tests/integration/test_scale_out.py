"""Production mode on the machine's services: a PostgreSQL log, Redis, and two projector
processes that split the log by partition. Their read models equal one projector's."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import redis
from pymongo import MongoClient

from commands.event_store import EventStore
from commands.synthetic_load import generate
from domain.platform import Platform
from projections.redis_schema import VIEW_NAME
from projections.replay import rebuild
from stories.backends import connect_redis
from tests.conftest import on_one_redis_and_a_cluster
from tests.read_models import dump_mongo, dump_redis

redis_url = on_one_redis_and_a_cluster  # these read models run on one Redis and on a Redis Cluster


def _positions(mongo: MongoClient, database: str, client: redis.Redis, prefix: str, count: int) -> list[int]:
    names = [f"{kind}.p{i}of{count}" for kind in ("mongo_views", VIEW_NAME) for i in range(count)]
    docs = {d["_id"]: d["position"] for d in mongo[database].projection_positions.find()}
    return [docs.get(n, 0) if n.startswith("mongo") else int(client.get(prefix + "position:" + n) or 0) for n in names]


def test_two_partitioned_projectors_build_what_one_builds(
    postgres_schema_url, mongodb_url, mongodb_database, redis_url, redis_prefix, tmp_path, clock
):
    store = EventStore(postgres_schema_url)
    asyncio.run(generate(store, Platform.VIGNETTE, users=40, stories=80, engagements=3000, clock=clock))
    head = store.head()
    env = dict(
        os.environ,
        STORIES_EVENT_STORE_URL=postgres_schema_url,
        STORIES_MONGODB_URL=mongodb_url,
        STORIES_MONGODB_DATABASE=mongodb_database,
        STORIES_REDIS_URL=redis_url,
        STORIES_REDIS_PREFIX=redis_prefix,
        STORIES_DATA_DIR=str(tmp_path),
        STORIES_PROJECTOR_PARTITIONS="2",
        STORIES_PROJECTOR_BATCH="200",
    )
    exe = Path(sys.executable).parent / "stories"
    procs = [
        subprocess.Popen(
            [str(exe), "projector"],
            env={**env, "STORIES_PROJECTOR_PARTITION": str(i)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    mongo, client = MongoClient(mongodb_url, tz_aware=True), connect_redis(redis_url)
    try:
        deadline = time.monotonic() + 120
        while min(_positions(mongo, mongodb_database, client, redis_prefix, 2)) < head:
            for p in procs:
                assert p.poll() is None, p.stderr.read().decode()
            assert time.monotonic() < deadline, "partitioned projectors did not catch up"
            time.sleep(0.2)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=20)
    single_db, single_prefix = mongodb_database + "_single", redis_prefix[:-1] + "-single:"
    try:
        rebuild(store, mongo, single_db, client, single_prefix, head)
        assert dump_mongo(mongo, mongodb_database) == dump_mongo(mongo, single_db)
        assert dump_redis(client, redis_prefix) == dump_redis(client, single_prefix)
    finally:
        mongo.drop_database(single_db)
        for key in client.scan_iter(match=single_prefix + "*"):
            client.delete(key)
        store.close()
