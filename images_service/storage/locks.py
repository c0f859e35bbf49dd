"""The default lock around a document's ``metadata.json`` when the caller passes none.

Every change of metadata.json is a read-modify-write, so its writers must exclude each other.
The worker pipeline passes a Redis lock (fleet-wide, any backend). Callers without Redis — the
synchronous engine (tests, bench, scripts) — get this default:

* ``filesystem``: :class:`~images_service.storage.files.FolderLock`, an ``flock`` on the
  folder, which excludes threads and processes of one host.
* anything else (``s3``): a lock private to this process, so threads of one process are
  serialised but two processes writing one document into one bucket are not. A bucket has no
  lock of its own to offer (no ``flock``; conditional writes would only detect the race, not
  prevent it): run such writers under the pipeline's Redis lock.
"""

from __future__ import annotations

import threading
import zlib
from contextlib import AbstractContextManager
from typing import Any

from images_service.storage.backend import Storage, folder_prefix
from images_service.storage.files import FolderLock
from images_service.storage.filesystem import FilesystemStorage

#: Process-local locks are striped: memory stays bounded whatever the number of folders, and
#: two folders sharing a stripe only wait for each other briefly.
STRIPES = 256
_STRIPES = [threading.Lock() for _ in range(STRIPES)]


def default_folder_lock(storage: Storage, folder: str) -> AbstractContextManager[Any]:
    """The lock that serialises writers of ``folder``'s metadata.json without Redis."""
    prefix = folder_prefix(folder)
    if isinstance(storage, FilesystemStorage):
        storage.ensure_folder(prefix)  # flock needs the directory to exist
        return FolderLock(storage.root / prefix)
    stripe = zlib.crc32(f"{storage.location}\0{prefix}".encode()) % STRIPES
    return _STRIPES[stripe]
