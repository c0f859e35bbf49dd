"""Per-key rate limiting of the REST API with flask-limiter, counted in Redis.

The key is a hash of the caller's API key (never the key itself), so all workers share one
budget per key. If Redis is unreachable the limiter fails open (``swallow_errors``) and counts
in memory per process: a rate limit outage must not take the API down with it.
"""

from __future__ import annotations

import hashlib

from flask import Flask, request
from flask_limiter import Limiter

from api.auth import PUBLIC_PATHS


def _caller() -> str:
    key = request.headers.get("X-API-Key")
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return "addr:" + (request.remote_addr or "unknown")


def init_limiter(app: Flask, *, redis_url: str, limit: str) -> Limiter:
    return Limiter(
        _caller,
        app=app,
        default_limits=[limit],
        default_limits_exempt_when=lambda: request.path in PUBLIC_PATHS
        or request.path.startswith("/docs"),
        storage_uri=redis_url,
        storage_options={"socket_connect_timeout": 1, "socket_timeout": 1},
        key_prefix="images-service-ratelimit",
        headers_enabled=True,
        swallow_errors=True,
        in_memory_fallback_enabled=True,
        strategy="moving-window",
    )
