"""One download attempt of one image URL: guarded connections, redirects, caps, deadlines.

:class:`Fetcher` is built once from the settings and shared by the threads of a worker, with
one thread-safe urllib3 ``PoolManager`` (keep-alive pools per host) for all of them: a
connection freed by one thread serves the next request to that host from any thread. (Pools
per thread, as before, made most requests open a new connection: in the bulk benchmark 68
threads × 20 hosts meant ~1,300 connects for 2,000 images, against at most one per host slot
now — MAX_CONCURRENT_PER_DOMAIN per host.) ``requests`` is not
used on this path: none of its features apply (redirects, cookies, auth and proxies are all
handled or refused here) and its per-request bookkeeping cost about 0.35 ms of CPU per image
in the benchmark, 40% more than urllib3 itself. Every TCP connection is made by the guarded
connection classes (:mod:`.connections`):
it resolves the host once, lets the :class:`~.address_guard.AddressGuard` judge every
address, and connects to exactly those addresses — there is no second DNS lookup between the
check and the connect. For https the TLS handshake (SNI, certificate check) still uses the
host name, with certifi's CA bundle. Proxies are never used (a proxy would make the guard
judge the proxy rather than the image host); urllib3 does not read them from the environment.

Limits of one attempt:

* connect and read timeouts of ``DOWNLOAD_TIMEOUT`` seconds each (per socket operation);
* a **total deadline** of ``DEADLINE_FACTOR × DOWNLOAD_TIMEOUT`` (45 s with the default 15 s)
  over the whole attempt, redirects included. A server that trickles a byte now and then
  never trips the read timeout, so a watchdog thread (one per Fetcher) shuts the socket down
  when the deadline passes; the blocked read returns at once and the attempt fails with
  ``timeout``. At the default settings a 20 MiB image must arrive at ~0.5 MB/s or faster.
* redirects are followed here (at most :data:`MAX_REDIRECTS`), each hop through the guard;
* ``MAX_IMAGE_BYTES``: a larger Content-Length is refused before the body is read, and the
  running count is enforced when Content-Length is absent or wrong;
* no ``Content-Encoding`` is ever decoded, so the running count is of received bytes and a
  compression bomb cannot inflate in memory;
* an ``X-Robots-Tag`` opt-out (``DISALLOWED_HEADER_DIRECTIVES``, :mod:`.robots_tag`) refuses
  the image as ``opted_out`` from the response headers, before the body is read.

:meth:`Fetcher.fetch_text` is the same guarded request for a small text file (robots.txt).

The body streams into a hidden temporary file in the caller's directory, hashed on the way,
so memory stays at one chunk whatever the image size. Failures raise
:class:`~images_service.errors.DownloadError` with the contract's codes and, for HTTP
statuses, ``http_status`` and the parsed ``Retry-After``.

About 400 lines: one attempt (redirect loop, body streaming with the cap, error
classification) reads best as one unit; connections and the deadline live in their own modules.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3
from urllib3.response import BaseHTTPResponse

from images_service.config.settings import Settings
from images_service.errors import DownloadError
from images_service.fetching import robots_tag
from images_service.fetching.address_guard import AddressGuard
from images_service.fetching.connections import pool_classes
from images_service.fetching.deadline import Attempt, Watchdog
from images_service.fetching.retry_after import parse_retry_after
from images_service.storage.files import remove_quietly, temp_file

logger = logging.getLogger(__name__)

#: The total deadline of one attempt is this many times DOWNLOAD_TIMEOUT.
DEADLINE_FACTOR = 3.0
#: Redirects followed per attempt; one more is ``too_many_redirects``.
MAX_REDIRECTS = 5
#: Bytes read per chunk while streaming a body.
CHUNK_BYTES = 256 * 1024
#: Error and redirect bodies up to this size are read so the connection stays reusable.
DRAIN_MAX_BYTES = 64 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Host pools kept (least recently used ones are closed beyond this).
POOL_HOSTS = 256
ACCEPT = "image/avif,image/webp,image/apng,image/*;q=0.9,*/*;q=0.5"


@dataclass
class FetchedBody:
    """A body streamed to disk: a temporary file the caller moves into place or discards."""

    path: Path
    bytes: int
    sha256: str
    content_type: str | None
    http_status: int
    url: str  #: the URL asked for
    final_url: str  #: the URL that answered, after redirects
    redirects: int
    #: The response's validators, as received (contract §16): for conditional re-checks.
    etag: str | None = None
    last_modified: str | None = None

    def discard(self) -> None:
        remove_quietly(self.path)




@dataclass(frozen=True)
class Validators:
    """What a conditional request sends: the stored ETag and Last-Modified, as received."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class NotModified:
    """A conditional request answered ``304``: the stored image is current (contract §16)."""

    url: str
    final_url: str
    #: Validators the 304 carried (a server may send new ones), else None.
    etag: str | None = None
    last_modified: str | None = None
    http_status: int = 304


@dataclass
class TextResponse:
    """A small text resource's answer (:meth:`Fetcher.fetch_text`)."""

    status: int
    body: bytes  #: empty unless 2xx; cut at the caller's limit
    final_url: str
    retry_after_s: float | None


def check_url(url: str) -> str:
    """``url`` stripped and checked for what a fetch needs, else ``invalid_url``."""
    if not isinstance(url, str):
        raise DownloadError("invalid_url", "URL is not a string")
    text = url.strip()
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in text):
        raise DownloadError(
            "invalid_url", f"URL contains whitespace or control characters: {text[:200]!r}"
        )
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError for a bad port
    except ValueError as e:
        raise DownloadError("invalid_url", f"malformed URL {text[:200]!r}: {e}") from e
    if parts.scheme.lower() not in ("http", "https"):
        raise DownloadError("invalid_url", f"unsupported scheme in {text[:200]!r}")
    if not parts.hostname:
        raise DownloadError("invalid_url", f"URL has no host: {text[:200]!r}")
    if port == 0:
        raise DownloadError("invalid_url", f"URL has port 0: {text[:200]!r}")
    return text


class Fetcher:
    """Fetches image bodies under one set of settings; safe to share between threads.

    ``deadline_s`` overrides the total deadline of an attempt (default
    ``DEADLINE_FACTOR * settings.download_timeout_s``); ``ca_certs`` the CA bundle used to
    verify https servers (default certifi's, as requests does).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        deadline_s: float | None = None,
        ca_certs: str | None = None,
    ) -> None:
        self.settings = settings
        self.ca_certs = ca_certs or certifi.where()
        self.guard = AddressGuard.from_settings(settings)
        self.timeout_s = settings.download_timeout_s
        self.deadline_s = deadline_s if deadline_s is not None else DEADLINE_FACTOR * self.timeout_s
        self.max_bytes = settings.max_image_bytes
        self._timeout = urllib3.Timeout(connect=self.timeout_s, read=self.timeout_s)
        # X-Robots-Tag directives that refuse an image, and our product token (§17).
        self.refused_directives = settings.disallowed_header_directives
        self.robots_token = settings.robots_token
        self._headers = {
            "User-Agent": settings.user_agent,
            "Accept": ACCEPT,
            # Compressed transfer of compressed images wastes CPU on both ends.
            "Accept-Encoding": "identity",
        }
        self._local = threading.local()  # the current thread's attempt
        self._watchdog = Watchdog()
        # Idle connections kept per host: as many as may be in use at once (the per-host cap;
        # more requests than that to one host at once are not made, and block=False would
        # only open and drop extra ones).
        self._pool = urllib3.PoolManager(
            num_pools=POOL_HOSTS,
            maxsize=max(1, settings.max_concurrent_per_domain),
            block=False,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=self.ca_certs,
        )
        self._pool.pool_classes_by_scheme = pool_classes(self.guard, self._local)

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pools and stop the watchdog."""
        self._watchdog.close()
        self._pool.clear()

    def fetch(self, url: str, dest_dir: Path, *,
              validators: Validators | None = None) -> FetchedBody | NotModified:
        """One attempt: stream ``url`` into a temporary file in ``dest_dir``.

        With ``validators`` the request is conditional (contract §16: ``If-None-Match`` with
        the stored ETag, ``If-Modified-Since`` with the stored Last-Modified) and a ``304``
        answer is :class:`NotModified`: no body is read.

        Raises DownloadError: ``invalid_url``, ``blocked_address``, ``timeout``,
        ``connection_error``, ``http_<status>``, ``too_many_redirects``, ``too_large``.
        """
        with self._watched() as attempt:
            return self._fetch(url, Path(dest_dir), attempt, validators)

    @contextmanager
    def _watched(self) -> Iterator[Attempt]:
        """One attempt under the watchdog's deadline; what escapes it is a DownloadError
        (``timeout`` when the deadline cut it, else the exception's classification)."""
        attempt = Attempt(time.monotonic() + self.deadline_s)
        self._local.attempt = attempt
        self._watchdog.watch(attempt)
        try:
            yield attempt
        except DownloadError as e:
            if attempt.expired and e.code in ("connection_error", "timeout"):
                raise self._deadline_error() from e
            raise
        except Exception as e:
            if attempt.expired:
                raise self._deadline_error() from e
            raise _classify_exception(e) from e
        finally:
            attempt.finish()
            self._local.attempt = None

    # -- internals ----------------------------------------------------------------------

    def _fetch(self, url: str, dest_dir: Path, attempt: Attempt,
               validators: Validators | None = None) -> FetchedBody | NotModified:
        headers = self._headers
        if validators is not None and (validators.etag or validators.last_modified):
            headers = dict(headers)
            if validators.etag:
                headers["If-None-Match"] = validators.etag
            if validators.last_modified:
                headers["If-Modified-Since"] = validators.last_modified
        response, current, redirects = self._open(url, attempt, headers)
        status = response.status
        if status == 304 and headers is not self._headers:
            _discard(response)  # a 304 has no body: nothing is read or stored (§16)
            return NotModified(url=url, final_url=current, etag=_header(response, "ETag"),
                               last_modified=_header(response, "Last-Modified"))
        if not 200 <= status < 300:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            _discard(response)
            raise DownloadError(
                f"http_{status}",
                f"HTTP {status} {response.reason or ''}".strip() + f" from {current}",
                http_status=status,
                retry_after_s=retry_after,
            )
        if self.refused_directives:
            # §17: an opt-out in the headers refuses the image before its body is read.
            refused = robots_tag.refusal(response.headers.getlist("X-Robots-Tag"),
                                         self.refused_directives, self.robots_token)
            if refused is not None:
                response.close()
                response.release_conn()
                raise DownloadError("opted_out",
                                    f"X-Robots-Tag {refused!r} from {current} refuses its use",
                                    http_status=status)
        return self._stream_body(response, url, current, redirects, dest_dir, attempt)

    def _open(self, url: str, attempt: Attempt,
              headers: dict[str, str] | None = None) -> tuple[BaseHTTPResponse, str, int]:
        """The first response of ``url`` that is not a redirect (each hop through the guard),
        its URL and the number of redirects followed; its body is not read yet."""
        pool = self._pool
        current = check_url(url)
        headers = headers or self._headers
        for redirects in range(MAX_REDIRECTS + 1):
            response = pool.urlopen(
                "GET",
                current,
                redirect=False,
                retries=False,
                preload_content=False,
                # Never inflate: a server may send Content-Encoding despite "identity", and a
                # few kB of gzip can expand far past MAX_IMAGE_BYTES. The bytes are stored as
                # received (a compressed body is then refused as not an image).
                decode_content=False,
                timeout=self._timeout,
                headers=headers,
            )
            if attempt.expired:
                # The watchdog cut the connection while headers trickled in: http.client
                # may have taken the cut for the end of the headers.
                response.close()
                raise self._deadline_error()
            location = response.headers.get("Location")
            if response.status in REDIRECT_STATUSES and location:
                _discard(response)
                try:
                    current = check_url(urljoin(current, location.strip()))
                except DownloadError as e:
                    raise DownloadError(
                        "invalid_url", f"redirect from {current} to an invalid URL: {e.message}"
                    ) from None
                continue
            return response, current, redirects
        raise DownloadError(
            "too_many_redirects", f"more than {MAX_REDIRECTS} redirects, last to {current}"
        )

    def fetch_text(self, url: str, max_bytes: int) -> TextResponse:
        """One guarded GET of a small text resource (robots.txt): its status, ``Retry-After``
        and at most ``max_bytes`` of its body (a 2xx body only; the rest is not read).
        Raises DownloadError like :meth:`fetch` for what prevents an answer."""
        with self._watched() as attempt:
            response, current, _redirects = self._open(url, attempt)
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            body = b""
            if 200 <= response.status < 300:
                body = response.read(max_bytes, decode_content=True) or b""
                if attempt.expired:
                    raise self._deadline_error()
            response.close()
            response.release_conn()
            return TextResponse(response.status, body, current, retry_after)

    def _stream_body(
        self,
        response: BaseHTTPResponse,
        url: str,
        final_url: str,
        redirects: int,
        dest_dir: Path,
        attempt: Attempt,
    ) -> FetchedBody:
        declared = (response.headers.get("Content-Length") or "").strip()
        if declared.isdigit() and int(declared) > self.max_bytes:
            response.close()
            raise DownloadError(
                "too_large",
                f"Content-Length {declared} exceeds MAX_IMAGE_BYTES {self.max_bytes}",
                http_status=response.status,
            )
        fd, path = temp_file(dest_dir)
        hasher = hashlib.sha256()
        size = 0
        complete = False
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                while True:
                    chunk = response.read(CHUNK_BYTES)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise DownloadError(
                            "too_large",
                            f"body exceeds MAX_IMAGE_BYTES {self.max_bytes}"
                            + (f" (Content-Length said {declared})" if declared else ""),
                            http_status=response.status,
                        )
                    hasher.update(chunk)
                    out.write(chunk)
                    if attempt.remaining() <= 0:
                        raise self._deadline_error()
            if attempt.expired:  # the cut connection looked like the end of the body
                raise self._deadline_error()
            complete = True
        finally:
            if complete:
                response.release_conn()  # fully read: the connection goes back to the pool
            else:
                response.close()
                response.release_conn()
                remove_quietly(path)
        content_type = response.headers.get("Content-Type")
        if content_type:
            content_type = content_type.split(";", 1)[0].strip().lower() or None
        return FetchedBody(
            path=path,
            bytes=size,
            sha256=hasher.hexdigest(),
            content_type=content_type,
            http_status=response.status,
            url=url,
            final_url=final_url,
            redirects=redirects,
            etag=_header(response, "ETag"),
            last_modified=_header(response, "Last-Modified"),
        )

    def _deadline_error(self) -> DownloadError:
        return DownloadError(
            "timeout", f"attempt exceeded its total deadline of {self.deadline_s:g} s"
        )


def _header(response: BaseHTTPResponse, name: str) -> str | None:
    """A response header as received (stripped; None when absent, empty or absurdly long)."""
    value = (response.headers.get(name) or "").strip()
    return value if value and len(value) <= 1024 else None


def _discard(response: BaseHTTPResponse) -> None:
    """Finish with a response whose body is not wanted, keeping small ones' connections."""
    declared = (response.headers.get("Content-Length") or "").strip()
    if declared.isdigit() and int(declared) <= DRAIN_MAX_BYTES:
        try:
            response.read(DRAIN_MAX_BYTES + 1, decode_content=False)
            response.release_conn()
            return
        except Exception:  # noqa: BLE001 -- any failure just means "do not reuse"
            pass
    response.close()
    response.release_conn()


def _classify_exception(error: Exception) -> DownloadError:
    """Map a urllib3/OS exception to the contract's error code."""
    message = f"{type(error).__name__}: {error}"[:500]
    if isinstance(error, (urllib3.exceptions.LocationValueError, UnicodeError)):
        return DownloadError("invalid_url", message)
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        # Refused, unreachable, or the name does not resolve (a subclass of
        # ConnectTimeoutError in urllib3, so tested first).
        return DownloadError("connection_error", message)
    if isinstance(error, (urllib3.exceptions.TimeoutError, TimeoutError)):
        return DownloadError("timeout", message)
    if isinstance(error, (urllib3.exceptions.HTTPError, OSError)):
        return DownloadError("connection_error", message)
    if isinstance(error, ValueError):
        return DownloadError("invalid_url", message)
    return DownloadError("connection_error", message)
