"""The reconcile trigger (contract §15): compare a collection with its tree; answers 202 + job."""

from __future__ import annotations

from flask import Blueprint

from api.context import services
from api.downloads import accepted
from api.requests import json_object
from images_service.jobs.triggers import check_dry_run

bp = Blueprint("reconcile", __name__, url_prefix="/api/v1/reconcile")


@bp.post("/<database>/<collection>")
def reconcile(database: str, collection: str):
    body = json_object()
    job = services().triggers.reconcile_job(database, collection,
                                            dry_run=check_dry_run(body.get("dry_run")))
    return accepted(job)
