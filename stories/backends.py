"""Clients for the event log and the read-side stores, built from settings (one place for their options).

``STORIES_REDIS_URL`` names one server (``redis://``, ``rediss://``, ``unix://``) or a Redis
Cluster (``redis+cluster://host:port,host:port,...``: any of its nodes; the client finds the
rest). Everything else takes whichever client this gives and runs the same code on both: no
command spans hash slots, and multi-key reads are split by ``slot_groups``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, urlparse

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from pymongo import AsyncMongoClient, MongoClient
from redis.connection import HiredisRespSerializer

from stories.settings import Settings

MONGO_OPTIONS: dict[str, Any] = {"serverSelectionTimeoutMS": 2000, "connectTimeoutMS": 2000, "tz_aware": True}
REDIS_OPTIONS: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 5}


def mongo_client(settings: Settings) -> MongoClient:
    return MongoClient(settings.mongodb_url, **MONGO_OPTIONS)


def async_mongo_client(settings: Settings) -> AsyncMongoClient:
    return AsyncMongoClient(settings.mongodb_url, **MONGO_OPTIONS)


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SyncRedis = redis.Redis | redis.cluster.RedisCluster
AsyncRedis = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
K = TypeVar("K", str, bytes)


def is_cluster_url(url: str) -> bool:
    return urlparse(url).scheme in CLUSTER_SCHEMES


def cluster_options(url: str) -> tuple[list[tuple[str, int]], dict]:
    """The seed nodes and options of a ``redis+cluster://[user:pass@]h:p,h:p/`` URL."""
    parsed = urlparse(url)
    netloc = parsed.netloc.rpartition("@")[2]
    nodes = []
    for part in filter(None, netloc.split(",")):
        host, _, port = part.rpartition(":") if ":" in part else (part, "", "6379")
        nodes.append((host.strip("[]"), int(port)))
    if not nodes:
        raise ValueError(f"no cluster node in {url!r}")
    options: dict = {}
    if parsed.username:
        options["username"] = parsed.username
    if parsed.password:
        options["password"] = parsed.password
    if parsed.scheme == "rediss+cluster":
        options["ssl"] = True
    if parse_qs(parsed.query).get("read_from_replicas") == ["true"]:
        options["read_from_replicas"] = True
    return nodes, options


def connect_redis(url: str, **options) -> SyncRedis:
    """A client for one server or a cluster, by the URL's scheme."""
    if is_cluster_url(url):
        nodes, extra = cluster_options(url)
        return redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in nodes], **extra, **options
        )
    return redis.Redis.from_url(url, **options)


def redis_client(settings: Settings) -> SyncRedis:
    return connect_redis(_redis_url(settings), **REDIS_OPTIONS)


def _redis_url(settings: Settings) -> str:
    if not settings.redis_url:  # filled in by the embedded servers (stories.embedded.resolve_urls) or set
        raise ValueError("no Redis: set STORIES_REDIS_URL")
    return settings.redis_url


def is_cluster(client: object) -> bool:
    return isinstance(
        client,
        (
            redis.cluster.RedisCluster,
            redis.asyncio.cluster.RedisCluster,
            redis.cluster.ClusterPipeline,
            redis.asyncio.cluster.ClusterPipeline,
        ),
    )


def slot_groups(client: object, keys: Sequence[K]) -> list[list[K]]:
    """``keys`` split so that each group may go to one multi-key command (SUNION, MGET): one
    group on a single server, one per hash slot on a cluster (its pipeline then sends each
    node its own groups)."""
    if not keys:
        return []
    if not is_cluster(client):
        return [list(keys)]
    groups: dict[int, list[K]] = defaultdict(list)
    for key in keys:
        groups[redis.cluster.key_slot(key.encode() if isinstance(key, str) else key)].append(key)
    return list(groups.values())


class _HiredisPacking:
    """redis-py's asyncio connections pack commands in Python (about 0.7 µs per argument); a feed
    query sends some 20,000 arguments. The sync client's hiredis packer does it in C, byte for byte
    the same."""

    _serializer = HiredisRespSerializer()

    def pack_command(self, *args):
        return self._serializer.pack(*args)


class HiredisPackedConnection(_HiredisPacking, redis.asyncio.Connection):
    pass


class HiredisPackedSSLConnection(_HiredisPacking, redis.asyncio.SSLConnection):
    pass


ASYNC_MAX_CONNECTIONS = 256  # per server (per node on a cluster); a burst beyond waits for one


def connect_async_redis(url: str, **options) -> AsyncRedis:
    """The asyncio client for one server or a cluster, by the URL's scheme. redis-py's asyncio
    pool refuses a request once 100 connections are busy ("Too many connections", a 503 for the
    caller); here a burst waits for a free connection instead (up to the socket timeout)."""
    if is_cluster_url(url):
        nodes, extra = cluster_options(url)
        return redis.asyncio.cluster.RedisCluster(
            startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in nodes],
            max_connections=4 * ASYNC_MAX_CONNECTIONS,
            **extra,
            **options,
        )  # (no waiting pool on a cluster)
    packed = {"redis": HiredisPackedConnection, "rediss": HiredisPackedSSLConnection}.get(urlparse(url).scheme)
    extra = {"connection_class": packed} if packed else {}  # unix sockets keep redis-py's own
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=ASYNC_MAX_CONNECTIONS, timeout=options.get("socket_timeout") or 5, **options, **extra
    )
    return redis.asyncio.Redis(connection_pool=pool)


def async_redis_client(settings: Settings) -> AsyncRedis:
    return connect_async_redis(_redis_url(settings), **REDIS_OPTIONS)


# -- big read pipelines on a cluster -------------------------------------------------------------

_PLAIN_OPTIONS = ("host", "port", "username", "password", "socket_timeout", "socket_connect_timeout", "db")
_node_clients: weakref.WeakKeyDictionary[object, dict[str, redis.Redis]] = weakref.WeakKeyDictionary()


def _node_client(client: redis.asyncio.cluster.RedisCluster, node) -> redis.Redis:
    """A plain (blocking) client of one cluster node, kept with the cluster client."""
    clients = _node_clients.setdefault(client, {})
    plain = clients.get(node.name)
    if plain is None:
        options = {k: v for k, v in node.connection_kwargs.items() if k in _PLAIN_OPTIONS}
        plain = clients[node.name] = redis.Redis(**options)
    return plain


def _on_node(plain: redis.Redis, commands: list[tuple]) -> list:
    with plain.pipeline(transaction=False) as p:
        for command in commands:
            p.execute_command(*command)
        return p.execute()


def _by_node(client: Any, commands: Sequence[tuple]) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """The commands' indexes by the node that serves their (first) key."""
    by_node: dict[str, list[int]] = defaultdict(list)
    nodes: dict[str, Any] = {}
    for i, command in enumerate(commands):
        node = client.get_node_from_key(command[3] if command[0] in ("EVALSHA", "EVAL") else command[1])
        by_node[node.name].append(i)
        nodes[node.name] = node
    return by_node, nodes


def _in_order(count: int, by_node: dict[str, list[int]], replies: Sequence[list]) -> list:
    out: list = [None] * count
    for indexes, answers in zip(by_node.values(), replies):
        for i, answer in zip(indexes, answers):
            out[i] = answer
    return out


_CLUSTER_DETOURS = (redis.exceptions.ResponseError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
_threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="redis-node")


def run_pipeline(client: SyncRedis, commands: Sequence[tuple]) -> list:
    """``read_pipeline`` for the blocking client (the projector's batches): on a cluster one plain
    pipeline per node, all nodes at once, instead of redis-py's cluster pipeline and its Python
    cost per command; an error there (a moved slot, a failover, a lost script cache) and the
    request goes down the cluster client's own path, which refreshes its slot map."""
    if is_cluster(client):
        cluster = cast(redis.cluster.RedisCluster, client)
        by_node, nodes = _by_node(cluster, commands)
        try:
            replies = list(
                _threads.map(
                    lambda name: _on_node(
                        cluster.get_redis_connection(nodes[name]), [commands[i] for i in by_node[name]]
                    ),
                    list(by_node),
                )
            )
        except _CLUSTER_DETOURS:
            pass
        else:
            return _in_order(len(commands), by_node, replies)
    with client.pipeline(transaction=False) as p:
        for command in commands:
            p.execute_command(*command)
        return p.execute()


async def read_pipeline(client: AsyncRedis, commands: Sequence[tuple]) -> list:
    """Replies to ``commands`` (each within one hash slot; the key first, or a script's first
    key), in order. On one server: one pipeline. On a cluster, redis-py's asyncio pipeline costs
    some 30 µs of Python per command (routing each twice, a timer per reply), too much for the
    tray's thousand live sets (one slot each): here the commands go by node, one plain pipeline
    each, with the blocking client (hiredis replies, no timer per reply) in worker threads, all
    nodes at once. A slot that moved or a node that failed over sends this one request down the
    cluster client's own path, which follows redirections."""
    if is_cluster(client):
        cluster = cast(redis.asyncio.cluster.RedisCluster, client)
        by_node, nodes = _by_node(cluster, commands)
        try:
            replies = await asyncio.gather(
                *(
                    asyncio.to_thread(
                        _on_node, _node_client(cluster, nodes[name]), [commands[i] for i in by_node[name]]
                    )
                    for name in by_node
                )
            )
        except _CLUSTER_DETOURS:
            for plain in _node_clients.pop(client, {}).values():
                plain.close()
        else:
            return _in_order(len(commands), by_node, replies)
    async with client.pipeline(transaction=False) as p:
        for command in commands:
            p.execute_command(*command)
        return await p.execute()
