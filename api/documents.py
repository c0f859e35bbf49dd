"""Document endpoints (contract §13): a document's ``metadata.json`` and the files it lists.

Thin views over :mod:`images_service.documents`. :func:`file_response` is shared with the
web console, whose ``<img>`` elements cannot send ``X-API-Key`` (api/console/views.py).
"""

from __future__ import annotations

from flask import Blueprint, Response, request, stream_with_context
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import PathConverter

from api.context import services
from images_service.documents import DocumentFiles, iter_chunks

bp = Blueprint("documents", __name__, url_prefix="/api/v1/documents")

#: Browsers and proxies may keep a file this long (seconds); it is private to the caller.
CACHE_CONTROL = "private, max-age=3600"


class AnyPathConverter(PathConverter):
    """Like ``path`` but also matching an empty or absolute (``/etc/passwd``) value, so that
    such a request reaches the view and gets the contract's ``file_not_found``, not a
    routing 404 or a redirect."""

    regex = ".*"
    #: Werkzeug infers "matches one segment" from a regex without "/": this one spans many.
    part_isolating = False


def register_converter(state: BlueprintSetupState) -> None:
    """``anypath`` for the app; record it on a blueprint before its routes (deferred
    functions run in the order they were recorded)."""
    state.app.url_map.converters.setdefault("anypath", AnyPathConverter)


bp.record_once(register_converter)


def document_files() -> DocumentFiles:
    svc = services()
    return DocumentFiles(svc.settings, svc.mongo, svc.storage)


def file_response(database: str, collection: str, document_id: str, file: str) -> Response:
    """The bytes of a listed file, streamed from storage, with ETag and caching headers."""
    files = document_files()
    stored = files.listed_file(files.stored_document(database, collection, document_id), file)
    headers = {"Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
    if stored.sha256:
        headers["ETag"] = f'"{stored.sha256}"'
        if request.if_none_match.contains_weak(stored.sha256) or request.if_none_match.star_tag:
            return Response(status=304, headers=headers)
    stream = files.open(stored)
    # stream_with_context keeps the request context alive while gunicorn sends the body;
    # iter_chunks closes the storage stream at the end, or when the client goes away.
    return Response(stream_with_context(iter_chunks(stream)), mimetype=stored.content_type,
                    headers=headers, direct_passthrough=True)


@bp.get("/<database>/<collection>/<document_id>")
def get_document(database: str, collection: str, document_id: str) -> Response:
    stored = document_files().stored_document(database, collection, document_id)
    return Response(stored.raw, mimetype="application/json")


@bp.get("/<database>/<collection>/<document_id>/files/<anypath:file>", merge_slashes=False)
def get_file(database: str, collection: str, document_id: str, file: str) -> Response:
    return file_response(database, collection, document_id, file)
