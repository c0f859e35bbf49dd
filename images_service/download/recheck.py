"""Re-checking one stored image at its source (contract §16): a conditional GET and its result.

:func:`recheck` asks the image's URL again with the validators its record keeps
(``If-None-Match`` / ``If-Modified-Since``), through the same fetcher as a download (SSRF
guard, redirects, size cap; the caller holds the download slots and owns the retries), and
returns what the record becomes:

* ``not_modified`` — a ``304`` (no body read): only ``checked_at`` and any validators it
  carries change;
* ``unchanged`` — a ``200`` with the stored bytes (same sha256): only ``checked_at`` and the
  validators change (counted as not modified);
* ``changed`` — a ``200`` with other bytes that validate: the file is replaced atomically, the
  variants made again from the new bytes, and ``previous`` keeps the replaced version's
  sha256 and time (the last :data:`MAX_PREVIOUS`, newest first);
* ``missing`` / ``gone`` — a ``404`` or ``410``: the file is kept and ``source`` records
  ``{"status", "since", "http_status", "misses"}``: ``gone`` after ``GONE_AFTER_MISSES``
  misses counted at least ``GONE_MIN_INTERVAL_HOURS`` apart, or at once on a ``410``.

Any successful check removes ``source``. Any other failure raises DownloadError and changes
nothing (the caller retries it as §8 says and, when retries run out, counts it failed without
making the image failed).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any

from images_service.config.settings import Settings
from images_service.download import variants
from images_service.download.folder import DocumentFolder
from images_service.download.planning import ImageTask
from images_service.errors import DownloadError
from images_service.fetching.fetcher import Fetcher, NotModified, Validators
from images_service.storage.metadata import format_utc

#: Replaced versions kept in ``previous``.
MAX_PREVIOUS = 5
NOT_MODIFIED, UNCHANGED, CHANGED, MISSING, GONE = (
    "not_modified", "unchanged", "changed", "missing", "gone")


def recheck(folder: DocumentFolder, record: Mapping[str, Any], fetcher: Fetcher,
            settings: Settings, *, now: datetime | None = None) -> tuple[str, dict[str, Any]]:
    """Re-check the source of a stored image; ``(outcome, new record)``. Raises DownloadError
    for any failure other than 404/410 (nothing changed then)."""
    now = now or datetime.now(timezone.utc)
    task = ImageTask(int(record["index"]), str(record["url"]))
    validators = Validators(record.get("etag"), record.get("last_modified"))
    try:
        result = fetcher.fetch(task.url, folder.temp_dir(), validators=validators)
    except DownloadError as exc:
        if exc.http_status in (404, 410):
            return _missed(record, exc.http_status, now, settings)
        raise
    if isinstance(result, NotModified):
        return NOT_MODIFIED, _checked(record, now, result.etag, result.last_modified)
    try:
        info, rendered = variants.validate(result.path, settings, sha256=result.sha256,
                                           size=result.bytes)
        if info.sha256 == record.get("sha256"):
            result.discard()
            return UNCHANGED, _checked(record, now, result.etag, result.last_modified)
        file = folder.store_original(task, result.path, image_format=info.format,
                                     sha256=info.sha256)
    except BaseException:
        result.discard()
        raise
    old = record.get("file")
    if isinstance(old, str) and PurePosixPath(old).name != PurePosixPath(file).name:
        folder.remove([old])  # img_001.png is now img_001.jpg
    previous = [{"sha256": record.get("sha256"), "replaced_at": format_utc(now)},
                *(record.get("previous") or [])][:MAX_PREVIOUS]
    changed: dict[str, Any] = {
        key: value for key, value in record.items()
        if key not in ("processed", "source", "etag", "last_modified")
    }
    changed.update({
        "file": file, "sha256": info.sha256, "bytes": info.bytes, "format": info.format,
        "width": info.width, "height": info.height, "content_type": result.content_type,
        "http_status": result.http_status, "downloaded_at": format_utc(now),
        "checked_at": format_utc(now), "previous": previous,
    })
    if result.etag:
        changed["etag"] = result.etag
    if result.last_modified:
        changed["last_modified"] = result.last_modified
    return CHANGED, folder.store_variants(changed, rendered)


def _checked(record: Mapping[str, Any], now: datetime, etag: str | None,
             last_modified: str | None) -> dict[str, Any]:
    updated = {key: value for key, value in record.items() if key != "source"}
    updated["checked_at"] = format_utc(now)
    if etag:
        updated["etag"] = etag
    if last_modified:
        updated["last_modified"] = last_modified
    return updated


def _missed(record: Mapping[str, Any], http_status: int, now: datetime,
            settings: Settings) -> tuple[str, dict[str, Any]]:
    """The record after a 404 or 410: the file kept, ``source`` says since when it is missing."""
    source = dict(record.get("source") or {})
    counted_at = _parse(source.get("counted_at"))
    misses = int(source.get("misses") or 0)
    interval_s = settings.gone_min_interval_hours * 3600
    # 404s closer together than GONE_MIN_INTERVAL_HOURS count once; a 410 always counts.
    if http_status == 410 or counted_at is None or \
            (now - counted_at).total_seconds() >= interval_s:
        misses += 1
        counted_at = now
    gone = http_status == 410 or misses >= settings.gone_after_misses
    updated = dict(record)
    updated["checked_at"] = format_utc(now)
    updated["source"] = {
        "status": GONE if gone else MISSING,
        "since": source.get("since") or format_utc(now),
        "http_status": http_status,
        "misses": misses,
        "counted_at": format_utc(counted_at),
    }
    return (GONE if gone else MISSING), updated


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def shared_result(outcome: str, record: Mapping[str, Any], folder_key: str) -> dict[str, Any]:
    """What one re-check found, for the other documents naming the same URL in this run."""
    fields = ("checked_at", "etag", "last_modified", "source", "sha256", "bytes", "format",
              "width", "height", "content_type", "http_status")
    shared = {"outcome": outcome, **{k: record[k] for k in fields if k in record}}
    if outcome == CHANGED:
        shared["copy"] = f"{folder_key}/{record['file']}"
        shared["replaced_at"] = record["checked_at"]
    return shared


def apply_shared(folder: DocumentFolder, record: Mapping[str, Any], shared: Mapping[str, Any],
                 settings: Settings) -> tuple[str, dict[str, Any]]:
    """Apply another document's re-check of the same URL to this document's ``record``
    (contract §16: each URL is re-checked once per run, the result applied to every copy)."""
    outcome = shared["outcome"]
    now = _parse(shared.get("checked_at")) or datetime.now(timezone.utc)
    if outcome in (MISSING, GONE):
        return _missed(record, int(shared.get("http_status") or 404), now, settings)
    if outcome != CHANGED or shared.get("sha256") == record.get("sha256"):
        return outcome, _checked(record, now, shared.get("etag"), shared.get("last_modified"))
    from images_service.storage import layout

    extension = layout.extension_for(str(shared["format"]))
    file = layout.image_relpath(int(record["index"]), extension)
    folder.storage.copy_many([(str(shared["copy"]), f"{folder.key}/{file}")])
    old = record.get("file")
    if isinstance(old, str) and old != file:
        folder.remove([old])
    previous = [{"sha256": record.get("sha256"), "replaced_at": shared.get("replaced_at")},
                *(record.get("previous") or [])][:MAX_PREVIOUS]
    changed = {key: value for key, value in record.items()
               if key not in ("processed", "source", "etag", "last_modified")}
    changed.update({key: shared[key] for key in ("sha256", "bytes", "format", "width", "height",
                                                 "content_type", "http_status", "etag",
                                                 "last_modified", "checked_at")
                    if key in shared})
    changed.update(file=file, downloaded_at=shared.get("checked_at"), previous=previous)
    return CHANGED, folder.backfill(changed, settings)  # its variants, from the new bytes
