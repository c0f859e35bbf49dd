"""Rate limiting of the REST API with flask-limiter, counted in Redis.

Two budgets:

* **per key** (``API_RATE_LIMIT``): requests with a valid key, counted under a hash of the
  key (never the key itself), so all workers share one budget per key;
* **failed authentication per client address** (:data:`FAILED_AUTH_LIMIT`): a request with a
  missing or wrong key is refused by the auth hook before the per-key limiter runs, so
  without this budget key guessing would be unlimited. Over it, the answer is 429 with
  ``Retry-After`` instead of 401. Only failures are counted: a client that then sends a
  right key is served under its key's budget, so a neighbour behind the same NAT cannot
  lock a legitimate caller out.

If Redis is unreachable the limiter fails open (``swallow_errors``) and counts in memory per
process: a rate limit outage must not take the API down with it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from flask import request
from flask_limiter import Limiter
from limits import parse

from api.auth import PUBLIC_PATHS

log = logging.getLogger(__name__)

#: Failed authentication attempts allowed per client address (moving window).
FAILED_AUTH_LIMIT = "30/minute"
KEY_PREFIX = "images-service-ratelimit"


def _caller() -> str:
    key = request.headers.get("X-API-Key")
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return "addr:" + (request.remote_addr or "unknown")


def build_limiter(*, redis_url: str, limit: str) -> Limiter:
    """The per-key limiter, not yet attached to an app (``limiter.init_app(app)``)."""
    return Limiter(
        _caller,
        default_limits=[limit],
        default_limits_exempt_when=lambda: request.path in PUBLIC_PATHS
        or request.path.startswith("/docs"),
        storage_uri=redis_url,
        storage_options={"socket_connect_timeout": 1, "socket_timeout": 1},
        key_prefix=KEY_PREFIX,
        headers_enabled=True,
        swallow_errors=True,
        in_memory_fallback_enabled=True,
        strategy="moving-window",
    )


class FailedAuthLimit:
    """Counts failed authentications per client address in the limiter's own storage."""

    def __init__(self, limiter: Limiter, limit: str = FAILED_AUTH_LIMIT) -> None:
        self._limiter = limiter
        self._item = parse(limit)

    def over_limit(self, address: str | None) -> int | None:
        """Record one failure from ``address``; seconds to wait when over the limit, else None."""
        identity = (KEY_PREFIX, "failed-auth", address or "unknown")
        try:
            strategy = self._limiter.limiter  # the in-memory fallback while Redis is down
            if strategy.hit(self._item, *identity):
                return None
            reset_at = strategy.get_window_stats(self._item, *identity).reset_time
        except Exception as exc:  # fail open, like the per-key limiter
            log.warning("failed-auth limit unavailable: %s", type(exc).__name__)
            return None
        return max(1, math.ceil(reset_at - time.time()))
