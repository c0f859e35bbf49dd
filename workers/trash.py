"""A deleted document's folders go to the trash (contract §15), sent by the listener.

The listener sees a delete event and enqueues ``trash_document`` on the scan queue
(workers/listener/enqueue.py); a worker moves every folder of the document (found by its id:
``{id}`` or ``{id}-{slug}``, confirmed by metadata.json, images_service/storage/folders.py) to
``.trash/{db}/{coll}/{folder}/``, stamping ``deleted_at`` (images_service/storage/trash.py),
under the fleet-wide folder lock the downloads take. With ``TRASH_RETENTION_DAYS=0`` the
trashed copy is removed at once, counted ``expired`` (§15).

Idempotent: a replayed event or a redelivered message finds no folder left in the tree and
does nothing; a document that was never downloaded has none to begin with. A document that
exists again when the message runs (deleted and inserted again with the same ``_id``) is not
touched: its folder is the new document's now, and its insert job downloads into it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from bson import json_util

from images_service import metrics
from images_service.download.folder_locks import RedisFolderLocks
from images_service.download.planning import document_key
from images_service.jobs.triggers import document_id_candidates
from images_service.storage import folders, layout, trash
from workers.pipeline.context import PipelineContext

log = logging.getLogger(__name__)


def trash_document(ctx: PipelineContext, database: str, collection: str, source_id_json: str,
                   typed: bool = True) -> list[str]:
    """Move the deleted document's folders to the trash; returns their keys."""
    source_id = json_util.loads(source_id_json)
    document_id = layout.document_id_str(source_id)
    # nx-27017 quirk: a delete event gives a non-ObjectId _id as a string, so "5" may be 5.
    ids: list[Any] = [source_id] if typed else document_id_candidates(document_id)
    if ctx.mongo[database][collection].find_one({"_id": {"$in": ids}}, {"_id": 1}) is not None:
        log.info("document %s of %s.%s exists again: its folder is not trashed", document_id,
                 database, collection)
        return []
    key = document_key(source_id) if typed else None
    moved = move_to_trash(ctx, folders.of_document(ctx.storage, database, collection,
                                                   document_id, key))
    if not moved:
        log.info("document %s of %s.%s deleted: no folder to trash", document_id, database,
                 collection)
    return moved


def move_to_trash(ctx: PipelineContext, keys: Iterable[str]) -> list[str]:
    """Move each folder of ``keys`` to the trash under the fleet-wide folder lock (removed
    at once with TRASH_RETENTION_DAYS=0, counted ``expired``); the URL index forgets the
    moved ones. Returns the folders moved (a folder no longer in the tree is skipped)."""
    lock = RedisFolderLocks(ctx.redis)  # no job: never refused as stale
    moved = []
    for folder in keys:
        if not trash.trash_folder(ctx.storage, folder, lock=lock):
            continue
        moved.append(folder)
        if ctx.settings.trash_retention_days == 0:
            with lock(folder):
                ctx.storage.trash().delete_prefix(folder)
            metrics.TRASH.labels("expired").inc()
            log.info("removed %s from the trash at once (TRASH_RETENTION_DAYS=0)", folder)
    if moved:
        ctx.urls.forget_folders(moved)  # their copies left the tree (§16: the index follows)
    return moved
