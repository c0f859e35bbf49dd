"""A real threaded HTTP server on loopback that serves generated images and faults.

Used by the engine tests and, later, the actor tests: no HTTP is mocked anywhere. The server
binds one loopback address (127.0.0.1 by default, any 127.x.y.z on Linux) on an ephemeral
port, speaks HTTP/1.1 with keep-alive (or https, given a server-side ``ssl.SSLContext``),
records every request (path, headers, Host, arrival time) and the
maximum number of requests in flight per host, and can be given per-path behaviours.

Built-in paths (query parameters in brackets):

=================================  ========================================================
``/image/<FORMAT>[/anything]``     a generated image, FORMAT in JPEG PNG WEBP GIF BMP TIFF
                                   AVIF ANIGIF ANIWEBP PJPEG RGBAPNG [w, h, seed, ct =
                                   Content-Type to send, delay = seconds before answering]
``/status/<code>``                 that status [retry_after = header value, retry_after_date
                                   = seconds from now as an HTTP date]
``/once/<code>/<key>``             <code> on the first request for the path, then an image
                                   [fmt, retry_after]
``/redirect/<n>/<rest>``           302 chains: n hops, then ``/<rest>`` [status]
``/redirect-to``                   302 to the URL in [url]
``/redirect-loop``                 302 to itself
``/lying-length/long``             Content-Length larger than the body, then close [fmt]
``/lying-length/short``            Content-Length [claim] smaller than the [size] bytes sent
``/no-length``                     image [fmt] or [size] junk bytes, no Content-Length,
                                   connection closed at the end
``/chunked``                       [size] bytes of junk (or image [fmt]), chunked encoding
``/big``                           [size] bytes of junk with a correct Content-Length
``/trickle``                       Content-Length [size] (default 10000), one byte every
                                   [interval] seconds (default 0.05)
``/stall``                         no answer for [seconds] (default 30; ends at stop())
``/html``                          an HTML page (text/html) [ct]
``/truncated.jpg``                 a JPEG cut in the middle
``/bomb.png``                      a small PNG declaring [w]x[h] (default 30000x30000)
``/empty``                         200 with an empty body
=================================  ========================================================
"""

from __future__ import annotations

import io
import json
import socket
import ssl
import struct
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image, features

#: format key -> (Pillow save format, save kwargs, Content-Type)
FORMATS: dict[str, tuple[str, dict, str]] = {
    "JPEG": ("JPEG", {"quality": 85}, "image/jpeg"),
    "PJPEG": ("JPEG", {"quality": 85, "progressive": True}, "image/jpeg"),
    "PNG": ("PNG", {}, "image/png"),
    "RGBAPNG": ("PNG", {}, "image/png"),
    "WEBP": ("WEBP", {"quality": 80}, "image/webp"),
    "ANIWEBP": ("WEBP", {"quality": 80}, "image/webp"),
    "GIF": ("GIF", {}, "image/gif"),
    "ANIGIF": ("GIF", {}, "image/gif"),
    "BMP": ("BMP", {}, "image/bmp"),
    "TIFF": ("TIFF", {}, "image/tiff"),
    "AVIF": ("AVIF", {"quality": 60}, "image/avif"),
}


def can_write(fmt: str) -> bool:
    """Whether this Pillow can produce ``fmt`` (AVIF needs libavif)."""
    return fmt != "AVIF" or bool(features.check("avif"))


@lru_cache(maxsize=256)
def make_image(fmt: str = "JPEG", width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    """A deterministic image of ``fmt`` (a key of FORMATS) as bytes."""
    save_format, options, _ = FORMATS[fmt]
    mode = "RGBA" if fmt == "RGBAPNG" else "RGB"
    image = Image.new(mode, (width, height))
    # A gradient that depends on the seed, so distinct seeds give distinct files.
    pixels = [
        ((x * 255 // max(1, width - 1) + seed * 37) % 256, (y * 255 // max(1, height - 1)) % 256,
         (seed * 91 + x + y) % 256) + ((200,) if mode == "RGBA" else ())
        for y in range(height)
        for x in range(width)
    ]
    image.putdata(pixels)
    out = io.BytesIO()
    if fmt in ("ANIGIF", "ANIWEBP"):
        frames = [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
        frames[0].save(out, save_format, save_all=True, append_images=frames[1:], duration=100,
                       loop=0, **options)
    else:
        image.save(out, save_format, **options)
    return out.getvalue()


def truncated_jpeg() -> bytes:
    data = make_image("JPEG", 256, 192, 7)
    return data[: len(data) // 2]


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` 1-bit pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


HTML_PAGE = b"<!doctype html><html><head><title>Not an image</title></head><body>hi</body></html>"


@dataclass
class RecordedRequest:
    method: str
    path: str  #: path with query, as sent
    host: str  #: Host header, lower-cased, without port
    headers: dict[str, str]
    client: tuple[str, int]
    at: float = 0.0  #: time.time() when the request's headers were read


@dataclass
class _State:
    requests: list[RecordedRequest] = field(default_factory=list)
    hits: Counter = field(default_factory=Counter)
    in_flight: Counter = field(default_factory=Counter)
    max_in_flight: Counter = field(default_factory=Counter)


Handler = Callable[["_RequestHandler", dict[str, list[str]]], None]


class ImageServer:
    """The server; ``start()`` binds ``host`` on an ephemeral port (or ``port``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.tls = tls  #: a server-side context: the server speaks https
        self._requested_port = port
        self.port = 0
        self._lock = threading.Lock()
        self._state = _State()
        self._routes: dict[str, Handler] = {}
        self._prefix_routes: dict[str, Handler] = {}
        self.delay_s = 0.0  #: extra delay before every answer (to measure concurrency)
        self.stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> ImageServer:
        server = self

        class Bound(_RequestHandler):
            image_server = server

        self._httpd = _Server((self.host, self._requested_port), Bound)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        if self.tls is not None:
            self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"image-server-{self.host}:{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- configuration ----------------------------------------------------------------------

    def url(self, path: str = "/", host: str | None = None) -> str:
        """An absolute URL of ``path`` on this server (``host`` overrides the address)."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    @property
    def base_url(self) -> str:
        return self.url("")

    def add_route(self, path: str, handler: Handler, *, prefix: bool = False) -> None:
        """Serve ``path`` (exact, or every path under it with ``prefix``) with ``handler``.

        ``handler(request_handler, query)`` writes the whole response; see ``respond``.
        """
        with self._lock:
            (self._prefix_routes if prefix else self._routes)[path] = handler

    def set_response(self, path: str, status: int = 200, body: bytes = b"",
                     headers: dict[str, str] | None = None, delay_s: float = 0.0) -> None:
        """Answer ``path`` with a fixed response."""

        def handler(req: _RequestHandler, query: dict[str, list[str]]) -> None:
            if delay_s:
                req.wait(delay_s)
            req.respond(status, body, headers or {})

        self.add_route(path, handler)

    def reset(self) -> None:
        """Forget requests, hits, concurrency and custom routes; clear the delay."""
        with self._lock:
            self._state = _State()
            self._routes.clear()
            self._prefix_routes.clear()
            self.delay_s = 0.0

    # -- observations -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._state.requests)

    def hits(self, path: str | None = None) -> int:
        """Requests for ``path`` (without query), or all requests."""
        with self._lock:
            if path is None:
                return sum(self._state.hits.values())
            return self._state.hits[path]

    def max_concurrency(self, host: str | None = None) -> int | dict[str, int]:
        """Most requests in flight at once for ``host`` (Host header), or all hosts."""
        with self._lock:
            if host is None:
                return dict(self._state.max_in_flight)
            return self._state.max_in_flight[host.lower()]

    # -- used by the handler ----------------------------------------------------------------

    def _enter(self, record: RecordedRequest, path: str) -> None:
        with self._lock:
            self._state.requests.append(record)
            self._state.hits[path] += 1
            self._state.in_flight[record.host] += 1
            self._state.max_in_flight[record.host] = max(
                self._state.max_in_flight[record.host], self._state.in_flight[record.host]
            )

    def _leave(self, record: RecordedRequest) -> None:
        with self._lock:
            self._state.in_flight[record.host] -= 1

    def _route(self, path: str) -> Handler | None:
        with self._lock:
            if path in self._routes:
                return self._routes[path]
            for prefix, handler in self._prefix_routes.items():
                if path.startswith(prefix):
                    return handler
        return None


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 drops SYNs when many clients connect at once, which turns
    # into 1 s retransmission stalls in concurrency tests.
    request_queue_size = 256
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that give up (timeouts, size caps) reset connections: that is expected.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    image_server: ImageServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without NODELAY, Nagle and the
        # client's delayed ACK add 40 ms to many responses.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- silence
        pass

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        server = self.image_server
        parts = urlsplit(self.path)
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        if self.headers.get("Host", "").startswith("["):
            host = self.headers["Host"].split("]")[0].strip("[").lower()
        record = RecordedRequest(self.command, self.path, host, dict(self.headers.items()),
                                 self.client_address[:2], time.time())
        server._enter(record, parts.path)
        self._record: RecordedRequest | None = record
        try:
            if server.delay_s:
                self.wait(server.delay_s)
            query = parse_qs(parts.query)
            handler = server._route(parts.path) or _builtin(parts.path)
            if handler is None:
                self.respond(404, b"not found", {"Content-Type": "text/plain"})
            else:
                handler(self, query)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.leave()

    def leave(self) -> None:
        """This request no longer counts as in flight (once). :meth:`respond` calls it just
        before the response's last byte: a client cannot have read the whole response, and
        so freed its slot for another request, before then; counted at the handler's exit
        instead, a descheduled server thread made two requests of the same slot overlap."""
        record, self._record = self._record, None
        if record is not None:
            self.image_server._leave(record)

    # -- helpers for handlers ---------------------------------------------------------------

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns True early when the server is stopping."""
        return self.image_server.stopping.wait(seconds)

    def respond(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                *, content_length: int | None = None) -> None:
        """Send a complete response (Content-Length = len(body) unless overridden)."""
        self.send_response(status)
        headers = dict(headers or {})
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body) if content_length is None
                                                   else content_length))
        if self.command == "HEAD" or not body:
            self.leave()  # the headers are the last bytes
            self.end_headers()
            return
        self.end_headers()
        view = memoryview(body)  # no copy of a large body (a memory test measures this)
        self.wfile.write(view[:-1])
        self.leave()
        self.wfile.write(view[-1:])


def _q(query: dict[str, list[str]], name: str, default: str) -> str:
    return query.get(name, [default])[0]


def _image_response(req: _RequestHandler, query: dict[str, list[str]], fmt: str) -> None:
    fmt = fmt.upper()
    if fmt not in FORMATS:
        req.respond(404, b"unknown format")
        return
    delay = float(_q(query, "delay", "0"))
    if delay:
        req.wait(delay)
    body = make_image(fmt, int(_q(query, "w", "64")), int(_q(query, "h", "48")),
                      int(_q(query, "seed", "0")))
    req.respond(200, body, {"Content-Type": _q(query, "ct", FORMATS[fmt][2])})


def _builtin(path: str) -> Handler | None:
    segments = [s for s in path.split("/") if s]
    if not segments:
        return None
    head = segments[0]
    if head == "image" and len(segments) >= 2:
        return lambda req, q: _image_response(req, q, segments[1])
    if head == "status" and len(segments) == 2 and segments[1].isdigit():
        return lambda req, q: _status(req, q, int(segments[1]))
    if head == "once" and len(segments) >= 3 and segments[1].isdigit():
        return lambda req, q: _once(req, q, int(segments[1]), path)
    if head == "redirect" and len(segments) >= 2 and segments[1].isdigit():
        return lambda req, q: _redirect_chain(req, q, int(segments[1]), segments[2:])
    simple: dict[str, Handler] = {
        "redirect-to": lambda req, q: req.respond(int(_q(q, "status", "302")), b"",
                                                  {"Location": _q(q, "url", "/")}),
        "redirect-loop": lambda req, q: req.respond(302, b"", {"Location": req.path}),
        "lying-length": lambda req, q: _lying_length(req, q, segments[1:]),
        "no-length": _no_length,
        "chunked": _chunked,
        "big": lambda req, q: req.respond(200, b"\0" * int(_q(q, "size", "100000")),
                                          {"Content-Type": "image/jpeg"}),
        "trickle": _trickle,
        "stall": _stall,
        "html": lambda req, q: req.respond(200, HTML_PAGE,
                                           {"Content-Type": _q(q, "ct", "text/html")}),
        "truncated.jpg": lambda req, q: req.respond(200, truncated_jpeg(),
                                                    {"Content-Type": "image/jpeg"}),
        "bomb.png": lambda req, q: req.respond(
            200, bomb_png(int(_q(q, "w", "30000")), int(_q(q, "h", "30000"))),
            {"Content-Type": "image/png"}),
        "empty": lambda req, q: req.respond(200, b"", {"Content-Type": "image/jpeg"}),
        "echo-headers": lambda req, q: req.respond(
            200, json.dumps(dict(req.headers.items())).encode(),
            {"Content-Type": "application/json"}),
    }
    return simple.get(head)


def _status(req: _RequestHandler, query: dict[str, list[str]], code: int) -> None:
    headers = {"Content-Type": "text/plain"}
    if "retry_after" in query:
        headers["Retry-After"] = _q(query, "retry_after", "")
    if "retry_after_date" in query:
        headers["Retry-After"] = formatdate(
            time.time() + float(_q(query, "retry_after_date", "0")), usegmt=True)
    req.respond(code, f"status {code}".encode(), headers)


def _once(req: _RequestHandler, query: dict[str, list[str]], code: int, path: str) -> None:
    if req.image_server.hits(path) <= 1:
        _status(req, query, code)
    else:
        _image_response(req, query, _q(query, "fmt", "JPEG"))


def _redirect_chain(req: _RequestHandler, query: dict[str, list[str]], hops: int,
                    rest: list[str]) -> None:
    target = (f"/redirect/{hops - 1}/" if hops > 1 else "/") + "/".join(rest)
    split = urlsplit(req.path)
    if split.query:
        target += "?" + split.query
    req.respond(int(_q(query, "status", "302")), b"", {"Location": target})


def _lying_length(req: _RequestHandler, query: dict[str, list[str]], rest: list[str]) -> None:
    kind = rest[0] if rest else "long"
    if kind == "long":
        body = make_image(_q(query, "fmt", "JPEG").upper(), 64, 48, 1)
        req.close_connection = True
        req.respond(200, body, {"Content-Type": "image/jpeg"}, content_length=len(body) * 2)
    else:  # short: claims ``claim`` bytes, sends ``size``
        size = int(_q(query, "size", "200000"))
        claim = int(_q(query, "claim", "1000"))
        req.close_connection = True
        req.respond(200, b"\xff" * size, {"Content-Type": "image/jpeg"}, content_length=claim)


def _no_length(req: _RequestHandler, query: dict[str, list[str]]) -> None:
    if "size" in query:
        body = b"\0" * int(_q(query, "size", "0"))
    else:
        body = make_image(_q(query, "fmt", "PNG").upper(), 64, 48, 2)
    req.close_connection = True
    req.send_response(200)
    req.send_header("Content-Type", "image/png")
    req.send_header("Connection", "close")
    req.end_headers()
    req.wfile.write(body)


def _chunked(req: _RequestHandler, query: dict[str, list[str]]) -> None:
    if "size" in query:
        body = b"\0" * int(_q(query, "size", "0"))
    else:
        body = make_image(_q(query, "fmt", "PNG").upper(), 64, 48, 3)
    req.send_response(200)
    req.send_header("Content-Type", "image/png")
    req.send_header("Transfer-Encoding", "chunked")
    req.end_headers()
    step = 16384
    try:
        for start in range(0, len(body), step):
            piece = body[start:start + step]
            req.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        req.wfile.write(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        req.close_connection = True


def _trickle(req: _RequestHandler, query: dict[str, list[str]]) -> None:
    size = int(_q(query, "size", "10000"))
    interval = float(_q(query, "interval", "0.05"))
    req.close_connection = True
    req.send_response(200)
    req.send_header("Content-Type", "image/jpeg")
    req.send_header("Content-Length", str(size))
    req.end_headers()
    req.wfile.flush()
    try:
        for _ in range(size):
            req.wfile.write(b"\xff")
            req.wfile.flush()
            if req.wait(interval):
                return
    except (BrokenPipeError, ConnectionResetError):
        pass


def _stall(req: _RequestHandler, query: dict[str, list[str]]) -> None:
    req.close_connection = True
    if not req.wait(float(_q(query, "seconds", "30"))):
        req.respond(200, make_image("JPEG"), {"Content-Type": "image/jpeg"})


# --- pytest fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def image_server_session() -> Iterator[ImageServer]:
    """One server on 127.0.0.1 for the whole session (use ``image_server`` in tests)."""
    server = ImageServer("127.0.0.1").start()
    yield server
    server.stop()


@pytest.fixture
def image_server(image_server_session: ImageServer) -> ImageServer:
    """The session's server, reset (no requests, no custom routes) for this test."""
    image_server_session.reset()
    return image_server_session


@pytest.fixture
def make_image_server() -> Iterator[Callable[..., ImageServer]]:
    """Start extra servers, e.g. ``make_image_server("127.0.0.2")``; stopped after the test."""
    servers: list[ImageServer] = []

    def make(host: str = "127.0.0.1", port: int = 0,
             tls: ssl.SSLContext | None = None) -> ImageServer:
        server = ImageServer(host, port, tls).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


__all__ = [
    "FORMATS",
    "HTML_PAGE",
    "ImageServer",
    "RecordedRequest",
    "bomb_png",
    "can_write",
    "image_server",
    "image_server_session",
    "make_image",
    "make_image_server",
    "truncated_jpeg",
]
