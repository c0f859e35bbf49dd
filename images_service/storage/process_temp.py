"""A local directory private to this process, for download bodies that go to a bucket (§11).

With ``STORAGE_BACKEND=s3`` a worker must leave nothing on its disk that outlives a download:
bodies wait in ``{temp root}/images-service-{pid}`` (mode 0700) and are deleted once uploaded
or discarded. The pid is read at each call, so a process forked after the storage was built
gets its own directory. A process killed mid-download cannot clean up: the directories of
dead pids are removed when the next storage is built.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from images_service.errors import StorageUnavailable

#: Name of a process's directory: this prefix and its pid.
DIR_PREFIX = "images-service-"


def own_dir(root: Path) -> Path:
    """This process's directory under ``root`` (not created)."""
    return root / f"{DIR_PREFIX}{os.getpid()}"


def ensure_own_dir(root: Path) -> Path:
    """This process's directory, created if needed; StorageUnavailable when it cannot be."""
    directory = own_dir(root)
    if not directory.is_dir():
        try:
            root.mkdir(parents=True, exist_ok=True)
            directory.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(
                f"local temporary directory {str(directory)!r}: {exc.strerror or exc}"
            ) from exc
    return directory


def remove_own_dir(root: Path) -> None:
    shutil.rmtree(own_dir(root), ignore_errors=True)


def remove_dirs_of_dead_processes(root: Path) -> int:
    """Remove the directories whose pid is not running; returns how many."""
    removed = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            pid = entry.name[len(DIR_PREFIX):]
            if not entry.name.startswith(DIR_PREFIX) or not pid.isdigit():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
            except PermissionError:
                pass  # alive, another user's
    return removed
