"""A planned document as a message payload, and the numbers that size the pipeline's work.

A ``download_documents`` or ``retry_image`` message carries each document's plan as plain
JSON (names, folder, numbered URLs, the source ``_id`` as Extended JSON), so a worker needs
no second read of the source document to download it.
"""

from __future__ import annotations

import random
from typing import Any

from bson import json_util

from images_service.config.settings import Settings
from images_service.download.engine import DocumentPlan, ImageTask


def plan_to_message(plan: DocumentPlan, source_id: Any) -> dict[str, Any]:
    return {
        "database": plan.database,
        "collection": plan.collection,
        "document_id": plan.document_id,
        "source_id": json_util.dumps(source_id),
        "search_field": plan.search_field,
        "search_value": plan.search_value,
        "relative_folder": plan.relative_folder,
        "previous_relative_folder": plan.previous_relative_folder,
        "images": [[task.index, task.url] for task in plan.images],
        # What the plan was made from (§14): a message planned before the plan that last
        # wrote the folder is stale. Absent from messages sent before this was added.
        "document_key": plan.document_key,
        "planned_at_ms": plan.planned_at_ms,
    }


def plan_from_message(data: dict[str, Any]) -> DocumentPlan:
    return DocumentPlan(
        database=data["database"],
        collection=data["collection"],
        document_id=data["document_id"],
        search_field=data["search_field"],
        search_value=data["search_value"],
        relative_folder=data["relative_folder"],
        images=tuple(ImageTask(int(i), str(u)) for i, u in data["images"]),
        previous_relative_folder=data.get("previous_relative_folder"),
        document_key=data.get("document_key"),
        planned_at_ms=int(data.get("planned_at_ms") or 0),
    )


def document_key(plan: DocumentPlan) -> str:
    """The document's key in the job's progress state (unique within a job)."""
    return f"{plan.database}/{plan.collection}/{plan.document_id}"


def backoff_ms(settings: Settings, attempt: int, retry_after_s: float | None) -> int:
    """Delay before attempt ``attempt + 1``: Retry-After when given, else exponential with
    full jitter between RETRY_BACKOFF_MIN_MS and RETRY_BACKOFF_MAX_MS."""
    low, high = settings.retry_backoff_min_ms, settings.retry_backoff_max_ms
    if retry_after_s is not None:
        return int(min(max(retry_after_s * 1000, low), high))
    ceiling = min(high, low * 2 ** (attempt - 1))
    return int(random.uniform(max(low, ceiling / 2), max(low, ceiling)))


def download_threads(settings: Settings) -> int:
    """Download threads per worker process: its share of the fleet cap, 4 to 64.

    More threads would only poll Redis for slots they cannot get: measured, a pool of the
    whole cap per process spent ~15% of the worker's time in slot polling.
    """
    share = -(-settings.max_concurrent_downloads // settings.worker_processes)
    return max(4, min(64, share + 2))
