"""Clients for the read-side stores, built from settings (one place for their options)."""

from __future__ import annotations

from urllib.parse import urlparse

import redis
import redis.asyncio
from pymongo import AsyncMongoClient, MongoClient
from redis.connection import HiredisRespSerializer

from stories.settings import Settings


MONGO_OPTIONS = dict(serverSelectionTimeoutMS=2000, connectTimeoutMS=2000, tz_aware=True)
REDIS_OPTIONS = dict(socket_connect_timeout=2, socket_timeout=5)


def mongo_client(settings: Settings) -> MongoClient:
    return MongoClient(settings.mongodb_url, **MONGO_OPTIONS)


def async_mongo_client(settings: Settings) -> AsyncMongoClient:
    return AsyncMongoClient(settings.mongodb_url, **MONGO_OPTIONS)


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, **REDIS_OPTIONS)


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


def async_redis_client(settings: Settings) -> redis.asyncio.Redis:
    packed = {"redis": HiredisPackedConnection, "rediss": HiredisPackedSSLConnection}.get(
        urlparse(settings.redis_url).scheme)
    extra = {"connection_class": packed} if packed else {}  # unix sockets keep redis-py's own
    return redis.asyncio.Redis.from_url(settings.redis_url, **REDIS_OPTIONS, **extra)
