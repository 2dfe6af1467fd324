"""Clients for the read-side stores, built from settings (one place for their options)."""

from __future__ import annotations

import redis
from pymongo import MongoClient

from stories.settings import Settings


def mongo_client(settings: Settings) -> MongoClient:
    return MongoClient(settings.mongodb_url, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000, tz_aware=True)


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
