"""The refresh trigger (contract §16): re-check what was downloaded; answers 202 + job."""

from __future__ import annotations

from flask import Blueprint

from api.context import services
from api.downloads import accepted
from api.requests import json_object
from images_service.jobs.triggers import check_filter, check_limit, check_older_than_days

bp = Blueprint("refresh", __name__, url_prefix="/api/v1/refresh")


@bp.post("/<database>/<collection>")
def refresh(database: str, collection: str):
    body = json_object()
    filter_ = body.get("filter")
    if filter_ is not None:
        check_filter(filter_)
    job = services().triggers.refresh_job(
        database, collection, filter=filter_, limit=check_limit(body.get("limit")),
        older_than_days=check_older_than_days(body.get("older_than_days")))
    return accepted(job)
