"""``GET /api/v1/health``: real, short-timeout checks of MongoDB and Redis (contract §7)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from flask import Blueprint, jsonify

from api.context import services
from images_service.backends import check_mongo, check_redis

bp = Blueprint("health", __name__)


@bp.get("/api/v1/health")
@bp.get("/health")
def health():
    svc = services()
    # Both probes run at once so the worst case is one timeout, not the sum of two.
    with ThreadPoolExecutor(max_workers=2) as pool:
        mongo = pool.submit(check_mongo, svc.health_mongo)
        red = pool.submit(check_redis, svc.health_redis)
        checks = {"mongodb": mongo.result(), "redis": red.result()}
    healthy = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if healthy else "degraded", "checks": checks}
    return jsonify(body), 200 if healthy else 503
