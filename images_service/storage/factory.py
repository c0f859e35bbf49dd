"""``create_storage(settings)``: the configured :class:`~images_service.storage.backend.Storage`.

The one place that reads ``STORAGE_BACKEND`` and the ``S3_*`` settings (contract §11). boto3
is imported only when the s3 backend is chosen: it costs a few hundred milliseconds at start.
"""

from __future__ import annotations

from images_service.config.settings import Settings
from images_service.storage.backend import Storage
from images_service.storage.filesystem import FilesystemStorage


def create_storage(
    settings: Settings,
    *,
    max_pool_connections: int = 10,
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 30.0,
    max_attempts: int = 3,
) -> Storage:
    """The storage of ``settings``.

    The keyword arguments tune the S3 client only: ``max_pool_connections`` should cover the
    threads that use the storage at once (a worker's threads, plus the parts of a multipart
    upload in flight); the api's ``/health`` passes short timeouts and one attempt so that it
    answers within the contract's 5 s.
    """
    if settings.storage_backend == "s3":
        from images_service.storage.s3 import S3Storage

        return S3Storage(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region,
            max_pool_connections=max_pool_connections,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            max_attempts=max_attempts,
        )
    return FilesystemStorage(settings.storage_path)
