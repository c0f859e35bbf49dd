"""An image origin that speaks HTTP validators, on the loopback image server (contract §16).

The standard library's ``http.server`` sends neither ``ETag`` nor ``Last-Modified`` and never
answers ``304``; re-checks need a server that does. :class:`ValidatingOrigin` installs a route
(``/v/<key>``) on an :class:`~tests.support.image_server.ImageServer` whose images:

* carry ``ETag`` (the content's version, quoted) and ``Last-Modified`` (the time it was last
  changed) unless told not to;
* answer ``304`` with no body to a matching ``If-None-Match`` or a current
  ``If-Modified-Since``;
* can be changed (:meth:`change`: new bytes, new validators), made to fail with a status
  (:meth:`fail`: 404, 410, 500 …) or healed (:meth:`heal`).

It counts requests, conditional requests and the body bytes it sent, so a test can prove that
a 304 re-check transferred no body.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime

from tests.support.image_server import ImageServer, _RequestHandler, make_image

PREFIX = "/v/"


@dataclass
class _Image:
    fmt: str
    seed: int
    version: int = 1
    changed_at: float = field(default_factory=lambda: time.time() - 3600)
    status: int = 200
    validators: bool = True


class ValidatingOrigin:
    def __init__(self, server: ImageServer) -> None:
        self.server = server
        self._images: dict[str, _Image] = {}
        self._lock = threading.Lock()
        self.requests = 0
        self.conditional = 0
        self.not_modified = 0
        self.body_bytes = 0
        server.add_route(PREFIX, self._handle, prefix=True)

    def add(self, key: str, fmt: str = "JPEG", *, seed: int = 0,
            validators: bool = True) -> str:
        """Serve a new image at ``/v/<key>``; returns its URL."""
        with self._lock:
            self._images[key] = _Image(fmt, seed, validators=validators)
        return self.server.url(PREFIX + key)

    def change(self, key: str) -> None:
        """New bytes (and validators) for ``key``."""
        with self._lock:
            image = self._images[key]
            image.version += 1
            image.changed_at = time.time()

    def fail(self, key: str, status: int) -> None:
        with self._lock:
            self._images[key].status = status

    def heal(self, key: str) -> None:
        self.fail(key, 200)

    def body(self, key: str) -> bytes:
        image = self._images[key]
        return make_image(image.fmt, 64, 48, image.seed * 1000 + image.version)

    def _handle(self, req: _RequestHandler, query: dict[str, list[str]]) -> None:
        key = req.path.split("?", 1)[0][len(PREFIX):]
        with self._lock:
            image = self._images.get(key)
            self.requests += 1
            if req.headers.get("If-None-Match") or req.headers.get("If-Modified-Since"):
                self.conditional += 1
        if image is None:
            req.respond(404, b"no such image", {"Content-Type": "text/plain"})
            return
        if image.status != 200:
            req.respond(image.status, f"status {image.status}".encode(),
                        {"Content-Type": "text/plain"})
            return
        etag = f'"v{image.seed}-{image.version}"'
        modified = formatdate(image.changed_at, usegmt=True)
        headers = {"ETag": etag, "Last-Modified": modified} if image.validators else {}
        if image.validators and self._not_modified(req, etag, image.changed_at):
            with self._lock:
                self.not_modified += 1
            req.respond(304, b"", headers)
            return
        body = self.body(key)
        with self._lock:
            self.body_bytes += len(body)
        req.respond(200, body, {"Content-Type": "image/jpeg", **headers})

    @staticmethod
    def _not_modified(req: _RequestHandler, etag: str, changed_at: float) -> bool:
        given = req.headers.get("If-None-Match")
        if given is not None:  # RFC 9110: If-None-Match wins over If-Modified-Since
            return etag in [tag.strip() for tag in given.split(",")] or given.strip() == "*"
        since = req.headers.get("If-Modified-Since")
        if since:
            try:
                return int(changed_at) <= parsedate_to_datetime(since).timestamp()
            except (TypeError, ValueError):
                return False
        return False
