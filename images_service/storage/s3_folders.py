"""Folder-level operations of the S3 backend: moves, copies, listing folders, the trash.

A bucket has no directories and cannot rename: a folder is a key prefix, a move is a copy of
every object then a delete, made resumable instead of atomic (``metadata.json`` last). Kept
apart from :mod:`images_service.storage.s3` (objects one at a time) as a mixin of
:class:`~images_service.storage.s3.S3Storage`: same client, prefix and error mapping.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from images_service.storage import s3_errors
from images_service.storage.backend import TEMP_PREFIX, Storage, StoredFile, folder_prefix
from images_service.storage.layout import METADATA_FILE

if TYPE_CHECKING:
    from images_service.storage.s3 import S3Storage

#: The trash's prefix under ``S3_PREFIX`` (contract §15).
TRASH_PREFIX = ".trash/"


class S3FolderOps:
    """Mixed into S3Storage (``self`` is one): see the module docstring."""

    bucket: str
    prefix: str
    _client: Any
    _owns_client: bool

    def move_folder(self, old_folder: str, new_folder: str) -> bool:
        """Copy every object to ``new_folder``, then delete the old ones; re-run to resume.

        A bucket cannot rename, so the move is made resumable instead of atomic. The rule:
        ``metadata.json`` is copied *last* and deleted *last*. So while the old folder still
        has its ``metadata.json`` the move is unfinished (re-run it: copies are overwritten
        with the same bytes, deletes of absent keys are ignored), and once the new folder has
        its ``metadata.json`` every image is there. The target may hold only such a partial
        copy: without metadata.json a subset of the old keys, with it the same metadata.json.
        """
        old_prefix, new_prefix = folder_prefix(old_folder), folder_prefix(new_folder)
        old_names = [key[len(old_prefix):] for key in self.list(old_folder)]
        if not old_names:
            return False
        new_names = {key[len(new_prefix):] for key in self.list(new_folder)}
        if new_names and not self._is_partial_copy(old_folder, new_folder, old_names, new_names):
            raise FileExistsError(f"{new_folder!r} already holds other objects")
        ordered = sorted(old_names, key=lambda name: (name == METADATA_FILE, name))
        for name in ordered:
            with self._errors("copy", old_prefix + name):
                self._client.copy_object(
                    Bucket=self.bucket,
                    Key=self._key(new_prefix + name),
                    CopySource={"Bucket": self.bucket, "Key": self._key(old_prefix + name)},
                )
        self.delete(old_prefix + name for name in ordered if name != METADATA_FILE)
        if METADATA_FILE in old_names:
            self.delete([old_prefix + METADATA_FILE])
        return True

    def _is_partial_copy(
        self, old_folder: str, new_folder: str, old_names: list[str], new_names: set[str]
    ) -> bool:
        if METADATA_FILE not in new_names:
            return new_names <= set(old_names)
        old_meta = self.read_bytes(f"{folder_prefix(old_folder)}{METADATA_FILE}")
        return old_meta is not None and old_meta == self.read_bytes(
            f"{folder_prefix(new_folder)}{METADATA_FILE}"
        )

    def move_folder_to(self, folder: str, target: Storage) -> bool:
        if not isinstance(target, S3FolderOps) or target.bucket != self.bucket:
            raise TypeError("an S3 folder moves only within its own bucket")
        names = [key[len(folder_prefix(folder)):] for key in self.list(folder)]
        if not names:
            return False
        stale = [key for key in target.list(folder)
                 if key[len(folder_prefix(folder)):] not in names]
        target.delete(stale)  # a folder trashed again replaces the older copy
        ordered = sorted(names, key=lambda name: (name == METADATA_FILE, name))
        for name in ordered:  # metadata.json copied last, deleted last: a rerun resumes
            key = folder_prefix(folder) + name
            with self._errors("copy", key):
                self._client.copy_object(Bucket=self.bucket, Key=target._key(key),
                                         CopySource={"Bucket": self.bucket, "Key": self._key(key)})
        self.delete(folder_prefix(folder) + name for name in ordered if name != METADATA_FILE)
        if METADATA_FILE in names:
            self.delete([folder_prefix(folder) + METADATA_FILE])
        return True

    def copy_many(self, pairs: Sequence[tuple[str, str]]) -> None:
        # Two server-side copies each: every source to a temporary key first, so that pairs
        # may overlap (a reorder); the temporary keys are removed before returning.
        staged: list[tuple[str, str]] = []
        try:
            for source, destination in pairs:
                tmp = f"{self._key(destination).rsplit('/', 1)[0]}/{TEMP_PREFIX}{uuid.uuid4().hex}"
                with self._errors("copy", source):
                    try:
                        self._client.copy_object(Bucket=self.bucket, Key=tmp, CopySource={
                            "Bucket": self.bucket, "Key": self._key(source)})
                    except ClientError as exc:
                        if s3_errors.is_not_found(exc):
                            raise FileNotFoundError(f"no object {source!r}") from None
                        raise
                staged.append((tmp, destination))
            for tmp, destination in staged:
                with self._errors("copy", destination):
                    self._client.copy_object(Bucket=self.bucket, Key=self._key(destination),
                                             CopySource={"Bucket": self.bucket, "Key": tmp})
        finally:
            if staged:
                with self._errors("delete", "temporary copies"):
                    self._client.delete_objects(Bucket=self.bucket, Delete={
                        "Objects": [{"Key": tmp} for tmp, _ in staged], "Quiet": True})

    def list_folders(self, parent: str, name_prefix: str = "") -> Iterator[str]:
        start = self.prefix + folder_prefix(parent)
        with self._errors("list", parent):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start + name_prefix, Delimiter="/")
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    name = common["Prefix"][len(start):].rstrip("/")
                    if not name.startswith("."):
                        yield name

    folders_sorted = True

    def folder_files(self, parent: str,
                     after: str | None = None) -> Iterator[tuple[str, list[StoredFile]]]:
        # One flat listing of the collection's prefix: ListObjectsV2 returns keys in a
        # stable sorted order, so the keys of one folder ("name/…") come together and each
        # folder is yielded once its last key has been seen; memory holds one folder and one
        # page (1000 keys), whatever the number of folders.
        start = self.prefix + folder_prefix(parent)
        current: str | None = None
        found: list[StoredFile] = []
        with self._errors("list", parent):
            # Past every key of folder ``after`` ("after/…"), in both orders seen: AWS sorts
            # whole keys bytewise ("a-x/…" before "a/…"), SeaweedFS segment by segment ("a/…"
            # before "a-x/…"); either way the folders listed next are those not listed yet.
            resume = {"StartAfter": f"{start}{after}/\U0010ffff"} if after else {}
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start, **resume)
            for page in pages:
                for item in page.get("Contents", []):
                    name, slash, rest = item["Key"][len(start):].partition("/")
                    if not slash or not rest or name.startswith("."):
                        continue  # a stray object beside the folders: not a document's
                    if name != current:
                        if current is not None and found:
                            yield current, found
                        current, found = name, []
                    found.append(StoredFile(item["Key"][len(self.prefix):],
                                            item["LastModified"].timestamp()))
        if current is not None and found:
            yield current, found

    def trash(self) -> S3Storage:
        sibling = copy.copy(self)  # the same client and pool, another prefix
        sibling.prefix = self.prefix + TRASH_PREFIX
        sibling._owns_client = False
        return sibling  # type: ignore[return-value]
