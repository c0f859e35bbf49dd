"""The Dramatiq actors: thin wrappers that hand each message to the download pipeline.

Retries of *image downloads* are not Dramatiq's: first attempts run several documents in one
message, so a failed image continues as its own delayed ``retry_image`` message carrying its
attempt number (workers/pipeline/). Dramatiq's Retries middleware still retries a whole
message that raised unexpectedly (MongoDB or Redis unreachable), ``MAX_RETRIES`` times with
backoff between ``RETRY_BACKOFF_MIN_MS`` and ``RETRY_BACKOFF_MAX_MS`` (the broker's settings,
images_service/queueing/broker.py); every step is idempotent, so such a replay is harmless.
A message whose retries are exhausted ends its job as failed (``job_work_exhausted``), and a
message interrupted by a shutdown is requeued (workers/failures.py).
"""

from __future__ import annotations

import dramatiq

from images_service.queueing.messages import (
    DOCUMENTS_ACTOR,
    DOWNLOAD_QUEUE,
    REFRESH_ACTOR,
    REFRESH_RETRY_ACTOR,
    RETRY_ACTOR,
    SCAN_ACTOR,
    SCAN_QUEUE,
    TRASH_ACTOR,
)
from workers.failures import fail_exhausted_job, requeue_on_shutdown
from workers.pipeline.context import WorkerShuttingDown
from workers.services import current_pipeline
from workers.trash import trash_document as trash_folders

HOUR_MS = 3600 * 1000
EXHAUSTED_ACTOR = "job_work_exhausted"


@dramatiq.actor(actor_name=SCAN_ACTOR, queue_name=SCAN_QUEUE, time_limit=2 * HOUR_MS,
                on_retry_exhausted=EXHAUSTED_ACTOR)
def scan_job(job_id: str) -> None:
    with requeue_on_shutdown():
        current_pipeline().scan(job_id)


@dramatiq.actor(actor_name=DOCUMENTS_ACTOR, queue_name=DOWNLOAD_QUEUE, time_limit=HOUR_MS // 2,
                on_retry_exhausted=EXHAUSTED_ACTOR)
def download_documents(job_id: str, plans: list[dict]) -> None:
    with requeue_on_shutdown():
        current_pipeline().download_documents(job_id, plans)


@dramatiq.actor(actor_name=RETRY_ACTOR, queue_name=DOWNLOAD_QUEUE, time_limit=HOUR_MS // 6,
                on_retry_exhausted=EXHAUSTED_ACTOR)
def retry_image(job_id: str, plan: dict, index: int, attempt: int) -> None:
    with requeue_on_shutdown():
        current_pipeline().retry_image(job_id, plan, index, attempt)


@dramatiq.actor(actor_name=REFRESH_ACTOR, queue_name=DOWNLOAD_QUEUE, time_limit=HOUR_MS // 2,
                on_retry_exhausted=EXHAUSTED_ACTOR)
def refresh_documents(job_id: str, plans: list[dict]) -> None:
    with requeue_on_shutdown():
        current_pipeline().refresher.refresh_documents(job_id, plans)


@dramatiq.actor(actor_name=REFRESH_RETRY_ACTOR, queue_name=DOWNLOAD_QUEUE,
                time_limit=HOUR_MS // 6, on_retry_exhausted=EXHAUSTED_ACTOR)
def refresh_image(job_id: str, plan: dict, index: int, attempt: int) -> None:
    with requeue_on_shutdown():
        current_pipeline().refresher.refresh_image(job_id, plan, index, attempt)


@dramatiq.actor(actor_name=TRASH_ACTOR, queue_name=SCAN_QUEUE, time_limit=HOUR_MS // 6)
def trash_document(database: str, collection: str, source_id_json: str,
                   typed: bool = True) -> None:
    """A document was deleted (the listener saw it): its folders go to the trash (§15).
    No job: a message whose retries run out is only dead-lettered (redrive it)."""
    with requeue_on_shutdown():
        pipeline = current_pipeline()
        if pipeline.ctx.shutting_down:  # start nothing: the message goes to another worker
            raise WorkerShuttingDown("the worker is shutting down")
        trash_folders(pipeline.ctx, database, collection, source_id_json, typed)


@dramatiq.actor(actor_name=EXHAUSTED_ACTOR, queue_name=SCAN_QUEUE)
def job_work_exhausted(message: dict, retry_info: dict) -> None:
    """Sent by the Retries middleware with the dead-lettered message (as a dict)."""
    fail_exhausted_job(current_pipeline(), message, int(retry_info.get("retries", 0)))
