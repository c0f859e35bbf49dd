"""The document's ``metadata.json`` (CONTRACT.md §6): model, atomic rewrite, locked merge.

Several workers may finish images of one document at the same time, so every change is a
read-modify-write under a lock passed in by the caller (the actors pass a Redis lock; the
default is :func:`~images_service.storage.locks.default_folder_lock`). The file is read and
written through the :class:`~images_service.storage.backend.Storage` (``read_bytes`` /
``put_bytes``), which replaces it atomically on every backend, so readers never see a partial
document. A ``folder`` is the document folder's key (``db/coll/id-slug``).

A folder belongs to the document its metadata.json names (contract §10): :func:`claim`
writes a first metadata.json for a new folder before any image is stored in it, and both
:func:`claim` and :func:`merge` refuse, with :class:`~images_service.errors.FolderConflict`,
to touch a folder whose metadata.json names another document.

Merging is by image index. Records are kept only while they still describe the document:
an index beyond the current URL list, or whose URL is no longer the one at that position, is
dropped (the URL list changed since it was written).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from images_service.errors import FolderConflict
from images_service.storage.backend import Storage
from images_service.storage.layout import METADATA_FILE
from images_service.storage.locks import default_folder_lock

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: Image statuses of the contract.
DOWNLOADED, SKIPPED, FAILED = "downloaded", "skipped", "failed"
STATUSES = (DOWNLOADED, SKIPPED, FAILED)


def utc_now_iso() -> str:
    """Now as the contract's ISO 8601 UTC string, e.g. ``2026-11-28T10:00:00Z``."""
    return format_utc(datetime.now(timezone.utc))


def format_utc(moment: datetime) -> str:
    """``moment`` (aware, or naive meaning UTC) as ``YYYY-MM-DDTHH:MM:SSZ``."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class DocumentHeader:
    """The document-level fields of metadata.json."""

    database: str
    collection: str
    document_id: str
    search_field: str
    search_value: Any  # a JSON scalar, or None when the field is missing


def metadata_key(folder: str) -> str:
    """The key of ``folder``'s metadata.json."""
    return f"{folder.rstrip('/')}/{METADATA_FILE}"


def read_metadata(storage: Storage, folder: str) -> dict[str, Any] | None:
    """The parsed metadata.json of ``folder``, or None when there is none (or it is unreadable).

    A storage failure raises StorageUnavailable: "cannot read" is never taken for "absent".
    """
    return parse(storage.read_bytes(metadata_key(folder)), folder)


def parse(raw: bytes | None, folder: str = "") -> dict[str, Any] | None:
    """metadata.json's bytes as an object; None when absent or unreadable.

    An unreadable file cannot be partial (writes are atomic); it would have been edited by
    hand, and is then treated as absent so the next write replaces it.
    """
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        logger.warning("ignoring unreadable %s", metadata_key(folder or "?"))
        return None
    return data if isinstance(data, dict) else None


def build_metadata(
    header: DocumentHeader, images: Iterable[Mapping[str, Any]], *, job_id: str, total: int
) -> dict[str, Any]:
    """A complete metadata.json object with the summary recomputed from ``images``."""
    ordered = sorted((dict(r) for r in images), key=lambda r: r["index"])
    counts = {status: 0 for status in STATUSES}
    for record in ordered:
        if record.get("status") in counts:
            counts[record["status"]] += 1
    return {
        "schema_version": SCHEMA_VERSION,
        "database": header.database,
        "collection": header.collection,
        "document_id": header.document_id,
        "search_field": header.search_field,
        "search_value": header.search_value,
        "job_id": job_id,
        "updated_at": utc_now_iso(),
        "images": ordered,
        "summary": {
            "total": total,
            "downloaded": counts[DOWNLOADED],
            "failed": counts[FAILED],
            "skipped": counts[SKIPPED],
        },
    }


def write_metadata(storage: Storage, folder: str, metadata: Mapping[str, Any]) -> None:
    """Replace metadata.json atomically (and durably)."""
    data = json.dumps(metadata, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"
    storage.put_bytes(metadata_key(folder), data)


def check_owner(current: Mapping[str, Any] | None, header: DocumentHeader) -> None:
    """Raise FolderConflict unless ``current`` (a metadata.json, or None) is ``header``'s."""
    if not current:
        return
    owner = (current.get("database"), current.get("collection"), current.get("document_id"))
    if owner != (header.database, header.collection, header.document_id):
        raise FolderConflict(
            f"the folder belongs to document {owner[2]!r} of {owner[0]}.{owner[1]}, "
            f"not to {header.document_id!r}"
        )


def claim(
    storage: Storage,
    folder: str,
    header: DocumentHeader,
    *,
    job_id: str,
    urls: Sequence[str],
    lock: AbstractContextManager[Any] | None = None,
) -> dict[str, Any]:
    """Make ``folder`` this document's before anything is stored in it; return its metadata.

    Under ``lock``: an existing metadata.json must name this document (else FolderConflict);
    a folder without one gets a first metadata.json with no image records yet, so a second
    document with the same folder name finds it taken even while the first one's images
    are still downloading (the first document's files are never overwritten).
    """
    with lock if lock is not None else default_folder_lock(storage, folder):
        current = read_metadata(storage, folder)
        check_owner(current, header)
        if current is not None:
            return current
        metadata = build_metadata(header, [], job_id=job_id, total=len(urls))
        write_metadata(storage, folder, metadata)
        return metadata


def merge(
    storage: Storage,
    folder: str,
    header: DocumentHeader,
    records: Iterable[Mapping[str, Any]],
    *,
    job_id: str,
    urls: Sequence[str],
    lock: AbstractContextManager[Any] | None = None,
    under_lock: Callable[[dict[int, dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    """Merge ``records`` into metadata.json by index under ``lock``; return the new metadata.

    ``urls`` is the document's current URL list (index ``i`` is ``urls[i - 1]``): existing
    and new records that do not match it are dropped. ``under_lock``, if given, is called
    with the merged records (index -> record) while the lock is still held, before the write:
    the engine removes files that no record names there.
    """
    with lock if lock is not None else default_folder_lock(storage, folder):
        current = read_metadata(storage, folder) or {}
        check_owner(current, header)
        merged: dict[int, dict[str, Any]] = {}
        for record in current.get("images", []):
            if _matches(record, urls):
                merged[record["index"]] = dict(record)
        for record in records:
            if _matches(record, urls):
                merged[record["index"]] = dict(record)
            else:
                logger.warning(
                    "dropping record of image %s of %s/%s/%s: the document's URL list changed",
                    record.get("index"), header.database, header.collection, header.document_id,
                )
        if under_lock is not None:
            under_lock(merged)
        metadata = build_metadata(header, merged.values(), job_id=job_id, total=len(urls))
        write_metadata(storage, folder, metadata)
        return metadata


def _matches(record: Mapping[str, Any], urls: Sequence[str]) -> bool:
    index = record.get("index")
    return (
        isinstance(index, int)
        and 1 <= index <= len(urls)
        and record.get("url") == urls[index - 1]
    )
