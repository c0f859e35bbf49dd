"""The document's ``metadata.json`` (CONTRACT.md §6, §14): its model, parsing and ownership.

This module only says what the file holds; :mod:`images_service.download.folder` (the document
folder as one unit of work) reads and writes it, with the lock and the version check.

A folder belongs to the document its metadata.json names (contract §10, §14): database,
collection, ``document_id`` and, when recorded, ``document_key`` (the ``_id`` in canonical
Extended JSON, so that ``5`` and ``"5"`` are two documents). :func:`check_owner` refuses with
:class:`~images_service.errors.FolderConflict` anything else.

Besides the contract's fields the file records the plan it was last written from
(``planned_at_ms``: when the writing job planned the document, epoch milliseconds), so that a
message planned earlier can be recognised as stale (§14) and changes nothing.

Records are kept only while they still describe the document (:func:`matches`): an index beyond
the current URL list, or whose URL is no longer the one at that position, is dropped.

What the images show (contract §18): given the content rules, :func:`build_metadata` marks the
records (``placeholder``, ``duplicate_of``: :func:`images_service.content.document.
mark_document`) on every write, and the summary counts them (``placeholders``,
``duplicates``). Without rules the records are written as they come and only counted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from images_service.content.document import ContentRules, mark_document, summary_counts
from images_service.errors import FolderConflict
from images_service.storage.backend import Storage
from images_service.storage.layout import METADATA_FILE

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
    #: The ``_id`` in canonical Extended JSON (``{"$numberInt": "5"}``, ``"5"``,
    #: ``{"$oid": "…"}``); None only for headers built before it was recorded.
    document_key: Any = None


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
    header: DocumentHeader, images: Iterable[Mapping[str, Any]], *, job_id: str, total: int,
    planned_at_ms: int = 0, rules: ContentRules | None = None,
) -> dict[str, Any]:
    """A complete metadata.json object with the summary recomputed from ``images``.

    With ``rules`` (the settings of §18) the records' ``placeholder`` and ``duplicate_of``
    are decided again for the whole document; without, they are kept as they are.
    """
    if rules is not None:
        ordered = mark_document(images, rules)  # copies, in index order
    else:
        ordered = sorted((dict(r) for r in images), key=lambda r: r["index"])
    counts = {status: 0 for status in STATUSES}
    for record in ordered:
        if record.get("status") in counts:
            counts[record["status"]] += 1
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "database": header.database,
        "collection": header.collection,
        "document_id": header.document_id,
    }
    if header.document_key is not None:
        document["document_key"] = header.document_key
    return {
        **document,
        "search_field": header.search_field,
        "search_value": header.search_value,
        "job_id": job_id,
        "planned_at_ms": int(planned_at_ms),
        "updated_at": utc_now_iso(),
        "images": ordered,
        # downloaded / skipped / failed: what this run did with each image (its status);
        # present: the images stored now (downloaded + skipped), the write-back's "downloaded".
        "summary": {
            "total": total,
            "downloaded": counts[DOWNLOADED],
            "failed": counts[FAILED],
            "skipped": counts[SKIPPED],
            "present": counts[DOWNLOADED] + counts[SKIPPED],
            # Images whose source is gone (§16): still stored, no longer at their URL.
            "gone": sum(1 for r in ordered if isinstance(r.get("source"), dict)
                        and r["source"].get("status") == "gone"),
            # §18: stored images that are placeholders, and near-duplicates of an earlier one.
            **summary_counts(ordered),
        },
    }


def encode(metadata: Mapping[str, Any]) -> bytes:
    """metadata.json's bytes (UTF-8, indented, a final newline)."""
    return json.dumps(metadata, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"


def check_owner(current: Mapping[str, Any] | None, header: DocumentHeader) -> None:
    """Raise FolderConflict unless ``current`` (a metadata.json, or None) is ``header``'s.

    Ids are typed (contract §14): when both sides know the ``_id``'s canonical form, those must
    agree too, so ``5`` and ``"5"`` (one folder name) never share a folder. A file written
    before ``document_key`` was recorded is matched by ``document_id`` alone.
    """
    if not current:
        return
    owner = (current.get("database"), current.get("collection"), current.get("document_id"))
    recorded = current.get("document_key")
    same_key = (recorded is None or header.document_key is None
                or key_identity(recorded) == key_identity(header.document_key))
    if owner != (header.database, header.collection, header.document_id) or not same_key:
        theirs = json.dumps(recorded) if recorded is not None else repr(owner[2])
        mine = (json.dumps(header.document_key) if header.document_key is not None
                else repr(header.document_id))
        raise FolderConflict(
            f"the folder belongs to document {theirs} of {owner[0]}.{owner[1]}, not to {mine}")


def key_identity(key: Any) -> Any:
    """What makes two ``document_key`` values one ``_id``: MongoDB compares numbers by value
    across their types (``5`` and ``NumberLong(5)`` are one ``_id``), everything else by type
    and value."""
    if isinstance(key, Mapping) and len(key) == 1:
        (kind, value), = key.items()
        if kind in ("$numberInt", "$numberLong"):
            return ("number", int(value))
        if kind == "$numberDouble":
            return ("number", float(value))
    return json.dumps(key, sort_keys=True)


def planned_at_ms(current: Mapping[str, Any] | None) -> int:
    """When the plan that last wrote ``current`` was made (0 for files written before)."""
    value = (current or {}).get("planned_at_ms")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def records_by_index(current: Mapping[str, Any] | None) -> dict[int, dict[str, Any]]:
    """The image records of a metadata.json by index."""
    return {
        r["index"]: r
        for r in (current or {}).get("images", [])
        if isinstance(r, dict) and isinstance(r.get("index"), int)
    }


def matches(record: Mapping[str, Any], urls: Sequence[str]) -> bool:
    """Whether ``record`` still describes image ``index`` of the URL list ``urls``."""
    index = record.get("index")
    return (
        isinstance(index, int)
        and 1 <= index <= len(urls)
        and record.get("url") == urls[index - 1]
    )
