"""Queue endpoints (contract §13): depths and live workers, redrive of dead letters."""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, jsonify

from api.context import services
from images_service.queueing.queues import live_workers, queue_depths, redrive

bp = Blueprint("queues", __name__, url_prefix="/api/v1/queues")


@bp.get("")
def list_queues():
    client = services().redis
    return jsonify({"queues": [asdict(depth) for depth in queue_depths(client)],
                    "workers": live_workers(client)})


@bp.post("/<name>/redrive")
def redrive_queue(name: str):
    return jsonify({"redriven": redrive(services().redis, name)})
