"""Job endpoints (contract §7, §13): list, read, cancel, retry."""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, jsonify, request

from api.context import services
from api.downloads import accepted
from images_service import metrics
from images_service.errors import Conflict, InvalidRequest, NotFound
from images_service.jobs.progress import ProgressTracker, with_live_progress
from images_service.jobs.store import JOB_STATUSES, JOB_TYPES, job_to_api

log = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__, url_prefix="/api/v1/jobs")

MAX_PAGE = 500


def _int_arg(name: str, default: int, low: int, high: int, *, clamp: bool = False) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer") from None
    if clamp and value > high:
        return high  # "at most 500": a larger page size is served as the largest one
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be from {low} to {high}")
    return value


@bp.get("")
def list_jobs():
    status = request.args.get("status") or None
    job_type = request.args.get("type") or None
    if status is not None and status not in JOB_STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(JOB_STATUSES)}")
    if job_type is not None and job_type not in JOB_TYPES:
        raise InvalidRequest(f"type must be one of {', '.join(JOB_TYPES)}")
    limit = _int_arg("limit", 50, 1, MAX_PAGE, clamp=True)
    offset = _int_arg("offset", 0, 0, 10**9)
    jobs, total = services().jobs.list(status=status, job_type=job_type, limit=limit, offset=offset)
    jobs = with_live_progress(jobs, ProgressTracker(services().redis))
    return jsonify({"jobs": [job_to_api(j) for j in jobs], "total": total, "limit": limit,
                    "offset": offset})


def _get(job_id: str) -> dict:
    job = services().jobs.get(job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found", code="job_not_found")
    return job


@bp.get("/<job_id>")
def get_job(job_id: str):
    # The live counters of a running job (Redis) move image by image: contract §6 progress.
    (job,) = with_live_progress([_get(job_id)], ProgressTracker(services().redis))
    return jsonify(job_to_api(job))


@bp.post("/<job_id>/cancel")
def cancel_job(job_id: str):
    return jsonify(job_to_api(cancel(job_id)))


def cancel(job_id: str) -> dict:
    """Cancel a pending or running job (also the web console's cancel button)."""
    job = _get(job_id)
    cancelled = services().jobs.cancel(job_id)
    if cancelled is None:
        current = services().jobs.get(job_id) or job
        raise Conflict(f"job {job_id} is already {current['status']}", code="job_finished")
    metrics.JOBS.labels(cancelled["type"], "cancelled").inc()
    try:
        # The job's Redis state ends with it (contract §10); if Redis does not answer, the
        # worker's next step of this job removes it instead.
        ProgressTracker(services().redis).forget(job_id)
    except redis.RedisError as exc:
        log.warning("job %s cancelled; its Redis state stays until a worker sees it: %s",
                    job_id, exc, extra={"job_id": job_id})
    return cancelled


@bp.post("/<job_id>/retry")
def retry_job(job_id: str):
    return accepted(services().triggers.retry_job(job_id))
