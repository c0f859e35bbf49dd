"""Names and paths of the image tree (CONTRACT.md §5).

``{STORAGE_PATH}/{database}/{collection}/{document_id}-{search_slug}/`` holds
``original/img_001.jpg``…, an empty ``processed/`` and ``metadata.json``. This module only
computes names (folders as POSIX keys relative to the tree's root); the
:class:`~images_service.storage.backend.Storage` stores them.

Every segment that comes from outside (database, collection, document id) is checked before it
becomes part of a path: anything that could name another directory (``..``, separators, NUL,
a leading dot, control characters) raises :class:`~images_service.errors.UnsafePathError`.
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
import uuid
from pathlib import Path, PurePosixPath

from images_service.config.settings import COLLECTION_NAME_RE, DB_NAME_RE
from images_service.errors import UnsafePathError

#: Pillow format name -> file extension (the contract's table).
EXTENSIONS: dict[str, str] = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "AVIF": ".avif",
}
#: Pillow format name -> the Content-Type an image object is stored with (from the detected
#: format, never from the server's header).
CONTENT_TYPES: dict[str, str] = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "AVIF": "image/avif",
}
#: Slugs are cut to this many characters (before the trailing ``-`` is removed).
SLUG_MAX_CHARS = 64
#: A document id longer than this (UTF-8 bytes) would risk the 255-byte file-name limit.
MAX_ID_BYTES = 180
ORIGINAL_DIR = "original"
PROCESSED_DIR = "processed"
METADATA_FILE = "metadata.json"

_NON_SLUG_RE = re.compile(r"[^a-z0-9]+")
#: ``img_001.jpg`` → index 1, extension ``.jpg`` (3 digits minimum, more when needed).
IMAGE_FILE_RE = re.compile(r"^img_(\d{3,})(\.[a-z]+)$")
#: A separator (``/``, ``\\``) or a control character (NUL included): one regex search (the
#: catch-up scan checks the names of every downloaded document; a loop over the characters
#: in Python cost ~7 µs a name).
_UNSAFE_RE = re.compile(r"[/\\\x00-\x1f\x7f]")


def slugify(value: object) -> str:
    """The contract's search slug of ``value`` ("" when nothing is left).

    Lower-case, accents stripped, runs of anything but ``a-z0-9`` turned into ``-``, trimmed
    of ``-``, cut to the first 64 characters, then a trailing ``-`` removed. ``None`` gives
    ""; other non-strings are converted with ``str()`` first (e.g. a numeric name).
    """
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    # NFKD splits "é" into "e" + a combining accent (and "ﬁ" into "fi"); marks are dropped.
    decomposed = unicodedata.normalize("NFKD", text.lower())
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    slug = _NON_SLUG_RE.sub("-", stripped.lower()).strip("-")
    return slug[:SLUG_MAX_CHARS].rstrip("-")


def document_id_str(document_id: object) -> str:
    """The ``_id`` as the string used in paths and metadata (ObjectId hex, str, int, UUID)."""
    if isinstance(document_id, bool):
        raise UnsafePathError("document id: booleans are not supported ids")
    if isinstance(document_id, (str, int, uuid.UUID)):
        return str(document_id)
    # bson.ObjectId without importing bson here: its str() is the 24-digit hex.
    if type(document_id).__name__ == "ObjectId":
        return str(document_id)
    raise UnsafePathError(
        f"document id: type {type(document_id).__name__} cannot name a folder"
    )


def check_segment(value: str, what: str) -> str:
    """Return ``value`` if it is safe as one path segment, else raise UnsafePathError."""
    if not isinstance(value, str) or not value:
        raise UnsafePathError(f"{what}: must be a non-empty string")
    if value in (".", "..") or value.startswith("."):
        raise UnsafePathError(f"{what}: {value!r} must not start with a dot")
    if _UNSAFE_RE.search(value):
        raise UnsafePathError(f"{what}: {value!r} contains a separator or control character")
    if value != value.strip():
        raise UnsafePathError(f"{what}: {value!r} has leading or trailing whitespace")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise UnsafePathError(f"{what}: longer than {MAX_ID_BYTES} bytes")
    return value


def check_database(name: str) -> str:
    """A database name that MongoDB accepts and that is a safe path segment."""
    return _checked_database(name) if isinstance(name, str) else check_segment(name, "database")


def check_collection(name: str) -> str:
    """A collection name that MongoDB accepts and that is a safe path segment."""
    return (_checked_collection(name) if isinstance(name, str)
            else check_segment(name, "collection"))


# Cached (valid names only: a refusal raises, which is not cached): every document's folder
# checks its database and collection again, and a job has one of each.
@functools.lru_cache(maxsize=256)
def _checked_database(name: str) -> str:
    check_segment(name, "database")
    if not DB_NAME_RE.match(name):
        raise UnsafePathError(f"database: {name!r} is not a valid database name")
    return name


@functools.lru_cache(maxsize=1024)
def _checked_collection(name: str) -> str:
    check_segment(name, "collection")
    if not COLLECTION_NAME_RE.match(name):
        raise UnsafePathError(f"collection: {name!r} is not a valid collection name")
    return name


def folder_name(document_id: str, slug: str) -> str:
    """``{document_id}-{slug}``, or the id alone when the slug is empty."""
    return f"{document_id}-{slug}" if slug else document_id


def relative_folder(database: str, collection: str, document_id: str, slug: str) -> str:
    """The document folder relative to STORAGE_PATH, POSIX style (as the API reports it)."""
    check_database(database)
    check_collection(collection)
    check_segment(document_id, "document id")
    # Three checked segments (no separator, no dot segment): their POSIX join, as
    # PurePosixPath(database, collection, name) would give it.
    return f"{database}/{collection}/{folder_name(document_id, slug)}"


def document_folder(storage_path: Path, relative: str) -> Path:
    """STORAGE_PATH joined with ``relative``, refusing anything that would leave it.

    The check is lexical (no filesystem access): the segments were validated already, this
    is defence in depth against a bad ``relative`` reaching here unchecked.
    """
    root = os.path.normpath(os.fspath(storage_path))
    joined = os.path.normpath(os.path.join(root, *PurePosixPath(relative).parts))
    if not joined.startswith(root.rstrip(os.sep) + os.sep) or os.path.isabs(relative):
        raise UnsafePathError(f"folder {relative!r} would leave STORAGE_PATH")
    return Path(storage_path) / relative


def extension_for(image_format: str) -> str:
    """The file extension of a Pillow format name of the contract's table."""
    return EXTENSIONS[image_format]


def image_filename(index: int, extension: str) -> str:
    """``img_001.jpg`` for index 1: 3 digits minimum, more when the index needs them."""
    if index < 1:
        raise ValueError(f"image index must be >= 1, got {index}")
    return f"img_{index:03d}{extension}"


def image_relpath(index: int, extension: str) -> str:
    """The ``file`` value of metadata.json: ``original/img_001.jpg``."""
    return f"{ORIGINAL_DIR}/{image_filename(index, extension)}"


def image_key(folder: str, index: int, extension: str) -> str:
    """The storage key of an original image: ``db/coll/id-slug/original/img_001.jpg``."""
    return f"{folder}/{image_relpath(index, extension)}"


def parse_image_filename(name: str) -> tuple[int, str] | None:
    """``img_007.png`` → ``(7, ".png")``; None for any other name."""
    match = IMAGE_FILE_RE.match(name)
    if match is None:
        return None
    return int(match.group(1)), match.group(2)
