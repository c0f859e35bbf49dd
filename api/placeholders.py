"""Placeholder candidates (contract §18): the pHashes shared by the most documents of a
collection, for an operator to review and add to ``PLACEHOLDER_HASHES``.

A thin view over :func:`images_service.content.candidates.placeholder_candidates`, which reads
the service's own rows of finished documents (never the source collection) and is bounded by
``scan``.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from api.context import services
from api.jobs import _int_arg
from images_service.content.candidates import (
    DEFAULT_SCAN,
    DEFAULT_TOP,
    MAX_SCAN,
    MAX_TOP,
    placeholder_candidates,
)
from images_service.content.document import ContentRules
from images_service.jobs.triggers import check_names

bp = Blueprint("placeholders", __name__, url_prefix="/api/v1/placeholders")


@bp.get("/<database>/<collection>")
def list_candidates(database: str, collection: str):
    check_names(database, collection)
    top = _int_arg("top", DEFAULT_TOP, 1, MAX_TOP, clamp=True)
    scan = _int_arg("scan", DEFAULT_SCAN, 1, MAX_SCAN, clamp=True)
    svc = services()
    known = ContentRules.from_settings(svc.settings).known_hashes
    return jsonify(placeholder_candidates(svc.job_documents, database, collection, top=top,
                                          scan=scan, known_hashes=known))
