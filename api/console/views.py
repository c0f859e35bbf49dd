"""The console's pages and actions: thin views over the same service functions as the API.

Every request first counts against the console's own budget (``CONSOLE_RATE_LIMIT`` per
signed-in session, a fixed budget per address without one; api/limits.py), static files
included; over it the answer is an HTML 429 page with ``Retry-After``. Every view but sign-in
and the static files needs a session: a page redirects to sign-in, an action (POST) or the
progress JSON is refused with 401. Every POST carries a CSRF token (flask-wtf), checked before
the action runs. Errors render as HTML pages here; the JSON API keeps its own handlers
(api/errors.py).
"""

from __future__ import annotations

import time
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf.csrf import CSRFError
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from api.console.pages import job_documents, live_progress, progress_bars
from api.context import services
from api.documents import document_files, file_response, register_converter
from api.jobs import cancel
from images_service.download.host_state import paused_hosts
from images_service.errors import ApiError, NotFound
from images_service.jobs.outcome import outcome
from images_service.jobs.store import ACTIVE, JOB_STATUSES, JOB_TYPES, job_to_api
from images_service.queueing.queues import live_workers, queue_depths, redrive
from workers.listener.status import read_status

bp = Blueprint("console", __name__, url_prefix="/ui", template_folder="templates",
               static_folder="static")
bp.record_once(register_converter)  # before the files route below

#: Reachable without a session.
PUBLIC_ENDPOINTS = frozenset({"console.sign_in", "console.static"})
JOBS_PER_PAGE = 20
#: Pages with running jobs reload this often (seconds) when JavaScript is off.
REFRESH_S = 5


def _ext() -> dict[str, Any]:
    from api.console import EXTENSION_KEY

    return current_app.extensions[EXTENSION_KEY]


def _page_arg(name: str = "page") -> int:
    raw = request.args.get(name, "")
    return int(raw) if raw.isdigit() and 0 < int(raw) < 10**6 else 1


def _error_page(status: int, code: str, message: str, headers: dict[str, str] | None = None):
    body = render_template("console/error.html", status=status, code=code, message=message)
    return Response(body, status=status, headers=headers or {})


@bp.before_request
def _limit():
    # Registered first, so it runs before the session guard: a flood of unsigned requests
    # is refused per address before anything else is done for it.
    limit = _ext()["limit"]
    if limit is None:
        return None
    wait_s = limit.hit(_ext()["auth"].session_id(), request.remote_addr)
    if wait_s is None:
        return None
    return _error_page(429, "rate_limited", "Too many console requests; try again in "
                       f"{wait_s} s.", {"Retry-After": str(wait_s)})


@bp.before_request
def _guard():
    if request.endpoint not in PUBLIC_ENDPOINTS and not _ext()["auth"].signed_in():
        if request.method in ("GET", "HEAD") and request.endpoint != "console.progress":
            target = request.full_path.rstrip("?")
            return redirect(url_for("console.sign_in", next=target))
        return _error_page(401, "unauthorized", "Sign in first: nothing was done.")
    if request.method == "POST":
        _ext()["csrf"].protect()  # raises CSRFError (400) without a valid token
    return None


@bp.app_template_global("job_outcome")
def _job_outcome(job: dict[str, Any]) -> tuple[str, str]:
    """A job's label and kind in the one vocabulary of console and CLI (images_service.jobs)."""
    return outcome(job)


@bp.context_processor
def _template_globals() -> dict[str, Any]:
    return {"signed_in": request.endpoint not in PUBLIC_ENDPOINTS or _ext()["auth"].signed_in()}


@bp.errorhandler(CSRFError)
def _csrf_error(exc: CSRFError):
    return _error_page(400, "csrf_failed", f"The form was refused: {exc.description} "
                       "Reload the page and try again.")


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return _error_page(exc.status, exc.code, exc.message)


@bp.errorhandler(PyMongoError)
@bp.errorhandler(RedisError)
def _backend_down(exc: Exception):
    return _error_page(503, "unavailable", f"A backing service is unavailable: {type(exc).__name__}")


# --- signing in and out ---------------------------------------------------------------------

def _safe_next(target: str | None) -> str:
    # Only back into the console: never an open redirect to another site.
    if target and target.startswith("/ui/") and not target.startswith("//"):
        return target
    return url_for("console.jobs")


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    auth = _ext()["auth"]
    next_url = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if auth.signed_in():
            return redirect(next_url)
        return render_template("console/sign_in.html", next_url=next_url)
    key = request.form.get("api_key", "")
    failed = _ext()["failed_attempts"]
    # The failed-key budget before the key (contract §14): over it, even the right key waits.
    wait_s = failed.wait_s(request.remote_addr) if failed else None
    if wait_s is not None:
        return _error_page(429, "rate_limited", "Too many failed sign-ins from this address; "
                           f"try again in {wait_s} s.", {"Retry-After": str(wait_s)})
    if auth.key_valid(key):
        auth.sign_in(key)
        return redirect(next_url, code=303)
    if failed:
        failed.record_failure(request.remote_addr)
    body = render_template("console/sign_in.html", next_url=next_url,
                           error="That API key is not accepted.")
    return Response(body, status=401)


@bp.post("/sign-out")
def sign_out():
    _ext()["auth"].sign_out()
    flash("Signed out.", "info")
    return redirect(url_for("console.sign_in"), code=303)


# --- jobs -------------------------------------------------------------------------------------

@bp.get("/")
def jobs():
    status = request.args.get("status") if request.args.get("status") in JOB_STATUSES else None
    job_type = request.args.get("type") if request.args.get("type") in JOB_TYPES else None
    page = _page_arg()
    raw, total = services().jobs.list(status=status, job_type=job_type, limit=JOBS_PER_PAGE,
                                      offset=(page - 1) * JOBS_PER_PAGE)
    rows = [(job, progress_bars(job)) for job in map(job_to_api, raw)]
    any_active = any(job["status"] in ACTIVE for job, _ in rows)
    return render_template(
        "console/jobs.html", rows=rows, total=total, page=page, per_page=JOBS_PER_PAGE,
        status=status, job_type=job_type, statuses=JOB_STATUSES, types=JOB_TYPES,
        refresh_s=REFRESH_S if any_active else None)


@bp.get("/jobs/<job_id>")
def job(job_id: str):
    raw = services().jobs.get(job_id)
    if raw is None:
        raise NotFound(f"job {job_id} not found", code="job_not_found")
    api_job = job_to_api(raw)
    page = _page_arg("documents_page")
    documents, more = job_documents(raw, document_files(), services().settings,
                                    services().job_documents, page=page)
    active = api_job["status"] in ACTIVE
    return render_template(
        "console/job.html", job=api_job, bars=progress_bars(api_job), documents=documents,
        documents_page=page, more_documents=more, active=active,
        refresh_s=REFRESH_S if active else None)


@bp.get("/progress.json")
def progress():
    found = {}
    for job_id in request.args.getlist("job")[:JOBS_PER_PAGE]:
        raw = services().jobs.get(job_id)
        if raw is not None:
            found[job_id] = live_progress(job_to_api(raw))
    return jsonify({"jobs": found})


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str):
    try:
        cancel(job_id)
        flash(f"Job {job_id} cancelled.", "info")
    except ApiError as exc:
        if exc.status != 409:
            raise
        flash(f"Not cancelled: {exc.message}.", "error")
    return redirect(url_for("console.job", job_id=job_id), code=303)


@bp.post("/jobs/<job_id>/retry")
def retry_job(job_id: str):
    try:
        new_job = services().triggers.retry_job(job_id)
    except ApiError as exc:
        if exc.status not in (404, 409) or exc.code == "job_not_found":
            raise
        flash(f"Not retried: {exc.message} ({exc.code}).", "error")
        return redirect(url_for("console.job", job_id=job_id), code=303)
    flash(f"Retry of job {job_id} started.", "info")
    return redirect(url_for("console.job", job_id=new_job["_id"]), code=303)


# --- queues, listener, files ------------------------------------------------------------------

@bp.get("/queues")
def queues():
    client = services().redis
    return render_template("console/queues.html", queues=queue_depths(client),
                           workers=live_workers(client), paused=paused_hosts(client),
                           now_ms=int(time.time() * 1000))


@bp.post("/queues/<name>/redrive")
def redrive_queue(name: str):
    moved = redrive(services().redis, name)
    flash(f"{moved} dead-lettered message{'s' if moved != 1 else ''} of {name} enqueued again.",
          "info")
    return redirect(url_for("console.queues"), code=303)


@bp.get("/listener")
def listener():
    svc = services()
    status = read_status(svc.mongo, svc.redis, svc.settings.jobs_database)
    return render_template("console/listener.html", status=status, now=time.time())


@bp.get("/files/<database>/<collection>/<document_id>/<anypath:file>", merge_slashes=False)
def file(database: str, collection: str, document_id: str, file: str):
    # The API's files endpoint, authorised by the session: an <img> cannot send X-API-Key.
    return file_response(database, collection, document_id, file)
