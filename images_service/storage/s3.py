"""The image tree as objects of an S3-compatible bucket (``STORAGE_BACKEND=s3``, contract §11).

Keys become ``{S3_PREFIX}{key}``; the prefix is added here and never leaves this module. A
PUT is atomic on S3, so readers never see a partial object: files below
``multipart_threshold_bytes`` go up in one PUT, larger ones as a multipart upload that only
becomes visible when completed. Each image object carries ``Content-Type`` and its sha256 as
object metadata (``x-amz-meta-sha256``), so :meth:`S3Storage.stat` (one HEAD) tells whether a
stored image is still the recorded one without downloading it.

Nothing but the layout is left in the bucket: a failed multipart upload is aborted by
s3transfer; one that could not be aborted (the store went down mid-upload) is aborted by the
next successful upload of the same key, or by :meth:`S3Storage.sweep_leftovers`. A download's
body waits in a directory private to this process (:mod:`~images_service.storage.process_temp`)
and is deleted once uploaded.

Credentials come only from the standard AWS chain (environment, profile, instance or task
role); none is passed in, logged or put into an error message.

A little over 300 lines: one class implementing the object operations of the
:class:`~images_service.storage.backend.Storage` interface, which reads best next to its
filesystem twin; folder-level operations (moves, copies, folder listing, the trash) are the
mixin of :mod:`.s3_folders`, the mapping of S3 errors to messages :mod:`.s3_errors`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from images_service.errors import StorageUnavailable
from images_service.storage import process_temp, s3_errors
from images_service.storage.backend import (
    STALE_AGE_S,
    TEMP_PREFIX,
    ObjectStat,
    Storage,
    Versioned,
    check_file_key,
    check_key,
    folder_prefix,
)
from images_service.storage.s3_folders import S3FolderOps

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
#: S3's smallest part (all but the last); s3transfer raises smaller chunk sizes to it.
MIN_PART_BYTES = 5 * MIB
#: ``DeleteObjects`` takes at most this many keys per request.
DELETE_BATCH = 1000


class S3Storage(S3FolderOps, Storage):
    """The tree in ``bucket`` under ``prefix`` (``""`` or ending in ``/``)."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        max_pool_connections: int = 10,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        max_attempts: int = 3,  #: requests in all, the first one included
        multipart_threshold_bytes: int = 8 * MIB,
        temp_root: Path | None = None,
    ) -> None:
        if prefix and not prefix.endswith("/"):
            raise ValueError(f"S3 prefix {prefix!r} must be empty or end with '/'")
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url or None
        self.multipart_threshold_bytes = multipart_threshold_bytes
        self.temp_root = Path(temp_root or tempfile.gettempdir())
        _no_debug_logging_of_signed_requests()
        config = Config(
            region_name=region,
            signature_version="s3v4",
            # Path style works with every S3-compatible server and any bucket name.
            s3={"addressing_style": "path"},
            # In a Config dict botocore reads "max_attempts" as retries after the first try
            # (it asked 2 requests of max_attempts=1); "total_max_attempts" counts them all.
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            max_pool_connections=max_pool_connections,
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            # No CRC32 trailer on every PUT (botocore >= 1.36 adds one by default, streaming
            # the body through its aws-chunked wrapper in Python): the body is already
            # checked by its sha256 before upload and by TCP on the way; operations that
            # require a checksum (DeleteObjects) still get one.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # A Session of its own: credentials resolved from the standard chain, nothing else.
        self._owns_client = True
        self._client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, config=config
        )
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold_bytes,
            multipart_chunksize=max(multipart_threshold_bytes, MIN_PART_BYTES),
            # Parts in flight per upload; the pool must hold them besides the other threads.
            max_concurrency=4,
            preferred_transfer_client="classic",
        )
        process_temp.remove_dirs_of_dead_processes(self.temp_root)

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}@{self.endpoint_url or 'aws'}"

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    @contextlib.contextmanager
    def _errors(self, action: str, key: str = "") -> Iterator[None]:
        """Map botocore failures to StorageUnavailable (not-found is handled by callers)."""
        try:
            yield
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise StorageUnavailable(
                s3_errors.describe(exc, self.bucket, self.endpoint_url, action, key)
            ) from exc

    # -- writing ------------------------------------------------------------------------------

    def put_file(self, key: str, local_path: Path, *, content_type: str, sha256: str) -> None:
        full = self._key(key)
        extra = {"ContentType": content_type, "Metadata": {"sha256": sha256}}
        size = os.path.getsize(local_path)
        started = datetime.now(UTC)
        with self._errors("upload", key):
            if size < self.multipart_threshold_bytes:
                with open(local_path, "rb") as body:
                    self._client.put_object(Bucket=self.bucket, Key=full, Body=body, **extra)
            else:
                self._client.upload_file(
                    str(local_path), self.bucket, full, ExtraArgs=extra, Config=self._transfer
                )
        os.unlink(local_path)
        if size >= self.multipart_threshold_bytes:
            self._abort_uploads_of(full, initiated_before=started)

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/json") -> None:
        with self._errors("upload", key):
            self._client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
            )

    def put_bytes_if(
        self, key: str, data: bytes, *, version: str | None,
        content_type: str = "application/json",
    ) -> Versioned | None:
        # S3 conditional writes (AWS since 2024, SeaweedFS, MinIO): 412 when the object
        # changed (or, with If-None-Match: *, exists); 409 when a concurrent conditional
        # write won. A server that ignores the headers degrades to the plain put.
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        with self._errors("upload", key):
            try:
                response = self._client.put_object(Bucket=self.bucket, Key=self._key(key),
                                                   Body=data, ContentType=content_type,
                                                   **condition)
            except ClientError as exc:
                if s3_errors.error_code(exc)[1] in (409, 412):
                    return None
                raise
        # The ETag a later If-Match compares (that of a GET of this object).
        return Versioned(data, response.get("ETag"))

    def read_versioned(self, key: str) -> Versioned:
        with self._errors("download", key):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
                return Versioned(response["Body"].read(), response.get("ETag"))
            except ClientError as exc:
                if s3_errors.is_not_found(exc):
                    return Versioned(None, None)
                raise

    # -- reading ------------------------------------------------------------------------------

    def open(self, key: str) -> IO[bytes]:
        with self._errors("download", key):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if s3_errors.is_not_found(exc):
                    raise FileNotFoundError(f"no object {key!r}") from None
                raise
        raw = _MappedBody(response["Body"], self, key)
        return io.BufferedReader(raw, buffer_size=256 * 1024)

    def stat(self, key: str) -> ObjectStat | None:
        with self._errors("head", key):
            try:
                head = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if s3_errors.is_not_found(exc):
                    return None
                raise
        return ObjectStat(int(head["ContentLength"]), head.get("Metadata", {}).get("sha256"))

    def list(self, folder: str = "") -> list[str]:
        prefix = self.prefix + folder_prefix(folder)
        keys: list[str] = []
        with self._errors("list", folder):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                keys.extend(item["Key"][len(self.prefix):] for item in page.get("Contents", []))
        # The trash (``.trash/``) and temporary keys are never part of the tree.
        return sorted(key for key in keys
                      if not key.startswith(".") and f"/{TEMP_PREFIX}" not in key)

    # -- removing and moving ------------------------------------------------------------------

    def delete(self, keys: Iterable[str]) -> None:
        self._delete_full([self._key(key) for key in keys])

    def delete_files(self, keys: Iterable[str]) -> None:
        self._delete_full([self.prefix + check_file_key(key) for key in keys])

    def _delete_full(self, full: list[str]) -> None:
        for start in range(0, len(full), DELETE_BATCH):
            batch = [{"Key": key} for key in full[start:start + DELETE_BATCH]]
            with self._errors("delete"):
                response = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise StorageUnavailable(
                    f"s3 bucket {self.bucket!r}: delete: {len(errors)} keys not deleted, "
                    f"first {first.get('Key', '')[len(self.prefix):]!r}: {first.get('Code')}"
                )

    def delete_prefix(self, folder: str) -> int:
        if not folder.strip("/"):
            raise ValueError("delete_prefix needs a folder: refusing to delete the whole tree")
        keys = self.list(folder)
        self.delete(keys)
        return len(keys)

    # -- folders, temporary files, health -----------------------------------------------------

    def ensure_folder(self, folder: str) -> None:
        folder_prefix(folder)  # validated like everywhere else; a bucket has no empty folders

    def local_temp_dir(self, folder: str) -> Path:
        folder_prefix(folder)
        return process_temp.ensure_own_dir(self.temp_root)

    def sweep_leftovers(self, folder: str = "", *, older_than_s: float = STALE_AGE_S) -> int:
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        return self._abort_uploads(self.prefix + folder_prefix(folder), cutoff)

    def _abort_uploads_of(self, full_key: str, *, initiated_before: datetime) -> None:
        """Best effort: abort earlier uploads of exactly ``full_key`` that were never finished."""
        try:
            self._abort_uploads(full_key, initiated_before, exact=True)
        except StorageUnavailable as exc:
            logger.warning("could not abort stale multipart uploads: %s", exc)

    def _abort_uploads(
        self, prefix: str, initiated_before: datetime, *, exact: bool = False
    ) -> int:
        aborted = 0
        with self._errors("abort multipart uploads", prefix[len(self.prefix):]):
            pages = self._client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    other_key = exact and upload["Key"] != prefix
                    if other_key or upload["Initiated"] >= initiated_before:
                        continue
                    self._client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        return aborted

    def check(self) -> str:
        try:
            with self._errors("head bucket"):
                self._client.head_bucket(Bucket=self.bucket)
        except StorageUnavailable as exc:
            return f"error: {exc.message}"
        except Exception as exc:  # a health check reports, never raises
            return f"error: s3 bucket {self.bucket!r}: {type(exc).__name__}"
        return "ok"

    def close(self) -> None:
        if self._owns_client:  # the trash's storage shares this one's client
            self._client.close()
            process_temp.remove_own_dir(self.temp_root)


class _MappedBody(io.RawIOBase):
    """A GetObject body whose read errors (the store went away mid-stream) are mapped too."""

    def __init__(self, body: Any, storage: S3Storage, key: str) -> None:
        self._body = body
        self._storage = storage
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with self._storage._errors("download", self._key):
            data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def _no_debug_logging_of_signed_requests() -> None:
    """botocore logs whole signed requests at DEBUG: keep it at INFO even with LOG_LEVEL=DEBUG."""
    botocore_logger = logging.getLogger("botocore")
    if botocore_logger.getEffectiveLevel() < logging.INFO:
        botocore_logger.setLevel(logging.INFO)

