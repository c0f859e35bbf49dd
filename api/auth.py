"""API-key authentication: every ``/api/v1`` path except health and metrics needs ``X-API-Key``.

Keys are compared in constant time against each accepted key (``API_KEY`` plus ``API_KEYS``
for rotation). The check runs before routing is trusted, so an unknown path under the prefix
answers 401 too and reveals nothing about which routes exist. Failed attempts are counted per
client address (``failed_attempts``, see api/limits.py), and that budget is checked *before*
the key: an address over it gets 429 whatever key it sends, the right one included (contract
§14 "Surface"), so guessing is throttled rather than answered.
"""

from __future__ import annotations

import hmac
from typing import Protocol

from flask import Flask, request
from werkzeug.exceptions import TooManyRequests

from images_service.errors import Unauthorized

PREFIX = "/api/v1"
#: Paths open without a key (contract §7).
PUBLIC_PATHS = frozenset({f"{PREFIX}/health", f"{PREFIX}/metrics", "/health", "/metrics"})


def key_is_valid(candidate: str | None, accepted: tuple[str, ...]) -> bool:
    """Constant-time comparison against every accepted key (no early exit on a match)."""
    if not candidate:
        return False
    given = candidate.encode()
    matched = False
    for key in accepted:
        matched |= hmac.compare_digest(given, key.encode())
    return matched


def path_needs_key(path: str, *, docs_open: bool) -> bool:
    if path in PUBLIC_PATHS:
        return False
    if docs_open and path in ("/docs", f"{PREFIX}/docs") or path.startswith("/docs/static/"):
        return False
    return path.startswith(PREFIX) or path in ("/docs", "/openapi.json")


class FailedAttempts(Protocol):
    def wait_s(self, address: str | None) -> int | None:
        """Seconds to wait when the address is over its budget, else None."""

    def record_failure(self, address: str | None) -> None:
        """Count one failed attempt of the address."""


def init_auth(app: Flask, accepted_keys: tuple[str, ...], *, docs_open: bool,
              failed_attempts: FailedAttempts | None = None) -> None:
    @app.before_request
    def _require_key() -> None:
        if request.method == "OPTIONS":  # CORS preflight carries no credentials
            return
        if not path_needs_key(request.path, docs_open=docs_open):
            return
        address = request.remote_addr
        # The budget first: over it, not even the right key is looked at.
        wait_s = failed_attempts.wait_s(address) if failed_attempts else None
        if wait_s is not None:
            raise TooManyRequests("too many failed authentication attempts", retry_after=wait_s)
        if not key_is_valid(request.headers.get("X-API-Key"), accepted_keys):
            if failed_attempts:
                failed_attempts.record_failure(address)
            raise Unauthorized("missing or invalid X-API-Key header")
