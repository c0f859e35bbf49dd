"""The Dramatiq actors: thin wrappers that hand each message to the download pipeline.

Retries of *image downloads* are not Dramatiq's: first attempts run several documents in one
message, so a failed image continues as its own delayed ``retry_image`` message carrying its
attempt number (workers/pipeline/). Dramatiq's Retries middleware still retries a whole
message that raised unexpectedly (MongoDB or Redis unreachable), with its own backoff; every
step is idempotent, so such a replay is harmless.
"""

from __future__ import annotations

import dramatiq

from images_service.queueing.messages import (
    DOCUMENTS_ACTOR, DOWNLOAD_QUEUE, RETRY_ACTOR, SCAN_ACTOR, SCAN_QUEUE,
)
from workers.services import current_pipeline

HOUR_MS = 3600 * 1000


@dramatiq.actor(actor_name=SCAN_ACTOR, queue_name=SCAN_QUEUE, max_retries=10,
                time_limit=2 * HOUR_MS, min_backoff=1000, max_backoff=60_000)
def scan_job(job_id: str) -> None:
    current_pipeline().scan(job_id)


@dramatiq.actor(actor_name=DOCUMENTS_ACTOR, queue_name=DOWNLOAD_QUEUE, max_retries=10,
                time_limit=HOUR_MS // 2, min_backoff=1000, max_backoff=60_000)
def download_documents(job_id: str, plans: list[dict]) -> None:
    current_pipeline().download_documents(job_id, plans)


@dramatiq.actor(actor_name=RETRY_ACTOR, queue_name=DOWNLOAD_QUEUE, max_retries=10,
                time_limit=HOUR_MS // 6, min_backoff=1000, max_backoff=60_000)
def retry_image(job_id: str, plan: dict, index: int, attempt: int) -> None:
    current_pipeline().retry_image(job_id, plan, index, attempt)
