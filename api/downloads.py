"""Download triggers (contract §7): collection, document and batch; each answers 202 + job."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from api.context import services
from api.requests import json_object, string_field
from images_service.jobs.triggers import (
    check_filter,
    check_force,
    check_image_fields,
    check_limit,
)

bp = Blueprint("downloads", __name__, url_prefix="/api/v1/download")


def accepted(job: dict[str, Any]):
    location = f"/api/v1/jobs/{job['_id']}"
    response = jsonify({"job_id": job["_id"], "status": job["status"], "links": {"self": location}})
    response.status_code = 202
    response.headers["Location"] = location
    return response


def _options(body: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {
        "force": check_force(body.get("force")),
        "image_fields": check_image_fields(body.get("image_fields")),
    }
    return options


@bp.post("/collection/<database>/<collection>")
def collection(database: str, collection: str):
    body = json_object()
    options = _options(body)
    filter_ = body.get("filter")
    if filter_ is not None:
        check_filter(filter_)
    job = services().triggers.collection_job(
        database, collection, filter=filter_, limit=check_limit(body.get("limit")), **options)
    return accepted(job)


@bp.post("/document/<database>/<collection>/<path:document_id>")
def document(database: str, collection: str, document_id: str):
    body = json_object()
    job = services().triggers.document_job(database, collection, document_id, **_options(body))
    return accepted(job)


@bp.post("/batch")
def batch():
    body = json_object(required=True)
    database, collection = string_field(body, "database"), string_field(body, "collection")
    filter_ = body.get("filter", {})
    check_filter(filter_)
    job = services().triggers.collection_job(
        database, collection, filter=filter_, limit=check_limit(body.get("limit")),
        job_type="batch", **_options(body))
    return accepted(job)
