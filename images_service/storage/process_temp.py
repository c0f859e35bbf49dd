"""A local directory private to this process, for download bodies that go to a bucket (§11).

With ``STORAGE_BACKEND=s3`` a worker must leave nothing on its disk that outlives a download:
bodies wait in a directory of this process under the temp root and are deleted once uploaded
or discarded.

The directory is made by :func:`tempfile.mkdtemp` (``images-service-{pid}-{random}``, mode
0700, created atomically: it never reuses what someone else made), and checked again each
time it is handed out (a real directory, not a symlink, owned by this user, no group or
other access): a shared ``/tmp`` holds whatever other local users put there, and a
predictable name would let one of them pre-create it (or a symlink to a directory of
theirs) and read or replace the bodies. The pid is read at each call, so a process forked
after the storage was built gets its own directory. A process killed mid-download cannot
clean up: the directories of dead pids are removed when the next storage is built (only
this user's real directories; nothing is followed through a symlink).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path

from images_service.errors import StorageUnavailable

#: Name of a process's directory: this prefix, its pid, then ``-`` and random characters.
DIR_PREFIX = "images-service-"

_lock = threading.Lock()
#: (pid, temp root) -> the directory mkdtemp made for that process.
_dirs: dict[tuple[int, str], Path] = {}


def _is_private(directory: Path) -> bool:
    """A real directory (not a symlink), owned by this user, open to nobody else."""
    try:
        info = os.lstat(directory)
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
            and stat.S_IMODE(info.st_mode) & 0o077 == 0)


def own_dir(root: Path) -> Path | None:
    """This process's directory under ``root``, if it made one (None otherwise)."""
    return _dirs.get((os.getpid(), str(root)))


def ensure_own_dir(root: Path) -> Path:
    """This process's private directory, made if needed; StorageUnavailable when it cannot be."""
    key = (os.getpid(), str(root))
    with _lock:
        directory = _dirs.get(key)
        if directory is not None and _is_private(directory):
            return directory
        try:
            root.mkdir(parents=True, exist_ok=True)
            directory = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=root))
        except OSError as exc:
            raise StorageUnavailable(
                f"local temporary directory under {str(root)!r}: {exc.strerror or exc}"
            ) from exc
        _dirs[key] = directory
        return directory


def remove_own_dir(root: Path) -> None:
    with _lock:
        directory = _dirs.pop((os.getpid(), str(root)), None)
    if directory is not None and _is_private(directory):
        shutil.rmtree(directory, ignore_errors=True)


def _pid_of(name: str) -> int | None:
    """The pid in ``images-service-{pid}-{random}`` (or the older ``images-service-{pid}``)."""
    if not name.startswith(DIR_PREFIX):
        return None
    pid = name[len(DIR_PREFIX):].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def remove_dirs_of_dead_processes(root: Path) -> int:
    """Remove this user's directories whose pid is not running; returns how many."""
    removed = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            pid = _pid_of(entry.name)
            if pid is None or not _is_private(Path(entry.path)):
                continue  # not ours, or not a real private directory: never followed
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
            except PermissionError:
                pass  # alive, another user's
    return removed
