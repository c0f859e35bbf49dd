"""A document folder's life in the tree: prepared (and moved), pruned (contract §5, §10, §11).

Everything goes through the :class:`~images_service.storage.backend.Storage`, so the same
rules hold on the filesystem and in a bucket:

* :func:`prepare` — before a document's images are downloaded: when its search value changed,
  the folder of the old value is moved to the new name (so its images are kept and skipped),
  then the layout is made to exist (``original/`` and the empty ``processed/`` on the
  filesystem; nothing on S3, where no empty folder exists).
* :func:`prune` — under the metadata lock, remove image files (originals and derived images
  under ``processed/``) that no record names.
* :func:`of_document` — the folder(s) of a document known only by its id (a deleted document,
  a purge): ``{id}`` or ``{id}-{slug}``, confirmed by their metadata.json.

A move happens only between folders of the *same* document, checked from both metadata.json:
the old one must name the document, the new one must be absent, or be the same bytes (an
interrupted move on S3, which copies metadata.json last and deletes it last: see
:meth:`~images_service.storage.s3.S3Storage.move_folder`). Anything else is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from images_service.storage import layout
from images_service.storage.backend import Storage
from images_service.storage.metadata import (
    FAILED,
    DocumentHeader,
    key_identity,
    metadata_key,
    parse,
)

logger = logging.getLogger(__name__)


def prepare(
    storage: Storage, folder: str, header: DocumentHeader, *, previous_folder: str | None
) -> None:
    """Move ``previous_folder`` to ``folder`` when both belong to ``header``; make the layout."""
    if previous_folder and previous_folder != folder:
        _move_previous(storage, previous_folder, folder, header)
    storage.ensure_folder(folder)


def _owned(raw: bytes | None, header: DocumentHeader) -> bool:
    data = parse(raw)
    return data is not None and (
        data.get("database"), data.get("collection"), data.get("document_id")
    ) == (header.database, header.collection, header.document_id)


def _move_previous(storage: Storage, old: str, new: str, header: DocumentHeader) -> None:
    old_raw = storage.read_bytes(metadata_key(old))
    if not _owned(old_raw, header):
        return  # already moved (the usual case), never downloaded, or someone else's
    new_raw = storage.read_bytes(metadata_key(new))
    if new_raw is not None and new_raw != old_raw:
        # The new folder has a life of its own (another document's, or this one's written
        # before the old folder was noticed): never merge two folders.
        logger.warning("not moving %s: %s already has a metadata.json", old, new)
        return
    try:
        if storage.move_folder(old, new):
            logger.info("moved %s to %s", old, new)
    except FileExistsError as exc:  # the target holds other files: leave both alone
        logger.warning("could not move %s: %s", old, exc)


def prune(
    storage: Storage,
    folder: str,
    merged: Mapping[int, Mapping[str, Any]],
    *,
    recorded: set[int],
    total: int,
) -> list[str]:
    """Delete the image files that the records no longer name; returns their keys.

    Image files are originals (``original/img_NNN.ext``) and derived images
    (``processed/{NAME}/img_NNN.ext``, contract §12), both tied to the index ``NNN``. A file
    is stale when its index is beyond the URL list (``total``), or when a record was just
    written for its index (``recorded``) and does not name it: the image failed (variants
    follow their original), the original's or a variant's extension changed, or the variant
    is no longer configured. Files of indexes not recorded now are kept: another message may
    be storing them (and their variants, stored before their record).
    """
    stale = []
    prefix = f"{folder}/"
    for key in storage.list(folder):
        relpath = key[len(prefix):]
        index = _image_index(relpath)
        if index is None:  # metadata.json, or not an image of the layout
            continue
        if index > total:
            stale.append(key)
        elif index in recorded and index in merged and relpath not in _named(merged[index]):
            stale.append(key)
    if stale:
        storage.delete(stale)
    return stale


def _image_index(relpath: str) -> int | None:
    """The index of ``original/img_NNN.ext`` or ``processed/{NAME}/img_NNN.ext``, else None."""
    parts = PurePosixPath(relpath).parts
    if len(parts) == 2 and parts[0] == layout.ORIGINAL_DIR:
        parsed = layout.parse_image_filename(parts[1])
    elif len(parts) == 3 and parts[0] == layout.PROCESSED_DIR:
        parsed = layout.parse_image_filename(parts[2])
    else:
        return None
    return parsed[0] if parsed is not None else None


def _named(record: Mapping[str, Any]) -> set[str]:
    """The files an image record names: its original and its variants (none if it failed)."""
    if record.get("status") == FAILED or not isinstance(record.get("file"), str):
        return set()
    named = {record["file"]}
    processed = record.get("processed")
    if isinstance(processed, Mapping):
        named.update(entry["file"] for entry in processed.values()
                     if isinstance(entry, Mapping) and isinstance(entry.get("file"), str))
    return named


def of_document(storage: Storage, database: str, collection: str, document_id: str,
                document_key: Any = None) -> list[str]:
    """The keys of the folders that belong to document ``document_id`` (and, when given, the
    typed ``document_key``): listed by the id as a name prefix, then confirmed by their
    metadata.json, since ``hotel-ritz`` may be the folder of id ``hotel-ritz`` or of id
    ``hotel`` named "Ritz"."""
    found = []
    parent = f"{database}/{collection}"
    for name in storage.list_folders(parent, document_id):
        if name != document_id and not name.startswith(document_id + "-"):
            continue
        current = parse(storage.read_bytes(metadata_key(f"{parent}/{name}")))
        if current is None or current.get("document_id") != document_id:
            continue
        recorded = current.get("document_key")
        if document_key is not None and recorded is not None and \
                key_identity(recorded) != key_identity(document_key):
            continue
        found.append(f"{parent}/{name}")
    return found
