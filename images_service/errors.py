"""One error hierarchy carrying the contract's stable error codes (CONTRACT.md §6, §7).

Download failures (:class:`DownloadError`) say whether they are retryable and may carry a
``Retry-After`` delay; API failures (:class:`ApiError`) carry an HTTP status. Each family is
mapped once: to retry decisions in the actors, to JSON error bodies in the api.
"""

from __future__ import annotations

#: Download error codes that are retried (contract §10); ``http_<status>`` is decided by status.
RETRYABLE_CODES = frozenset({"timeout", "connection_error"})
#: Refusals of contract §17, never retried: robots.txt disallows the URL (no request is made),
#: or the response's X-Robots-Tag opts out (``DISALLOWED_HEADER_DIRECTIVES``).
POLITENESS_CODES = frozenset({"robots_disallowed", "opted_out"})
#: HTTP statuses retried with backoff (contract §8).
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class ServiceError(Exception):
    """Base of every error that crosses a boundary; ``code`` is the contract's."""

    code = "internal_error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class DownloadError(ServiceError):
    """One image could not be downloaded, validated or stored."""

    def __init__(
        self,
        code: str,
        message: str = "",
        *,
        http_status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message or code, code=code)
        self.http_status = http_status
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        if self.code.startswith("http_") and self.http_status is not None:
            return self.http_status in RETRYABLE_STATUSES
        return self.code in RETRYABLE_CODES


class FolderConflict(DownloadError):
    """The document's folder belongs to another document (its metadata.json names it).

    Two documents whose folder names coincide (``_id`` ``"hotel-ritz"`` without a name and
    ``_id`` ``"hotel"`` named "Ritz") never share a folder: the later one's images fail with
    ``folder_conflict``, which is not retried (contract §10).
    """

    def __init__(self, message: str) -> None:
        super().__init__("folder_conflict", message)


class StaleMessage(ServiceError):
    """A message's work is no longer wanted: its job ended, or a newer plan wrote the folder.

    Contract §14: such a message changes no stored file and no record; it is dropped and
    counted (``images_stale_messages_total``). Never recorded as an image's error.
    """

    code = "stale_message"


class UnsafePathError(ServiceError):
    """A database, collection or document id is not safe as a path segment."""

    code = "invalid_request"


class ApiError(ServiceError):
    """An error answered by the REST API as ``{"error": {"code", "message"}}``."""

    status = 500

    def __init__(self, message: str = "", *, code: str | None = None, status: int | None = None,
                 details: dict | None = None):
        super().__init__(message, code=code)
        if status is not None:
            self.status = status
        #: Extra fields of the error object beside code and message (e.g. ``job_id``).
        self.details = dict(details or {})


class InvalidRequest(ApiError):
    """The request is malformed."""

    code, status = "invalid_request", 400


class InvalidFilter(ApiError):
    """The filter uses an operator that is not allowed."""

    code, status = "invalid_filter", 400


class Unauthorized(ApiError):
    """A valid X-API-Key header is required."""

    code, status = "unauthorized", 401


class NotFound(ApiError):
    """The resource does not exist."""

    code, status = "not_found", 404


class Conflict(ApiError):
    """The resource is in a state that does not allow this."""

    code, status = "conflict", 409


class Unavailable(ApiError):
    """A backing service (MongoDB or Redis) is unavailable; retry later."""

    code, status = "unavailable", 503


class StorageUnavailable(DownloadError):
    """The image store (disk or bucket) failed or could not be reached; retried.

    Contract §11: a storage outage during a download is retried like a connection error, so
    this is a :class:`DownloadError` with code ``connection_error``. The message names the
    path or bucket and never carries credentials.
    """

    def __init__(self, message: str) -> None:
        super().__init__("connection_error", message)
