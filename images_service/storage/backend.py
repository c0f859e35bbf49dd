"""The storage interface every writer and reader of the image tree goes through (§5, §11).

A :class:`Storage` holds the contract's layout under *keys*: POSIX paths relative to the
tree's root, ``db/coll/folder/original/img_001.jpg``, ``db/coll/folder/metadata.json``. The
backend adds its own root (``STORAGE_PATH`` or the bucket and ``S3_PREFIX``) and never exposes
it, so a key is also what the write-back ``path`` and the API report.

A *folder* argument (``list``, ``delete_prefix``, ``move_folder``…) is a key prefix naming a
folder, with or without the trailing ``/``; ``""`` is the whole tree. Folders are matched by
whole segments on every backend (``db/coll/a`` never matches ``db/coll/ab/…``).

Failures: a missing object is ``None`` (or :class:`FileNotFoundError` from :meth:`open`);
anything else the backend cannot do (disk full, bucket unreachable, credentials refused) is
:class:`~images_service.errors.StorageUnavailable`, retryable with code ``connection_error``.
Callers never see ``OSError`` from a write nor anything from botocore.

Implementations: :class:`~images_service.storage.filesystem.FilesystemStorage` and
:class:`~images_service.storage.s3.S3Storage`; :func:`~images_service.storage.factory.
create_storage` picks one from the settings.
"""

from __future__ import annotations

import abc
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# Temporary names start with TEMP_PREFIX (a dot: never a segment of a contract key);
# leftovers older than STALE_AGE_S belong to a dead writer.
from images_service.storage.files import STALE_TEMP_AGE_S as STALE_AGE_S
from images_service.storage.files import TEMP_PREFIX

METADATA_CONTENT_TYPE = "application/json"

__all__ = ["METADATA_CONTENT_TYPE", "STALE_AGE_S", "TEMP_PREFIX", "ObjectStat", "Storage",
           "StoredFile", "Versioned", "check_file_key", "check_key", "content_version",
           "folder_prefix"]


@dataclass(frozen=True)
class ObjectStat:
    """Size of a stored object, and the sha256 it was stored with when the backend keeps it."""

    size_bytes: int
    #: Hex sha256 given to :meth:`Storage.put_file` (object metadata on S3); None on the
    #: filesystem, which does not record it (hash the file if you must know).
    sha256: str | None


@dataclass(frozen=True)
class Versioned:
    """An object's bytes with the version a conditional write compares (None: absent)."""

    data: bytes | None
    #: Opaque; equal for equal content on one backend (filesystem: a hash of the bytes; S3:
    #: the ETag). None when there is no object.
    version: str | None


class StoredFile:
    """One file of a folder as :meth:`Storage.folder_files` lists it: ``key`` (relative to
    the tree's root; its last segment may be a temporary name, ``.tmp-…``) and
    ``modified_s``, when it was last written (epoch seconds: the object's LastModified, or
    the file's mtime, read only when asked: most files' age is never needed)."""

    __slots__ = ("key", "_modified_s", "_stat")

    def __init__(self, key: str, modified_s: float | None = None, *,
                 stat: Callable[[], float] | None = None) -> None:
        self.key = key
        self._modified_s = modified_s
        self._stat = stat

    @property
    def modified_s(self) -> float:
        if self._modified_s is None:
            self._modified_s = self._stat() if self._stat is not None else 0.0
        return self._modified_s

    def __repr__(self) -> str:
        return f"StoredFile({self.key!r})"


def content_version(data: bytes | None) -> str | None:
    """The version of ``data`` where the backend has none of its own: a hash of the bytes."""
    return None if data is None else hashlib.sha256(data).hexdigest()[:32]


#: A backslash or a control character (one regex pass: keys are checked on every access).
_UNSAFE_IN_KEY = re.compile(r"[\x00-\x1f\x7f\\]")


def check_key(key: str) -> str:
    """Return ``key`` if it is a relative POSIX key of safe segments, else raise ValueError.

    Every segment must be non-empty, must not start with a dot (``.``, ``..``, and the
    backends' own temporary names) and must not hold a backslash or a control character.
    """
    if not isinstance(key, str) or not key or key.startswith("/"):
        raise ValueError(f"storage key {key!r}: must be a non-empty relative path")
    for segment in key.split("/"):
        if not segment or segment.startswith("."):
            raise ValueError(f"storage key {key!r}: empty or dot segment")
        if _UNSAFE_IN_KEY.search(segment):
            raise ValueError(f"storage key {key!r}: backslash or control character")
    return key


def check_file_key(key: str) -> str:
    """Like :func:`check_key`, but the last segment may be a temporary name (a leftover of an
    interrupted write, which reconcile removes, contract §15)."""
    head, _, last = key.rpartition("/")
    if not head or not last.startswith(TEMP_PREFIX):
        return check_key(key)
    check_key(head)
    check_key(last[1:])  # the rest of the name follows the usual rules
    return key


def folder_prefix(folder: str) -> str:
    """``folder`` checked and ending in ``/`` (``""`` stays ``""``: the whole tree)."""
    folder = folder.rstrip("/")
    return "" if not folder else check_key(folder) + "/"


class Storage(abc.ABC):
    """Where the image tree lives. Every method is safe to call from several threads."""

    #: ``filesystem`` or ``s3``, as in ``STORAGE_BACKEND``.
    name: str

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Which tree this is (root path, or bucket and prefix): equal for two storages of
        one tree. For process-local locks and logs; never holds a credential."""

    @abc.abstractmethod
    def put_file(self, key: str, local_path: Path, *, content_type: str, sha256: str) -> None:
        """Store the finished local file ``local_path`` at ``key``, atomically.

        Readers see the old object or the complete new one, never a part. On success the
        local file is gone (renamed into place, or uploaded and deleted); on failure it is
        left to the caller, which discards it (or tries again). ``local_path`` should be in
        :meth:`local_temp_dir` of the key's folder: then the filesystem only renames it.
        ``content_type`` and ``sha256`` (hex) are kept with the object where the backend can.
        """

    @abc.abstractmethod
    def put_bytes(
        self, key: str, data: bytes, *, content_type: str = METADATA_CONTENT_TYPE
    ) -> None:
        """Store ``data`` at ``key`` atomically and durably (``metadata.json``)."""

    @abc.abstractmethod
    def put_bytes_if(
        self, key: str, data: bytes, *, version: str | None,
        content_type: str = METADATA_CONTENT_TYPE,
    ) -> Versioned | None:
        """Store ``data`` at ``key`` only if the object is still at ``version`` (None: only if
        there is none); None, and nothing written, when it changed meanwhile. Else the object
        as written with its new version (None when the backend did not say), so that a writer's
        next write can compare against it without reading the object again.

        The compare and the write are one step for every writer of the tree (filesystem: under
        an ``flock`` of the key's folder; S3: ``If-Match`` / ``If-None-Match: *``), so a writer
        whose lock expired, or that raced another, finds out instead of overwriting newer data.
        """

    def read_versioned(self, key: str) -> Versioned:
        """The object's bytes and version (for :meth:`put_bytes_if`)."""
        data = self.read_bytes(key)
        return Versioned(data, content_version(data))

    def read_bytes(self, key: str) -> bytes | None:
        """The whole object at ``key``, or None when there is none."""
        try:
            with self.open(key) as stream:
                return stream.read()
        except FileNotFoundError:
            return None

    def sha256_of(self, key: str) -> str | None:
        """The hex sha256 of the object's bytes, read in full; None when there is none."""
        digest = hashlib.sha256()
        try:
            with self.open(key) as stream:
                while chunk := stream.read(1024 * 1024):
                    digest.update(chunk)
        except FileNotFoundError:
            return None
        return digest.hexdigest()

    @abc.abstractmethod
    def open(self, key: str) -> IO[bytes]:
        """A readable binary stream of ``key`` (close it); FileNotFoundError when absent."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectStat | None:
        """Size (and sha256 where kept) of ``key`` without reading it; None when absent."""

    def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""
        return self.stat(key) is not None

    @abc.abstractmethod
    def list(self, folder: str = "") -> list[str]:
        """Every key under ``folder``, sorted (never a temporary file or an empty folder)."""

    @abc.abstractmethod
    def delete(self, keys: Iterable[str]) -> None:
        """Remove ``keys``; keys already absent are ignored."""

    @abc.abstractmethod
    def delete_prefix(self, folder: str) -> int:
        """Remove the folder and everything in it; returns how many keys were removed."""

    @abc.abstractmethod
    def move_folder(self, old_folder: str, new_folder: str) -> bool:
        """Move every key of ``old_folder`` to ``new_folder``; False when old was empty.

        The caller holds the document's lock and has checked (from the two metadata.json)
        that ``new_folder`` is not another document's. The target must be free: empty, or
        holding only what an interrupted move of the same folder left there; otherwise
        FileExistsError and nothing changes. See the backends for how atomic it is.
        """

    @abc.abstractmethod
    def list_folders(self, parent: str, name_prefix: str = "") -> Iterator[str]:
        """Names of the folders directly under ``parent`` (e.g. ``db/coll``) that start with
        ``name_prefix``, streamed (a collection may have millions): never the trash. A name
        may be that of a folder emptied meanwhile (an empty directory; SeaweedFS also keeps
        listing an emptied prefix): callers confirm with the folder's metadata.json."""

    #: Whether :meth:`folder_files` lists folders in a stable order (and can resume ``after``).
    folders_sorted: bool = False

    @abc.abstractmethod
    def folder_files(self, parent: str,
                     after: str | None = None) -> Iterator[tuple[str, list[StoredFile]]]:
        """Each folder directly under ``parent`` (``db/coll``) with every file in it, temporary
        leftovers included, streamed one folder at a time (never the trash). For reconcile
        (contract §15): what the tree holds, to compare with what metadata.json names.

        Where :attr:`folders_sorted` (S3: the bucket's key order), ``after`` resumes after
        that folder; elsewhere the order is the directory's and ``after`` is ignored (the
        listing starts over)."""

    @abc.abstractmethod
    def delete_files(self, keys: Iterable[str]) -> None:
        """Remove files listed by :meth:`folder_files` (temporary names allowed, see
        :func:`check_file_key`); keys already absent are ignored."""

    @abc.abstractmethod
    def copy_many(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Copy each ``(source, destination)`` key, server-side where the backend can (S3
        CopyObject; a hard link on the filesystem), keeping the stored sha256 and type.

        Every source is read before any destination is written, so the pairs may overlap (a
        reordered list moves ``img_001`` to ``img_002`` and ``img_002`` to ``img_003``). Each
        destination appears atomically. A missing source raises FileNotFoundError and writes
        nothing.
        """

    @abc.abstractmethod
    def trash(self) -> Storage:
        """The tree's trash (``.trash/`` under the root, contract §15) as a storage of its
        own, whose keys are those the folders had in the tree."""

    @abc.abstractmethod
    def move_folder_to(self, folder: str, target: Storage) -> bool:
        """Move ``folder`` to the same key in ``target`` (this tree's trash, or the tree from
        its trash), replacing whatever ``target`` holds there; False when there is nothing to
        move. ``metadata.json`` is written last, so a folder whose move was interrupted is
        recognisable and the move can be made again."""

    @abc.abstractmethod
    def ensure_folder(self, folder: str) -> None:
        """Make the document folder's layout exist (``original/``, the empty ``processed/``).

        A bucket has no empty folders (§11): a no-op there.
        """

    @abc.abstractmethod
    def local_temp_dir(self, folder: str) -> Path:
        """A local directory where a download for ``folder`` streams its body before validation.

        Filesystem: the folder's ``original/``, so that :meth:`put_file` is a rename. S3: a
        directory private to this process outside ``STORAGE_PATH``. Name files there with
        :data:`TEMP_PREFIX` (``storage.files.temp_file`` does).
        """

    @abc.abstractmethod
    def sweep_leftovers(self, folder: str = "", *, older_than_s: float = STALE_AGE_S) -> int:
        """Remove what writers killed mid-write left under ``folder``; returns how many.

        Filesystem: ``.tmp-`` files; S3: incomplete multipart uploads. Only leftovers older
        than ``older_than_s`` are touched, so a live write is never disturbed.
        """

    @abc.abstractmethod
    def check(self) -> str:
        """``"ok"`` or ``"error: …"`` naming the path or bucket, for ``/health``; never raises."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and local temporary directories."""

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
