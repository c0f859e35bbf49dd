"""``GET /api/v1/health``: real, short-timeout checks of MongoDB, Redis and the image store
(contract §7, §11: the storage path is writable / the bucket answers)."""

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
    # The probes run at once so the worst case is one timeout, not the sum of three.
    with ThreadPoolExecutor(max_workers=3) as pool:
        mongo = pool.submit(check_mongo, svc.health_mongo)
        red = pool.submit(check_redis, svc.health_redis)
        storage = pool.submit(svc.health_storage.check)
        checks = {"mongodb": mongo.result(), "redis": red.result(), "storage": storage.result()}
    healthy = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if healthy else "degraded", "checks": checks}
    return jsonify(body), 200 if healthy else 503
