"""``GET /api/v1/health``: short-timeout checks of MongoDB, Redis and the image store
(contract §7, §11: the storage path is writable / the bucket answers), answered from results
at most :data:`CACHE_S` seconds old (contract §14 "Surface").

``/health`` is public and unthrottled, and a real check writes a probe file or sends a
HeadBucket: without the cache, anyone could make every api process hammer every backend.
The cache is per process (each gunicorn worker probes at most once per window, whatever the
request rate), and single-flight: requests arriving while a probe runs wait for its result
instead of starting their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from flask import Blueprint, current_app, jsonify
from flask.blueprints import BlueprintSetupState

from api.context import EXTENSION_KEY as SERVICES_KEY
from api.context import ApiServices
from images_service.backends import check_mongo, check_redis

bp = Blueprint("health", __name__)

#: Results are reused for this long (seconds), counted from the start of the probe.
CACHE_S = 5.0
EXTENSION_KEY = "images_service_health"


def probe(svc: ApiServices) -> dict[str, str]:
    """One real check of every backend."""
    # The probes run at once so the worst case is one timeout, not the sum of three.
    with ThreadPoolExecutor(max_workers=3) as pool:
        mongo = pool.submit(check_mongo, svc.health_mongo)
        red = pool.submit(check_redis, svc.health_redis)
        storage = pool.submit(svc.health_storage.check)
        return {"mongodb": mongo.result(), "redis": red.result(), "storage": storage.result()}


class CachedChecks:
    """The latest checks, probed again once they are ``ttl_s`` old."""

    def __init__(self, probe: Callable[[], dict[str, str]], *, ttl_s: float = CACHE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._probe = probe
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._checks: dict[str, str] | None = None
        self._probed_at = 0.0

    def _fresh(self) -> dict[str, str] | None:
        if self._checks is not None and self._clock() - self._probed_at < self._ttl_s:
            return self._checks
        return None

    def get(self) -> dict[str, str]:
        checks = self._fresh()
        if checks is not None:
            return checks
        with self._lock:  # one probe at a time; latecomers take its result
            checks = self._fresh()
            if checks is None:
                started = self._clock()
                checks = self._probe()
                self._checks, self._probed_at = checks, started
            return checks

    def expire(self) -> None:
        """Forget the cached result: the next call probes (after a known change)."""
        with self._lock:
            self._checks = None


@bp.record_once
def _build_cache(state: BlueprintSetupState) -> None:
    extensions = state.app.extensions
    extensions[EXTENSION_KEY] = CachedChecks(lambda: probe(extensions[SERVICES_KEY]))


@bp.get("/api/v1/health")
@bp.get("/health")
def health():
    checks = current_app.extensions[EXTENSION_KEY].get()
    healthy = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if healthy else "degraded", "checks": checks}
    return jsonify(body), 200 if healthy else 503
