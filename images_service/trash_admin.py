"""The trash as operators use it (contract §15): list, restore, purge.

One service behind the trash API (api/trash.py), the web console's trash and purge pages
(api/console/) and so, through the API, the command line. The moves themselves live in
:mod:`images_service.storage.trash`; this adds what a request needs around them:

* names validated before any lookup (a bad database, collection, folder or id is 400
  ``invalid_request``, like every other route);
* the fleet-wide folder lock the downloads take (:class:`RedisFolderLocks`, bound to no job),
  so a restore or a purge never interleaves with a download writing the same folder;
* the URL index kept in step (contract §16): a purge forgets the folders it removed, a
  restore records the restored copies again (the trash forgot them when it took them);
* a storage outage answered 503 ``unavailable``, never a 500.

A purge removes files, never the source document: a document still in MongoDB that is
flagged or updated again is downloaded again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from images_service.download.folder_locks import RedisFolderLocks
from images_service.download.url_index import UrlIndex
from images_service.errors import InvalidRequest, StorageUnavailable, Unavailable, UnsafePathError
from images_service.storage import folders, layout, trash
from images_service.storage.backend import Storage
from images_service.storage.metadata import DOWNLOADED, SKIPPED, metadata_key, parse
from images_service.storage.trash import TrashItem

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredCopy:
    """A folder a purge would remove: where it is and how many files it holds."""

    where: str  #: ``tree`` or ``trash``
    folder: str  #: its key, ``db/coll/name``
    files: int


@contextmanager
def _storage_errors() -> Iterator[None]:
    try:
        yield
    except StorageUnavailable as exc:
        raise Unavailable(str(exc)) from None


def _check(database: str, collection: str, **segments: str) -> None:
    try:
        layout.check_database(database)
        layout.check_collection(collection)
        for what, value in segments.items():
            layout.check_segment(value, what.replace("_", " "))
    except UnsafePathError as exc:
        raise InvalidRequest(str(exc)) from None


class TrashAdmin:
    """The operator's view of the trash; one per process, thread-safe."""

    def __init__(self, storage: Storage, redis_client: redis.Redis,
                 urls: UrlIndex | None = None) -> None:
        self.storage = storage
        self.urls = urls
        self.lock = RedisFolderLocks(redis_client)  # no job: never refused as stale

    def collections(self) -> list[tuple[str, str]]:
        """The (database, collection) pairs that have a trash folder, sorted."""
        bin_ = self.storage.trash()
        with _storage_errors():
            return sorted((database, collection) for database in bin_.list_folders("")
                          for collection in bin_.list_folders(database))

    def items(self, database: str, collection: str) -> list[TrashItem]:
        """What a collection's trash holds, newest deletion first (then by folder)."""
        _check(database, collection)
        with _storage_errors():
            found = list(trash.items(self.storage, database, collection))
        found.sort(key=lambda item: item.folder)
        found.sort(key=lambda item: item.deleted_at or "", reverse=True)
        return found

    def restore(self, database: str, collection: str, folder: str) -> str:
        """Move a trashed folder back into the tree; returns its name.

        404 ``not_in_trash``; 409 ``folder_conflict`` when the tree has that folder again.
        """
        _check(database, collection, folder=folder)
        key = f"{database}/{collection}/{folder}"
        with _storage_errors():
            trash.restore(self.storage, key, lock=self.lock)
            if self.urls is not None:
                self._record_copies(key)
        return folder

    def _record_copies(self, key: str) -> None:
        # The trash made the index forget this folder's copies; they are in the tree again.
        current = parse(self.storage.read_bytes(metadata_key(key)), key) or {}
        records = [r for r in current.get("images") or [] if isinstance(r, dict)
                   and r.get("status") in (DOWNLOADED, SKIPPED)
                   and isinstance(r.get("url"), str) and isinstance(r.get("file"), str)]
        self.urls.record(key, records)  # type: ignore[union-attr]

    def preview(self, database: str, collection: str, document_id: str, *,
                places: tuple[str, ...] = ("tree", "trash")) -> list[StoredCopy]:
        """What :meth:`purge` would remove (the console's confirmation page), looked for in
        ``places``: on the filesystem, finding a document's folders by id scans its
        collection's directory, so a page that knows the tree folder asks for the trash only."""
        _check(database, collection, document_id=document_id)
        stores = {"tree": self.storage, "trash": self.storage.trash()}
        found = []
        with _storage_errors():
            for where in places:
                store = stores[where]
                for key in folders.of_document(store, database, collection, document_id):
                    found.append(StoredCopy(where, key, len(store.list(key))))
        return found

    def purge(self, database: str, collection: str, document_id: str) -> int:
        """Remove the document's folder, its variants and every trashed copy; returns the
        files removed. 404 ``document_not_found`` when there is neither."""
        _check(database, collection, document_id=document_id)
        with _storage_errors():
            return trash.purge(self.storage, database, collection, document_id, lock=self.lock,
                               forget=self.urls.forget_folders if self.urls else None)
