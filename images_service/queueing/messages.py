"""Send the service's Dramatiq messages by actor name, without importing the actors.

The api and the listener enqueue through this with a broker of their own (built from the
same settings), so they never need the worker's global broker or its actor modules.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq import Broker

SCAN_QUEUE = "images-scan"
DOWNLOAD_QUEUE = "images-download"
#: Every queue the workers consume, for queue-depth metrics.
QUEUES = (SCAN_QUEUE, DOWNLOAD_QUEUE)

SCAN_ACTOR = "scan_job"
DOCUMENTS_ACTOR = "download_documents"
RETRY_ACTOR = "retry_image"
REFRESH_ACTOR = "refresh_documents"
REFRESH_RETRY_ACTOR = "refresh_image"
TRASH_ACTOR = "trash_document"


class Enqueuer:
    """Builds and enqueues the messages of the pipeline (and the listener's trash requests)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def _send(self, queue: str, actor: str, args: tuple[Any, ...], *, delay_ms: int | None = None) -> None:
        message = dramatiq.Message(queue_name=queue, actor_name=actor, args=args, kwargs={},
                                   options={})
        self.broker.enqueue(message, delay=delay_ms)

    def scan(self, job_id: str) -> None:
        """Enumerate the job's documents (collection, batch and document jobs)."""
        self._send(SCAN_QUEUE, SCAN_ACTOR, (job_id,))

    def documents(self, job_id: str, plans: list[dict[str, Any]]) -> None:
        """Download the images of a few planned documents (first attempts)."""
        self._send(DOWNLOAD_QUEUE, DOCUMENTS_ACTOR, (job_id, plans))

    def retry(self, job_id: str, plan: dict[str, Any], index: int, attempt: int,
              delay_ms: int) -> None:
        """Try one image again after ``delay_ms`` milliseconds (attempt number ``attempt``)."""
        self._send(DOWNLOAD_QUEUE, RETRY_ACTOR, (job_id, plan, index, attempt), delay_ms=delay_ms)

    def refresh(self, job_id: str, plans: list[dict[str, Any]]) -> None:
        """Re-check the stored images of a few planned documents (a refresh job, §16)."""
        self._send(DOWNLOAD_QUEUE, REFRESH_ACTOR, (job_id, plans))

    def refresh_retry(self, job_id: str, plan: dict[str, Any], index: int, attempt: int,
                      delay_ms: int) -> None:
        """Re-check one image again after ``delay_ms`` milliseconds."""
        self._send(DOWNLOAD_QUEUE, REFRESH_RETRY_ACTOR, (job_id, plan, index, attempt),
                   delay_ms=delay_ms)

    def trash(self, database: str, collection: str, source_id_json: str, typed: bool) -> None:
        """Move a deleted document's folders to the trash (contract §15). ``source_id_json``
        is its ``_id`` in Extended JSON; ``typed`` False when the change event did not say the
        ``_id``'s type (nx-27017 gives ``5`` as ``"5"``): the folders are then matched by name."""
        self._send(SCAN_QUEUE, TRASH_ACTOR, (database, collection, source_id_json, typed))
