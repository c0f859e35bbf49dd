"""Atomic file operations on the image tree (CONTRACT.md §5: "files appear atomically").

Every file is written to a hidden temporary name in its final folder and then renamed over the
final name with :func:`os.replace`, so a reader sees either the old file or the complete new
one. Temporary names start with ``.tmp-`` and name their writer (host and pid), so the
leftovers of a process killed mid-write (the only way one can survive: every code path that
fails removes its own temporary file) are removed by the next writer of the folder on the same
host as soon as that process is dead (:func:`remove_leftovers`), and by anyone after
:data:`STALE_TEMP_AGE_S`.

Durability: callers choose per file whether its data is fsynced before the rename (see
:func:`atomic_write_bytes` and :func:`move_into_place`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import socket
import time
from pathlib import Path

from images_service.storage.layout import ORIGINAL_DIR, PROCESSED_DIR

logger = logging.getLogger(__name__)

#: Prefix of every temporary file written into the tree.
TEMP_PREFIX = ".tmp-"
#: A temporary file older than this (seconds) belongs to a dead process and may be removed.
STALE_TEMP_AGE_S = 3600.0
#: ``.tmp-{host}.{pid namespace}-{pid}-{random}{suffix}``: who wrote a temporary file.
_TEMP_NAME_RE = re.compile(r"^\.tmp-(?P<host>[A-Za-z0-9-]*\.[0-9]+)-(?P<pid>[0-9]+)-[0-9a-f]+")


def _host_tag() -> str:
    """This host, as written into temporary names: hostname and pid-namespace inode.

    The pid namespace tells apart containers that share a volume and a hostname, whose pids
    mean different processes; two machines never share a hostname on one tree (a network
    file system needs unique hostnames anyway).
    """
    host = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname())[:40]
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{host}.{namespace}"


#: Computed once: neither changes while a process runs.
HOST_TAG = _host_tag()


def ensure_document_dirs(folder: Path) -> None:
    """Create ``folder`` with ``original/`` and the empty ``processed/``."""
    (folder / ORIGINAL_DIR).mkdir(parents=True, exist_ok=True)
    (folder / PROCESSED_DIR).mkdir(exist_ok=True)


def temp_file(directory: Path, suffix: str = ".part") -> tuple[int, Path]:
    """Create a hidden temporary file in ``directory``: ``(fd, path)``, mode 0644.

    Like :func:`tempfile.mkstemp` (O_EXCL, random name) but created readable by other
    services at once, saving a chmod per file.
    """
    writer = f"{HOST_TAG}-{os.getpid()}"  # read per call: forked workers have their own pid
    for _ in range(100):
        path = os.path.join(directory, f"{TEMP_PREFIX}{writer}-{secrets.token_hex(8)}{suffix}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            continue
        return fd, Path(path)
    raise FileExistsError(f"no free temporary name in {directory}")


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename).

    ``durable`` fsyncs the data before the rename, so that after a power loss the name
    holds the old or the new content, never an empty file. The directory is not fsynced:
    losing the rename itself only brings back the previous, consistent version.
    """
    fd, tmp = temp_file(path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


def move_into_place(tmp: Path, final: Path, *, durable: bool = True) -> None:
    """Rename a finished temporary file (same folder) over ``final``, fsyncing its data first."""
    if durable:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(tmp, final)


def fsync_dir(directory: Path) -> None:
    """Make renames inside ``directory`` durable (best effort: not every FS supports it)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_quietly(path: Path) -> None:
    """Remove ``path`` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` runs on this host (a zombie counts as dead: it writes nothing more)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


def is_leftover(name: str, mtime_s: float, *, max_age_s: float = STALE_TEMP_AGE_S) -> bool:
    """Whether the temporary file ``name`` belongs to a dead writer.

    Dead for sure: written on this host by a process that no longer runs. Dead by age: older
    than ``max_age_s`` (any host, and names of earlier versions), since an attempt is bounded
    by the fetcher's deadline (minutes at most) and a metadata write by seconds.
    """
    if not name.startswith(TEMP_PREFIX):
        return False
    if mtime_s < time.time() - max_age_s:
        return True
    match = _TEMP_NAME_RE.match(name)
    return (match is not None and match.group("host") == HOST_TAG
            and not _process_alive(int(match.group("pid"))))


def remove_leftovers(directory: Path, *, max_age_s: float = STALE_TEMP_AGE_S) -> int:
    """Remove the temporary files of dead writers directly in ``directory``; returns how many.

    One ``scandir`` of the directory; the writer's liveness is asked only for temporary
    names. A live writer's file is never removed.
    """
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        with contextlib.suppress(FileNotFoundError):
            mtime_s = entry.stat(follow_symlinks=False).st_mtime
            if is_leftover(entry.name, mtime_s, max_age_s=max_age_s):
                os.unlink(entry.path)
                removed += 1
    if removed:
        logger.info("removed %d temporary files of dead writers in %s", removed, directory)
    return removed


class FolderLock:
    """An exclusive ``flock`` on the document folder itself (no lock file is created).

    It serialises writers of one ``metadata.json`` across threads and processes of one host
    (each acquisition opens its own descriptor, and ``flock`` locks of different open file
    descriptions exclude each other). Workers on several hosts must pass a shared lock
    (Redis) instead.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            # Closing the descriptor releases the flock.
            os.close(fd)
