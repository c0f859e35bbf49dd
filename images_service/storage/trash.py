"""The tree's trash (contract §15): deleted documents' folders, kept for a while, then gone.

``{STORAGE_PATH}/.trash/{database}/{collection}/{folder}/`` (S3: ``{S3_PREFIX}.trash/…``)
holds a deleted document's folder, files unchanged, its ``metadata.json`` gaining
``deleted_at``. The trash is a storage of its own (:meth:`Storage.trash`), with the keys the
folders had in the tree, so moving a folder in or out keeps every name.

* :func:`trash_folder` — a document was deleted: its folder goes to the trash (a folder trashed
  again replaces the older trashed copy).
* :func:`restore` — back into the tree, unless the folder exists there again (409).
* :func:`items` — what a collection's trash holds.
* :func:`purge` — a takedown: the document's folder, every variant and any trashed copy,
  removed at once, also for a document already deleted from MongoDB.
* :func:`expire` — trashed folders older than the retention removed for good.

Every change takes the folder's lock (the one its writers take: a Redis lock in the service),
so a download in flight never writes into a folder half moved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from images_service import metrics
from images_service.errors import Conflict, NotFound
from images_service.storage import folders
from images_service.storage.backend import Storage
from images_service.storage.metadata import encode, format_utc, metadata_key, parse

logger = logging.getLogger(__name__)

LockFactory = Callable[[str], AbstractContextManager[Any]]


@dataclass(frozen=True)
class TrashItem:
    """One trashed folder as the trash API lists it."""

    folder: str  #: the folder's name (its last segment)
    document_id: str | None
    deleted_at: str | None
    images: int  #: image records in its metadata.json


def _no_lock(folder: str) -> AbstractContextManager[Any]:
    return nullcontext()


def trash_folder(storage: Storage, folder: str, *, now: datetime | None = None,
                 lock: LockFactory = _no_lock) -> bool:
    """Move ``folder`` (``db/coll/name``) to the trash, stamping ``deleted_at``; False when
    the tree has no such folder."""
    trash = storage.trash()
    with lock(folder):
        if not storage.move_folder_to(folder, trash):
            return False
        current = parse(trash.read_bytes(metadata_key(folder)), folder)
        if current is not None:
            current["deleted_at"] = format_utc(now or datetime.now(timezone.utc))
            trash.put_bytes(metadata_key(folder), encode(current))
    metrics.TRASH.labels("trashed").inc()
    logger.info("moved %s to the trash", folder)
    return True


def restore(storage: Storage, folder: str, *, lock: LockFactory = _no_lock) -> None:
    """Move a trashed ``folder`` back into the tree, without its ``deleted_at``.

    Raises NotFound ``not_in_trash``, or Conflict ``folder_conflict`` when the folder exists
    in the tree again (the document was downloaded since).
    """
    trash = storage.trash()
    with lock(folder):
        current = parse(trash.read_bytes(metadata_key(folder)), folder)
        if current is None:
            raise NotFound(f"{folder} is not in the trash", code="not_in_trash")
        if storage.list(folder):
            raise Conflict(f"{folder} exists in the tree again", code="folder_conflict")
        trash.move_folder_to(folder, storage)
        current.pop("deleted_at", None)
        storage.put_bytes(metadata_key(folder), encode(current))
    metrics.TRASH.labels("restored").inc()
    logger.info("restored %s from the trash", folder)


def items(storage: Storage, database: str, collection: str) -> Iterator[TrashItem]:
    """The trashed folders of a collection (streamed), with what their metadata.json says."""
    trash = storage.trash()
    for name in trash.list_folders(f"{database}/{collection}"):
        current = parse(trash.read_bytes(metadata_key(f"{database}/{collection}/{name}")))
        if current is None:  # not a trashed document (SeaweedFS lists emptied prefixes too)
            continue
        records = current.get("images")
        yield TrashItem(folder=name, document_id=current.get("document_id"),
                        deleted_at=current.get("deleted_at"),
                        images=len(records) if isinstance(records, list) else 0)


def purge(storage: Storage, database: str, collection: str, document_id: str, *,
          lock: LockFactory = _no_lock,
          forget: Callable[[list[str]], object] | None = None) -> int:
    """Remove the document's folder and every trashed copy of it; returns the files removed.

    ``forget`` is called with the keys of the folders removed (the URL index forgets their
    copies). Raises NotFound ``document_not_found`` when there is neither a folder nor a
    trashed copy.
    """
    trash = storage.trash()
    found = [(store, key) for store in (storage, trash)
             for key in folders.of_document(store, database, collection, document_id)]
    if not found:
        raise NotFound(f"document {document_id} of {database}.{collection} has no images "
                       "stored and none in the trash", code="document_not_found")
    removed = 0
    for store, key in found:
        with lock(key):
            removed += store.delete_prefix(key)
    if forget is not None:
        forget(sorted({key for _, key in found}))
    metrics.TRASH.labels("purged").inc(len(found))
    logger.info("purged %d file(s) of document %s of %s.%s", removed, document_id, database,
                collection)
    return removed


def expire(storage: Storage, retention: timedelta, *, now: datetime | None = None,
           lock: LockFactory = _no_lock) -> list[str]:
    """Remove trashed folders deleted more than ``retention`` ago; returns their keys.

    A trashed folder whose ``deleted_at`` cannot be read (an interrupted move) is judged by
    nothing better and kept until it can: the next trash of it stamps one.
    """
    trash = storage.trash()
    cutoff = (now or datetime.now(timezone.utc)) - retention
    expired = []
    for database in trash.list_folders(""):
        for collection in trash.list_folders(database):
            for name in trash.list_folders(f"{database}/{collection}"):
                key = f"{database}/{collection}/{name}"
                if not _expired(trash, key, cutoff):
                    continue
                with lock(key):
                    # Read again under the lock: the folder may have been trashed again (a
                    # fresh deleted_at) between the first read and the lock.
                    if not _expired(trash, key, cutoff):
                        continue
                    trash.delete_prefix(key)
                expired.append(key)
                metrics.TRASH.labels("expired").inc()
    if expired:
        logger.info("removed %d trashed folder(s) past the retention", len(expired))
    return expired


def _expired(trash: Storage, key: str, cutoff: datetime) -> bool:
    deleted_at = _deleted_at(parse(trash.read_bytes(metadata_key(key))))
    return deleted_at is not None and deleted_at <= cutoff


def _deleted_at(current: dict[str, Any] | None) -> datetime | None:
    value = (current or {}).get("deleted_at")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) \
            else None
    except ValueError:
        return None
