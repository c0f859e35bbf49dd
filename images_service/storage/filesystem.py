"""The image tree in a local directory, ``STORAGE_PATH`` (``STORAGE_BACKEND=filesystem``).

Keys map to paths under the root. Writes use :mod:`images_service.storage.files`: a hidden
``.tmp-`` file in the final folder renamed over the final name, so a reader sees the old file
or the new one. Downloads stream into the folder's ``original/`` (:meth:`local_temp_dir`), so
storing an image is one rename on the same file system. A folder move is one ``rename`` of the
directory: atomic, nothing to resume.

Leftovers: temporary names carry their writer's host and pid, so whoever next prepares the
folder (:meth:`~FilesystemStorage.ensure_folder`, the document-level step of every download
message) removes at once what a dead process of this host left there, and anything older
than an hour; no whole-tree walk is ever needed.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from stat import S_ISREG
from typing import IO

from images_service.errors import StorageUnavailable
from images_service.storage import files
from images_service.storage.backend import (
    STALE_AGE_S,
    TEMP_PREFIX,
    ObjectStat,
    Storage,
    StoredFile,
    Versioned,
    check_file_key,
    check_key,
    content_version,
    folder_prefix,
)
from images_service.storage.layout import ORIGINAL_DIR, PROCESSED_DIR

#: ``db/coll/folder/original`` is 4 segments deep: the layout's fixed folders are never
#: deeper, so an emptied folder below them (``processed/thumb/``) is removed, as it would
#: not exist in a bucket either.
LAYOUT_DEPTH = 4
#: The trash's directory under the root (contract §15): a dot name, so no key reaches it.
TRASH_DIR = ".trash"


def _files_under(directory: str, key: str, found: list[StoredFile]) -> None:
    """Every file below ``directory`` (key ``key``) with its mtime, appended to ``found``; dot
    directories (none in the layout) are skipped, dot files (temporary leftovers) are not."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return  # removed meanwhile (trashed, moved)
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                if not entry.name.startswith("."):
                    _files_under(entry.path, f"{key}/{entry.name}", found)
                continue
        except FileNotFoundError:
            continue
        found.append(StoredFile(f"{key}/{entry.name}", stat=functools.partial(_mtime_s, entry)))


def _mtime_s(entry: os.DirEntry) -> float:
    """When ``entry`` was last written; a file gone meanwhile counts as written just now
    (it is no leftover to remove)."""
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return float("inf")


@contextlib.contextmanager
def _os_errors(action: str, key: str) -> Iterator[None]:
    """Turn a failing disk (full, read-only, permissions) into a retryable StorageUnavailable."""
    try:
        yield
    except OSError as exc:
        raise StorageUnavailable(
            f"STORAGE_PATH: {action} {key!r} failed: {exc.strerror or exc}"
        ) from exc


class FilesystemStorage(Storage):
    """The tree under ``root`` on a local (or network) file system."""

    name = "filesystem"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._root_s = os.fspath(self.root)

    @property
    def location(self) -> str:
        return f"file://{os.path.abspath(self.root)}"

    def _path(self, key: str) -> Path:
        # check_key refuses absolute keys and dot segments: the path cannot leave the root.
        return self.root / check_key(key)

    def _folder(self, folder: str) -> Path:
        return self.root / folder_prefix(folder)

    # -- writing ------------------------------------------------------------------------------

    def put_file(self, key: str, local_path: Path, *, content_type: str, sha256: str) -> None:
        final = self._path(key)
        with _os_errors("storing", key):
            try:
                self._move_into_place(Path(local_path), final)
            except FileNotFoundError:
                if not Path(local_path).exists():
                    raise
                # The parent is missing (a first image of processed/NAME/, or a folder
                # removed meanwhile): created only then, not with a mkdir per image.
                final.parent.mkdir(parents=True, exist_ok=True)
                self._move_into_place(Path(local_path), final)

    def _move_into_place(self, source: Path, final: Path) -> None:
        try:
            # Not fsynced: after a power loss an image may be short, but then its size no
            # longer matches metadata.json and the next run fetches it again.
            files.move_into_place(source, final, durable=False)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            self._copy_into_place(source, final)

    @staticmethod
    def _copy_into_place(source: Path, final: Path) -> None:
        """``source`` is on another file system: copy it next to ``final``, then rename."""
        fd, tmp = files.temp_file(final.parent)
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out, 1024 * 1024)
            os.replace(tmp, final)
        except BaseException:
            files.remove_quietly(tmp)
            raise
        files.remove_quietly(source)

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/json") -> None:
        path = self._path(key)
        with _os_errors("writing", key):
            path.parent.mkdir(parents=True, exist_ok=True)
            files.atomic_write_bytes(path, data, durable=True)

    def put_bytes_if(
        self, key: str, data: bytes, *, version: str | None,
        content_type: str = "application/json",
    ) -> Versioned | None:
        path = self._path(key)
        with _os_errors("writing", key):
            path.parent.mkdir(parents=True, exist_ok=True)
            # The flock of the key's folder makes compare-and-replace one step for every
            # process of this host (and of hosts sharing the mount, where flock is honoured);
            # the caller's lock (Redis, or process-local) is not relied upon for that.
            with files.FolderLock(path.parent):
                try:
                    current = path.read_bytes()
                except FileNotFoundError:
                    current = None
                if content_version(current) != version:
                    return None
                files.atomic_write_bytes(path, data, durable=True)
        return Versioned(data, content_version(data))

    # -- reading ------------------------------------------------------------------------------

    def open(self, key: str) -> IO[bytes]:
        # A string path: these reads (metadata.json) are the hot path of reconcile.
        path = os.path.join(self._root_s, check_key(key))
        try:
            return open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise FileNotFoundError(f"no object {key!r}") from None
        except OSError as exc:
            raise StorageUnavailable(
                f"STORAGE_PATH: reading {key!r} failed: {exc.strerror}"
            ) from exc

    def stat(self, key: str) -> ObjectStat | None:
        try:
            result = os.stat(os.path.join(self._root_s, check_key(key)))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageUnavailable(f"STORAGE_PATH: stat {key!r} failed: {exc.strerror}") from exc
        if not S_ISREG(result.st_mode):
            return None
        # The filesystem keeps no sha256: callers that need it hash the file.
        return ObjectStat(result.st_size, None)

    def list(self, folder: str = "") -> list[str]:
        prefix = folder_prefix(folder)
        keys = []
        for directory, subdirs, names in os.walk(self.root / prefix):
            subdirs[:] = [d for d in subdirs if not d.startswith(".")]
            relative = os.path.relpath(directory, self.root).replace(os.sep, "/")
            base = "" if relative == "." else relative + "/"
            keys.extend(base + name for name in names if not name.startswith("."))
        return sorted(keys)

    # -- removing and moving ------------------------------------------------------------------

    def delete(self, keys: Iterable[str]) -> None:
        self._unlink((key, self._path(key)) for key in keys)

    def _unlink(self, paths: Iterable[tuple[str, Path]]) -> None:
        """Remove each (key, path) that exists, and the folders they leave empty."""
        for key, path in paths:
            with _os_errors("deleting", key):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                self._prune_empty_parents(path.parent)

    def _prune_empty_parents(self, directory: Path) -> None:
        while len(directory.relative_to(self.root).parts) > LAYOUT_DEPTH:
            try:
                directory.rmdir()
            except OSError:  # not empty (or already gone): stop climbing
                return
            directory = directory.parent

    def delete_prefix(self, folder: str) -> int:
        if not folder.strip("/"):
            raise ValueError("delete_prefix needs a folder: refusing to delete the whole tree")
        keys = self.list(folder)
        with _os_errors("deleting", folder), contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self._folder(folder))
        return len(keys)

    def move_folder(self, old_folder: str, new_folder: str) -> bool:
        source, target = self._folder(old_folder), self._folder(new_folder)
        if not source.is_dir():
            return False
        if target.exists():
            if self.list(new_folder):
                raise FileExistsError(f"{new_folder!r} already holds files")
            # Only the empty layout (from ensure_folder) is there: rename needs it gone.
            with _os_errors("moving to", new_folder):
                shutil.rmtree(target)
        with _os_errors("moving to", new_folder):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(source, target)
        return True

    def move_folder_to(self, folder: str, target: Storage) -> bool:
        if not isinstance(target, FilesystemStorage):
            raise TypeError("a filesystem folder moves only within its own tree")
        source, destination = self._folder(folder), target._folder(folder)
        if not source.is_dir():
            return False
        with _os_errors("moving", folder):
            if destination.exists():
                shutil.rmtree(destination)  # a folder trashed again replaces the older copy
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.rename(source, destination)  # one step: metadata.json travels with the rest
        return True

    def copy_many(self, pairs: Sequence[tuple[str, str]]) -> None:
        staged: list[tuple[str, Path]] = []
        try:
            with _os_errors("copying", pairs[0][0] if pairs else ""):
                for source, destination in pairs:  # every source linked before any is replaced
                    final = self._path(destination)
                    final.parent.mkdir(parents=True, exist_ok=True)
                    fd, tmp = files.temp_file(final.parent)
                    os.close(fd)
                    os.unlink(tmp)
                    staged.append((destination, Path(tmp)))
                    try:
                        os.link(self._path(source), tmp)
                    except FileNotFoundError:
                        raise FileNotFoundError(f"no object {source!r}") from None
                    except OSError as exc:  # no hard links here (another device, a FUSE
                        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK,
                                             errno.ENOTSUP):
                            raise
                        shutil.copyfile(self._path(source), tmp)
                for destination, tmp in staged:
                    os.replace(tmp, self._path(destination))
        finally:
            for _, tmp in staged:
                files.remove_quietly(tmp)

    def list_folders(self, parent: str, name_prefix: str = "") -> Iterator[str]:
        try:
            entries = os.scandir(self._folder(parent))
        except (FileNotFoundError, NotADirectoryError):
            return
        with entries:
            for entry in entries:
                if (entry.name.startswith(name_prefix) and not entry.name.startswith(".")
                        and entry.is_dir(follow_symlinks=False)):
                    yield entry.name

    def folder_files(self, parent: str,
                     after: str | None = None) -> Iterator[tuple[str, list[StoredFile]]]:
        # A directory lists in no stable order: ``after`` cannot be honoured (starts over).
        base = os.fspath(self._folder(parent))
        prefix = parent.strip("/")
        for name in self.list_folders(parent):
            found: list[StoredFile] = []
            with _os_errors("listing", f"{prefix}/{name}"):
                _files_under(os.path.join(base, name), f"{prefix}/{name}", found)
            yield name, found

    def delete_files(self, keys: Iterable[str]) -> None:
        self._unlink((key, self.root / check_file_key(key)) for key in keys)

    def trash(self) -> FilesystemStorage:
        return FilesystemStorage(self.root / TRASH_DIR)

    # -- folders, temporary files, health -----------------------------------------------------

    def ensure_folder(self, folder: str) -> None:
        path = self._folder(folder)
        with _os_errors("creating", folder):
            files.ensure_document_dirs(path)
        # The folder-level writes (metadata.json) leave their temporary files here, derived
        # images (put_bytes) in processed/{NAME}/: one scandir each.
        files.remove_leftovers(path)
        files.remove_leftovers(path / ORIGINAL_DIR)  # bodies of dead downloads of this host
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for entry in os.scandir(path / PROCESSED_DIR):
                if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
                    files.remove_leftovers(Path(entry.path))

    def local_temp_dir(self, folder: str) -> Path:
        directory = self._folder(folder) / ORIGINAL_DIR
        if not directory.is_dir():
            self.ensure_folder(folder)
        # What dead writers of this host left here is removed by the next ensure_folder (the
        # document-level step of every download message), not once per image: one scandir
        # per image cost more than the rename that stores it.
        return directory

    def sweep_leftovers(self, folder: str = "", *, older_than_s: float = STALE_AGE_S) -> int:
        """``.tmp-`` files older than ``older_than_s``, and those of dead processes of this host."""
        removed = 0
        for directory, _subdirs, names in os.walk(self._folder(folder)):
            for name in names:
                if not name.startswith(TEMP_PREFIX):
                    continue
                path = os.path.join(directory, name)
                with contextlib.suppress(FileNotFoundError):
                    mtime_s = os.lstat(path).st_mtime
                    if files.is_leftover(name, mtime_s, max_age_s=older_than_s):
                        os.unlink(path)
                        removed += 1
        return removed

    def check(self) -> str:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = files.temp_file(self.root, suffix=".health")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            return f"error: STORAGE_PATH {str(self.root)!r} is not writable: {exc.strerror or exc}"
        return "ok"

    def close(self) -> None:
        pass  # nothing is held open between calls
