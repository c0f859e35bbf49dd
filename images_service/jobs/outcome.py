"""How a job is shown to a person: one vocabulary for the web console and the command line.

A job's ``status`` says whether its work ran (contract §6: ``completed`` means every document
was processed, even when some images failed). A person reading "completed" in green assumes
nothing failed, so the console and the CLI show such a job as "completed with N failed", amber,
and the CLI's exit status says 1 for it (contract §13), with or without ``--wait``. Kept free
of server imports: the command line uses it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def outcome(job: Mapping[str, Any]) -> tuple[str, str]:
    """How a job (API form) is shown to a person, in one vocabulary for the console and the
    command line: ``(label, kind)``. A job that *completed* with failed images (every document
    processed, some images failed) is ``"completed with N failed"`` of kind ``partial`` (amber),
    never a plain green "completed"; otherwise both are the status."""
    status = job["status"]
    failed = int((job.get("progress") or {}).get("images_failed") or 0)
    if status == "completed" and failed:
        return f"completed with {failed} failed", "partial"
    return status, status
