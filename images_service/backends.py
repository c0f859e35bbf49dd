"""Clients for the two backing services, built from settings, plus their health checks.

One place decides client options: timezone-aware MongoDB dates, short timeouts for health
probes, and an application name that shows up in server logs.

A failed health check answers one short, stable message chosen by the exception's type
(:data:`UNREACHABLE`, :data:`AUTH_FAILED`, :data:`CHECK_FAILED`): `/health` is public, and a
driver's own message lists hosts, ports, topology and timeouts. The detail goes to the log,
with any URI password redacted.
"""

from __future__ import annotations

import logging

import redis
from pymongo import MongoClient
from pymongo.errors import ConnectionFailure, OperationFailure

from images_service.config.settings import Settings
from images_service.redaction import redact

log = logging.getLogger(__name__)

#: Health probes must answer well within the 5 s the contract allows for `/health`.
HEALTH_TIMEOUT_MS = 1500
#: What a failed check answers (contract §7: "the failing check's message").
UNREACHABLE = "error: unreachable"
AUTH_FAILED = "error: authentication failed"
CHECK_FAILED = "error: check failed"
#: MongoDB server error codes of a refused login or a user without the needed role.
MONGO_AUTH_CODES = frozenset({13, 18})


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


def mongo_failure(exc: BaseException) -> str:
    """The short message for a failed MongoDB check, from the exception's type."""
    if isinstance(exc, OperationFailure) and exc.code in MONGO_AUTH_CODES:
        return AUTH_FAILED
    if isinstance(exc, ConnectionFailure):  # includes server selection and network timeouts
        return UNREACHABLE
    return CHECK_FAILED


def redis_failure(exc: BaseException) -> str:
    """The short message for a failed Redis check, from the exception's type."""
    # AuthenticationError is a ConnectionError in redis-py: test it first.
    if isinstance(exc, (redis.AuthenticationError, redis.exceptions.NoPermissionError)):
        return AUTH_FAILED
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return UNREACHABLE
    return CHECK_FAILED


def _failed(service: str, exc: Exception, message: str, quiet: bool) -> str:
    if not quiet:
        log.warning("%s health check failed (%s): %s: %s", service, message, type(exc).__name__,
                    redact(str(exc))[:1000])
    return message


def check_mongo(client: MongoClient, *, quiet: bool = False) -> str:
    """``"ok"``, or a short stable reason MongoDB did not answer a ping (detail logged
    unless ``quiet``)."""
    try:
        client.admin.command("ping")
        return "ok"
    except Exception as exc:  # any failure is reported, never raised, by a health check
        return _failed("MongoDB", exc, mongo_failure(exc), quiet)


def check_redis(client: redis.Redis, *, quiet: bool = False) -> str:
    """``"ok"``, or a short stable reason Redis did not answer a PING (detail logged unless
    ``quiet``)."""
    try:
        client.ping()
        return "ok"
    except Exception as exc:
        return _failed("Redis", exc, redis_failure(exc), quiet)
