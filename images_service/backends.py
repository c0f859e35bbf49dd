"""Clients for the two backing services, built from settings, plus their health checks.

One place decides client options: timezone-aware MongoDB dates, short timeouts for health
probes, and an application name that shows up in server logs.
"""

from __future__ import annotations

import redis
from pymongo import MongoClient

from images_service.settings import Settings

#: Health probes must answer well within the 5 s the contract allows for `/health`.
HEALTH_TIMEOUT_MS = 1500


def mongo_client(settings: Settings, *, timeout_ms: int = 5000, app: str = "images-service") -> MongoClient:
    """A MongoClient for ``MONGODB_URI``; connecting is lazy, so this never blocks."""
    return MongoClient(
        settings.mongodb_uri,
        tz_aware=True,
        appname=app,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=max(timeout_ms * 6, 30_000),
    )


def redis_client(settings: Settings, *, timeout_s: float = 5.0) -> redis.Redis:
    """A Redis client for ``REDIS_URL`` with bounded connect and socket timeouts."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        health_check_interval=30,
    )


def check_mongo(client: MongoClient) -> str:
    """``"ok"``, or the reason MongoDB did not answer a ping."""
    try:
        client.admin.command("ping")
        return "ok"
    except Exception as exc:  # any failure is reported, never raised, by a health check
        return f"error: {type(exc).__name__}: {str(exc)[:200]}"


def check_redis(client: redis.Redis) -> str:
    """``"ok"``, or the reason Redis did not answer a PING."""
    try:
        client.ping()
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}: {str(exc)[:200]}"
