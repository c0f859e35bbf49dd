"""Rate limiting of the api with flask-limiter, counted in Redis (fleet-wide).

Three kinds of budget, all in the limiter's Redis storage, so every gunicorn worker on every
host shares them:

* **per key** (``API_RATE_LIMIT``): REST requests with a valid key, counted under a hash of
  the key (never the key itself), all routes together: flask-limiter's application limit,
  exempting the public paths and the console;
* **failed key attempts per client address** (``FAILED_AUTH_LIMIT``, contract §14 "Surface"):
  a missing or wrong ``X-API-Key`` and a wrong console sign-in key count against one budget
  per address. It is checked *before* the key: once the address is over it, every attempt
  (the right key included) is 429 with ``Retry-After`` until its window has room again, so
  the budget throttles guessing instead of merely announcing it;
* **the console's own** (``CONSOLE_RATE_LIMIT``): every console request (pages, files, the
  progress poll, static files) counts per signed-in session, never against a key's budget;
  requests without a session (the sign-in page) count per address under
  :data:`CONSOLE_ANONYMOUS_LIMIT`. Checked by the console blueprint (api/console/views.py):
  flask-limiter exempts every ``static`` endpoint, and the console answers 429 as HTML.

The client address is ``request.remote_addr``: the peer, or with ``TRUSTED_PROXIES=n`` the
n-th address from the right of ``X-Forwarded-For`` (Werkzeug's ``ProxyFix``, api/__init__.py).

If Redis is unreachable the limiter fails open (``swallow_errors``) and counts in memory per
process: a rate-limit outage must not take the API down with it. The extra budgets here do the
same through the limiter's strategy (its in-memory fallback once the limiter saw Redis fail).
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

KEY_PREFIX = "images-service-ratelimit"
#: Console requests without a session (the sign-in page and its files), per client address.
CONSOLE_ANONYMOUS_LIMIT = "300/minute"


def _caller() -> str:
    key = request.headers.get("X-API-Key")
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return "addr:" + (request.remote_addr or "unknown")


def is_console_path(path: str) -> bool:
    return path == "/ui" or path.startswith("/ui/")


def _exempt_from_key_limit() -> bool:
    path = request.path
    return path in PUBLIC_PATHS or path.startswith("/docs") or is_console_path(path)


def build_limiter(*, redis_url: str, limit: str) -> Limiter:
    """The per-key limiter, not yet attached to an app (``limiter.init_app(app)``)."""
    return Limiter(
        _caller,
        # An application-wide limit: one budget per key across every route (flask-limiter's
        # default limits would count each route apart, multiplying the budget).
        application_limits=[limit],
        application_limits_exempt_when=_exempt_from_key_limit,
        storage_uri=redis_url,
        storage_options={"socket_connect_timeout": 1, "socket_timeout": 1},
        key_prefix=KEY_PREFIX,
        headers_enabled=True,
        swallow_errors=True,
        in_memory_fallback_enabled=True,
        strategy="moving-window",
    )


class Budget:
    """One limit counted per identity in the limiter's storage (moving window), failing open.

    ``wait_s`` only reads; ``hit`` records one request. Both return the seconds until the
    identity's window has room again when it is over the limit, else None.
    """

    def __init__(self, limiter: Limiter, limit: str, name: str) -> None:
        self._limiter = limiter
        self._item = parse(limit)
        self._name = name

    def _identity(self, who: str) -> tuple[str, str, str]:
        return (KEY_PREFIX, self._name, who)

    def _retry_after_s(self, identity: tuple[str, ...]) -> int:
        reset_at = self._limiter.limiter.get_window_stats(self._item, *identity).reset_time
        return max(1, math.ceil(reset_at - time.time()))

    def wait_s(self, who: str) -> int | None:
        identity = self._identity(who)
        try:
            strategy = self._limiter.limiter  # the in-memory fallback while Redis is down
            if strategy.test(self._item, *identity):
                return None
            return self._retry_after_s(identity)
        except Exception as exc:  # fail open, like the per-key limiter
            log.warning("%s limit unavailable: %s", self._name, type(exc).__name__)
            return None

    def hit(self, who: str) -> int | None:
        identity = self._identity(who)
        try:
            if self._limiter.limiter.hit(self._item, *identity):
                return None
            return self._retry_after_s(identity)
        except Exception as exc:
            log.warning("%s limit unavailable: %s", self._name, type(exc).__name__)
            return None


class FailedAuthLimit:
    """Failed key attempts per client address, shared by the API and the console sign-in.

    Call :meth:`wait_s` before looking at the key and refuse with 429 when it returns a
    number; call :meth:`record_failure` after a wrong key. Concurrent attempts may each pass
    the check before any of them is recorded, so a burst can overshoot the budget by at most
    the number of requests the api serves at once.
    """

    def __init__(self, limiter: Limiter, limit: str) -> None:
        self._budget = Budget(limiter, limit, "failed-auth")

    def wait_s(self, address: str | None) -> int | None:
        """Seconds to wait when ``address`` is over its budget, else None (records nothing)."""
        return self._budget.wait_s(address or "unknown")

    def record_failure(self, address: str | None) -> None:
        self._budget.hit(address or "unknown")


class ConsoleLimit:
    """The console's request budget: per signed-in session, else per client address."""

    def __init__(self, limiter: Limiter, session_limit: str,
                 anonymous_limit: str = CONSOLE_ANONYMOUS_LIMIT) -> None:
        self._sessions = Budget(limiter, session_limit, "console-session")
        self._anonymous = Budget(limiter, anonymous_limit, "console-address")

    def hit(self, session_id: str | None, address: str | None) -> int | None:
        """Count one console request; seconds to wait when it is over the budget, else None."""
        if session_id:
            # Hashed: the storage never holds anything that names a session.
            return self._sessions.hit(hashlib.sha256(session_id.encode()).hexdigest()[:32])
        return self._anonymous.hit(address or "unknown")
