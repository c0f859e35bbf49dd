"""Reading what was stored for one document: its ``metadata.json`` and the files it lists (§13).

The service behind ``GET /documents/{db}/{coll}/{id}`` and ``.../files/{file}``, and behind
the web console's thumbnails. Everything is read through the :class:`~images_service.storage.
backend.Storage` interface, so the filesystem and S3 backends serve the same way.

Finding a document's folder. The id is looked up like the document trigger does (ObjectId,
then string, then integer; names validated first: 400), the source document is read from
MongoDB, and its folder is the write-back ``STATUS_FIELD.path`` when that names a folder of
this document (it stays right after the search value changed and until the next download
moved the folder), else the folder the engine plans for it now. A ``metadata.json`` is only
believed when it names this very document: two documents can map to one folder name, and
the folder belongs to the document its metadata names (README, "A folder belongs to one
document").

Serving files. Only a file that ``metadata.json`` lists is served: the ``file`` of a
downloaded or skipped image, or of one of its processed variants. Anything else — ``../``,
an absolute path, a failed image, a file present in storage but not listed — is 404
``file_not_found``, so a request can never name a key of its own making. The content type
comes from the format Pillow detected, never from what the image's server claimed: the
bytes are served from the console's origin, and a lying ``text/html`` must not reach a
browser.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from images_service.config.settings import Settings
from images_service.download.engine import plan_document
from images_service.errors import NotFound, StorageUnavailable, Unavailable, UnsafePathError
from images_service.jobs.triggers import check_document_id, check_names, document_id_candidates
from images_service.storage import layout
from images_service.storage.backend import Storage, check_key
from images_service.storage.metadata import DOWNLOADED, SKIPPED

#: Served for a listed file whose format is unknown (never the server's claimed type).
FALLBACK_CONTENT_TYPE = "application/octet-stream"
#: Chunks streamed to the client (bytes): a file is never read whole into memory.
CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class StoredDocument:
    """A document's ``metadata.json``: its folder key, the bytes as stored, and parsed."""

    folder: str
    raw: bytes
    metadata: dict[str, Any]

    def images(self) -> list[dict[str, Any]]:
        images = self.metadata.get("images")
        return [i for i in images if isinstance(i, dict)] if isinstance(images, list) else []


@dataclass(frozen=True)
class StoredFile:
    """A file listed in ``metadata.json``: its storage key and how to serve it."""

    key: str
    content_type: str
    sha256: str | None
    size_bytes: int | None


def _first_segment(path: str) -> str:
    # nx-27017 returns a projected dotted path flat; the first segment comes back nested on
    # both servers (EMBEDDED_MONGO.md), and the path is walked in Python.
    return path.split(".", 1)[0]


def listed_files(record: Mapping[str, Any]) -> Iterator[tuple[str, str | None, Mapping[str, Any]]]:
    """(file, format, entry) of an image record and of each of its processed variants."""
    if record.get("status") not in (DOWNLOADED, SKIPPED) or not isinstance(record.get("file"), str):
        return  # a failed image names no file (and has no variants)
    yield record["file"], record.get("format"), record
    processed = record.get("processed")
    if isinstance(processed, dict):
        for variant in processed.values():
            if isinstance(variant, dict) and isinstance(variant.get("file"), str) \
                    and "error" not in variant:
                yield variant["file"], variant.get("format"), variant


class DocumentFiles:
    """Finds a document's stored metadata and files; one per process, thread-safe."""

    def __init__(self, settings: Settings, mongo: MongoClient, storage: Storage) -> None:
        self.settings = settings
        self.mongo = mongo
        self.storage = storage

    # --- the source document ----------------------------------------------------------------

    def find_source(self, database: str, collection: str, raw_id: str) -> dict[str, Any]:
        """The source document (its ``_id``, search and status fields) named by ``raw_id``.

        400 for unsafe names, 404 ``document_not_found``, 503 when MongoDB does not answer.
        """
        check_names(database, collection)
        check_document_id(raw_id)
        projection = {"_id": 1, _first_segment(self.settings.search_field): 1}
        if self.settings.status_field:
            projection[_first_segment(self.settings.status_field)] = 1
        coll = self.mongo[database][collection]
        try:
            for candidate in document_id_candidates(raw_id):
                found = coll.find_one({"_id": candidate}, projection)
                if found is not None:
                    return found
        except PyMongoError as exc:
            raise Unavailable(f"MongoDB is unavailable: {type(exc).__name__}") from None
        raise NotFound(f"document {raw_id} not found in {database}.{collection}",
                       code="document_not_found")

    def candidate_folders(self, database: str, collection: str,
                          source: Mapping[str, Any]) -> list[str]:
        """Folder keys where this document's files may be: write-back path first, then planned."""
        try:
            plan = plan_document(source, database, collection, self.settings)
        except UnsafePathError:
            return []  # an _id that cannot name a folder was never downloaded
        folders = []
        if plan.previous_relative_folder:  # the write-back path, checked to be this document's
            folders.append(plan.previous_relative_folder)
        folders.append(plan.relative_folder)
        return folders

    # --- metadata.json ----------------------------------------------------------------------

    def stored_for_source(self, database: str, collection: str,
                          source: Mapping[str, Any]) -> StoredDocument | None:
        """The metadata of ``source`` (already read from MongoDB), or None when there is none."""
        document_id = layout.document_id_str(source["_id"])
        for folder in self.candidate_folders(database, collection, source):
            stored = self.stored_at(database, collection, document_id, folder)
            if stored is not None:
                return stored
        return None

    def stored_at(self, database: str, collection: str, document_id: str,
                  folder: str) -> StoredDocument | None:
        """The metadata in ``folder`` when it names this document, else None (no MongoDB
        read: the console's job page knows each document's folder from the job's rows)."""
        try:
            raw = self.storage.read_bytes(f"{folder}/{layout.METADATA_FILE}")
        except StorageUnavailable as exc:
            raise Unavailable(str(exc)) from None
        except ValueError:
            return None  # not a key of ours (check_key refused it)
        if raw is None:
            return None
        try:
            parsed = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None  # never written by us: files are replaced atomically
        if isinstance(parsed, dict) and (parsed.get("database"), parsed.get("collection"),
                                         parsed.get("document_id")) == (
                database, collection, document_id):
            return StoredDocument(folder, raw, parsed)
        return None

    def stored_document(self, database: str, collection: str, raw_id: str) -> StoredDocument:
        """The stored metadata of the document named by ``raw_id``; 404 when it has none."""
        source = self.find_source(database, collection, raw_id)
        stored = self.stored_for_source(database, collection, source)
        if stored is None:
            raise NotFound(f"document {raw_id} of {database}.{collection} has no stored images "
                           "(never downloaded)", code="document_not_found")
        return stored

    # --- files --------------------------------------------------------------------------------

    def listed_file(self, document: StoredDocument, file: str) -> StoredFile:
        """The file ``file`` as ``metadata.json`` lists it; 404 ``file_not_found`` otherwise."""
        for record in document.images():
            for name, image_format, entry in listed_files(record):
                if name != file:
                    continue
                try:
                    # A listed name is ours, but check it anyway: `original/../x` must not
                    # become a key outside the folder even if a metadata.json said so.
                    key = check_key(str(PurePosixPath(document.folder, name)))
                except ValueError:
                    break
                size = entry.get("bytes")
                sha256 = entry.get("sha256")
                return StoredFile(
                    key=key,
                    content_type=layout.CONTENT_TYPES.get(str(image_format), FALLBACK_CONTENT_TYPE),
                    sha256=sha256 if isinstance(sha256, str) else None,
                    size_bytes=size if isinstance(size, int) else None,
                )
        raise NotFound(f"{file!r} is not a file of this document", code="file_not_found")

    def open(self, stored: StoredFile) -> IO[bytes]:
        """A stream of the file's bytes (close it); 404 when it vanished, 503 on an outage."""
        try:
            return self.storage.open(stored.key)
        except FileNotFoundError:
            raise NotFound("the file is listed but no longer stored",
                           code="file_not_found") from None
        except StorageUnavailable as exc:
            raise Unavailable(str(exc)) from None


def iter_chunks(stream: IO[bytes], chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Yield ``stream`` in chunks and close it, also when the client goes away mid-way."""
    try:
        while chunk := stream.read(chunk_bytes):
            yield chunk
    finally:
        stream.close()
