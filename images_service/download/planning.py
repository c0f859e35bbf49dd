"""Planning one document (contract §3, §5): its folder's key and its numbered image URLs.

:func:`plan_document` validates the names (database, collection, ``_id``) that make the
folder, reads the search value for the folder's slug and the image URLs from the configured
fields, and finds the folder of an earlier download under another search value (from the
write-back field's ``path``, checked to belong to this document). The result,
:class:`DocumentPlan`, is all a download step needs; it travels in messages as plain JSON
(:mod:`workers.pipeline.plans`).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from bson import json_util
from bson.binary import Binary
from bson.json_util import CANONICAL_JSON_OPTIONS

from images_service.config.settings import Settings
from images_service.download.urls import extract_image_urls, get_path
from images_service.errors import UnsafePathError
from images_service.storage import layout, metadata

_MISSING = object()


@dataclass(frozen=True)
class ImageTask:
    """One image of a document: its 1-based index and its URL."""

    index: int
    url: str


@dataclass(frozen=True)
class DocumentPlan:
    """Everything needed to download and store the images of one document."""

    database: str
    collection: str
    document_id: str
    search_field: str
    search_value: Any  #: a JSON scalar, None when the field is missing
    #: The folder's key: POSIX, relative to the tree's root (the write-back ``path``).
    relative_folder: str
    images: tuple[ImageTask, ...]
    #: The folder of an earlier download under another search value (from the write-back
    #: field), checked to belong to this document; None when there is none.
    previous_relative_folder: str | None = None
    #: The ``_id`` in canonical Extended JSON (metadata.json's ``document_key``, §14).
    document_key: Any = None
    #: When this plan was made (epoch ms): a message planned earlier than the plan that last
    #: wrote the folder is stale (§14).
    planned_at_ms: int = 0

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(task.url for task in self.images)

    @property
    def header(self) -> metadata.DocumentHeader:
        return metadata.DocumentHeader(
            self.database, self.collection, self.document_id, self.search_field,
            self.search_value, self.document_key,
        )


def plan_document(
    doc: Mapping[str, Any],
    database: str,
    collection: str,
    settings: Settings,
    image_fields: Sequence[str] | None = None,
) -> DocumentPlan:
    """Plan one document: validated names, its folder and its numbered image URLs.

    Raises UnsafePathError when the database, collection or ``_id`` cannot name a folder.
    """
    document_id, search_value, relative = _folder_of(doc, database, collection, settings)
    urls = extract_image_urls(doc, image_fields or settings.image_fields)
    previous = _previous_folder(doc, settings, database, collection, document_id, relative)
    return DocumentPlan(
        database=database,
        collection=collection,
        document_id=document_id,
        search_field=settings.search_field,
        search_value=search_value,
        relative_folder=relative,
        images=tuple(ImageTask(i, url) for i, url in enumerate(urls, start=1)),
        previous_relative_folder=previous,
        document_key=document_key(doc["_id"]),
        planned_at_ms=time.time_ns() // 1_000_000,
    )


def folder_of(doc: Mapping[str, Any], database: str, collection: str, settings: Settings) -> str:
    """The folder key :func:`plan_document` gives ``doc`` (the write-back ``path``), without
    planning its images. Raises UnsafePathError like it."""
    return _folder_of(doc, database, collection, settings)[2]


def _folder_of(doc: Mapping[str, Any], database: str, collection: str,
               settings: Settings) -> tuple[str, Any, str]:
    """(document id, search value, folder key) of ``doc``: the names, validated."""
    layout.check_database(database)
    layout.check_collection(collection)
    if "_id" not in doc:
        raise UnsafePathError("document has no _id")
    document_id = layout.check_segment(layout.document_id_str(doc["_id"]), "document id")
    raw_value = get_path(doc, settings.search_field, _MISSING)
    search_value = None if raw_value is _MISSING else _json_scalar(raw_value)
    slug = layout.slugify(search_value)
    return document_id, search_value, layout.relative_folder(database, collection, document_id,
                                                             slug)


def document_key(document_id: Any) -> Any:
    """The ``_id`` in canonical Extended JSON, as a JSON value (``{"$numberInt": "5"}``,
    ``"5"``, ``{"$oid": "…"}``): what tells ``5`` from ``"5"`` (contract §14)."""
    if isinstance(document_id, uuid.UUID):  # a UUID is stored as binary subtype 4
        document_id = Binary.from_uuid(document_id)
    return json.loads(json_util.dumps(document_id, json_options=CANONICAL_JSON_OPTIONS))


def _json_scalar(value: Any) -> Any:
    """A search value as stored in metadata.json: JSON scalars as they are, others as str."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


def _previous_folder(
    doc: Mapping[str, Any],
    settings: Settings,
    database: str,
    collection: str,
    document_id: str,
    relative: str,
) -> str | None:
    """The ``path`` of the write-back field when it names another folder of this document."""
    if not settings.status_field:
        return None
    dotted = f"{settings.status_field}.path"
    # nx-27017 answers a projection on a dotted path with a flat key ({"a.path": …}), MongoDB
    # nests it: read both, so a projected document works from either server.
    path = get_path(doc, dotted, doc.get(dotted))
    if not isinstance(path, str) or path == relative:
        return None
    parts = PurePosixPath(path).parts
    if len(parts) != 3 or parts[:2] != (database, collection):
        return None
    name = parts[2]
    if name != document_id and not name.startswith(document_id + "-"):
        return None
    try:
        layout.check_segment(name, "previous folder")
    except UnsafePathError:
        return None
    return path
