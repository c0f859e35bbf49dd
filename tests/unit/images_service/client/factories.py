"""A job as the api returns it (contract §6), with overrides."""

from __future__ import annotations

from typing import Any


def make_job(status: str = "running", *, done: int = 1, total: int = 3, downloaded: int = 2,
             skipped: int = 0, failed: int = 0, images_total: int = 9, **overrides: Any) -> dict:
    job = {
        "job_id": "j1", "type": "collection", "status": status, "database": "serpy_db",
        "collection": "hotels", "force": False, "created_at": "2026-11-28T10:00:00Z",
        "started_at": "2026-11-28T10:00:01Z", "finished_at": None,
        "progress": {"documents_total": total, "documents_done": done,
                     "images_total": images_total, "images_downloaded": downloaded,
                     "images_skipped": skipped, "images_failed": failed},
        "errors": [],
    }
    job.update(overrides)
    return job
