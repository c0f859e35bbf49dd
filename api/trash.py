"""Trash endpoints (contract §15): list a collection's trash, restore a folder, purge a document.

Thin views over :class:`images_service.trash_admin.TrashAdmin`, which validates the names,
takes the fleet-wide folder locks and keeps the URL index in step. The purge lives under
``/documents`` (it removes a document's images wherever they are), the rest under ``/trash``.
"""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, jsonify

from api.context import services
from images_service.download.url_index import UrlIndex
from images_service.trash_admin import TrashAdmin

bp = Blueprint("trash", __name__, url_prefix="/api/v1")


def trash_admin() -> TrashAdmin:
    """The trash service on the api's clients (cheap to build: no round trip)."""
    svc = services()
    return TrashAdmin(svc.storage, svc.redis, UrlIndex(svc.mongo, svc.settings.jobs_database))


@bp.get("/trash/<database>/<collection>")
def list_trash(database: str, collection: str):
    items = trash_admin().items(database, collection)
    return jsonify({"items": [asdict(item) for item in items]})


@bp.post("/trash/<database>/<collection>/<folder>/restore")
def restore(database: str, collection: str, folder: str):
    return jsonify({"restored": trash_admin().restore(database, collection, folder)})


@bp.delete("/documents/<database>/<collection>/<document_id>/images")
def purge(database: str, collection: str, document_id: str):
    return jsonify({"removed": trash_admin().purge(database, collection, document_id)})
