"""The console's trash and document pages (contract §15): restore a trashed folder, purge a
document after a confirmation step.

Routes of the console blueprint (api/console/views.py), so they share its session guard, CSRF
check, rate limit and error pages; imported by :func:`api.console.init_console` before the
blueprint is registered. The actions are the API's service (images_service/trash_admin.py).

* ``/ui/trash`` — the collections that have a trash, and a form to open any collection's.
* ``/ui/trash/{db}/{coll}`` — its trashed folders, newest deletion first, each with a restore
  button (a POST form with the CSRF token) and a link to purge its document.
* ``/ui/documents/{db}/{coll}/{id}`` — what is stored for one document (its images, or
  nothing when it was never downloaded or was deleted from MongoDB) and a purge button.
* ``/ui/documents/{db}/{coll}/{id}/purge`` — the confirmation step: a page listing what will
  be removed, whose form alone can purge (the POST must carry ``confirm`` = the document id,
  which only this page fills in). Works without JavaScript, like every console page.
"""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for

from api.console.pages import document_view
from api.console.views import bp
from api.documents import document_files
from api.trash import trash_admin
from images_service.errors import ApiError, NotFound
from images_service.jobs.triggers import check_names

#: Trashed folders listed per page.
ITEMS_PER_PAGE = 50


def _trash_url(database: str, collection: str) -> str:
    return url_for("console.trash_collection", database=database, collection=collection)


@bp.get("/trash")
def trash_index():
    database = request.args.get("database", "").strip()
    collection = request.args.get("collection", "").strip()
    if database or collection:
        check_names(database, collection)  # 400 page for a bad name, nothing looked up
        return redirect(_trash_url(database, collection), code=303)
    return render_template("console/trash_index.html", collections=trash_admin().collections())


@bp.get("/trash/<database>/<collection>")
def trash_collection(database: str, collection: str):
    items = trash_admin().items(database, collection)
    raw = request.args.get("page", "")
    page = int(raw) if raw.isdigit() and 0 < int(raw) < 10**6 else 1
    start = (page - 1) * ITEMS_PER_PAGE
    return render_template(
        "console/trash.html", database=database, collection=collection,
        items=items[start:start + ITEMS_PER_PAGE], total=len(items), page=page,
        more=len(items) > start + ITEMS_PER_PAGE)


@bp.post("/trash/<database>/<collection>/<folder>/restore")
def restore_folder(database: str, collection: str, folder: str):
    try:
        trash_admin().restore(database, collection, folder)
        flash(f"{folder} restored to {database}/{collection}/.", "info")
    except ApiError as exc:
        if exc.code not in ("not_in_trash", "folder_conflict"):
            raise
        flash(f"Not restored: {exc.message} ({exc.code}).", "error")
    return redirect(_trash_url(database, collection), code=303)


@bp.get("/documents/<database>/<collection>/<document_id>")
def document(database: str, collection: str, document_id: str):
    try:
        stored = document_files().stored_document(database, collection, document_id)
    except NotFound as exc:
        if exc.code != "document_not_found":
            raise
        stored = None  # never downloaded, or deleted from MongoDB: its copies may remain
    # The tree folder is known from MongoDB when the document exists; only the trash (and,
    # for a document gone from MongoDB, the tree) is searched by id.
    copies = trash_admin().preview(database, collection, document_id,
                                   places=("trash",) if stored else ("tree", "trash"))
    return render_template(
        "console/document.html", database=database, collection=collection,
        doc=document_view(document_id, stored), copies=copies,
        scope={"database": database, "collection": collection})


@bp.get("/documents/<database>/<collection>/<document_id>/purge")
def confirm_purge(database: str, collection: str, document_id: str):
    copies = trash_admin().preview(database, collection, document_id)
    if not copies:
        raise NotFound(f"document {document_id} of {database}.{collection} has no images "
                       "stored and none in the trash", code="document_not_found")
    return render_template("console/purge.html", database=database, collection=collection,
                           document_id=document_id, copies=copies,
                           files=sum(copy.files for copy in copies))


@bp.post("/documents/<database>/<collection>/<document_id>/purge")
def purge_document(database: str, collection: str, document_id: str):
    if request.form.get("confirm") != document_id:
        # Not sent from the confirmation page: show it instead of purging.
        flash("Confirm the purge on this page first: nothing was removed.", "error")
        return redirect(url_for("console.confirm_purge", database=database,
                                collection=collection, document_id=document_id), code=303)
    try:
        removed = trash_admin().purge(database, collection, document_id)
    except NotFound as exc:
        if exc.code != "document_not_found":
            raise
        flash(f"Nothing to purge: {exc.message}.", "error")
    else:
        flash(f"Document {document_id} purged: {removed} file{'' if removed == 1 else 's'} "
              "removed, trash included.", "info")
    return redirect(_trash_url(database, collection), code=303)

