"""Guarded urllib3 connections: resolve once, let the address guard judge, connect to that.

Every TCP connection of the fetcher is made here (:func:`guarded_new_conn`, urllib3's
``_new_conn``): the host is resolved once, the :class:`~.address_guard.AddressGuard` judges
every address, and the socket connects to exactly those addresses — there is no second DNS
lookup between the check and the connect (SSRF, contract §8). The connection also ties itself
to the current attempt, so the deadline watchdog can shut it down.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from images_service.errors import DownloadError
from images_service.fetching.address_guard import AddressGuard
from images_service.fetching.deadline import Attempt


def guarded_new_conn(conn: Any) -> socket.socket:
    """Resolve, check every address, connect to a checked address (urllib3's _new_conn)."""
    guard: AddressGuard = conn.address_guard
    attempt: Attempt | None = getattr(conn.fetch_local, "attempt", None)
    try:
        entries = guard.resolve(conn._dns_host, conn.port)
    except socket.gaierror as e:
        raise NameResolutionError(conn.host, conn, e) from e
    except UnicodeError as e:
        raise DownloadError("invalid_url", f"host {conn.host!r} is not a valid name") from e
    timeout = conn.timeout if isinstance(conn.timeout, (int, float)) else None
    error: OSError | None = None
    for family, socktype, proto, sockaddr in entries:
        if attempt is not None:
            remaining = attempt.remaining()
            if remaining <= 0:
                raise ConnectTimeoutError(conn, f"Connection to {conn.host} hit the deadline")
            timeout = remaining if timeout is None else min(timeout, remaining)
        sock = socket.socket(family, socktype, proto)
        try:
            for option in conn.socket_options or ():
                sock.setsockopt(*option)
            sock.settimeout(timeout)
            if conn.source_address:
                sock.bind(conn.source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as e:
            sock.close()
            error = e
    if isinstance(error, TimeoutError):
        raise ConnectTimeoutError(
            conn, f"Connection to {conn.host} timed out. (connect timeout={timeout})"
        ) from error
    raise NewConnectionError(conn, f"Failed to establish a new connection: {error}") from error


class _GuardedConnectionMixin:
    """Resolve, check and connect in one place, and tie the socket to the attempt's deadline."""

    address_guard: AddressGuard
    fetch_local: threading.local

    def _new_conn(self) -> socket.socket:
        return guarded_new_conn(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        attempt = getattr(self.fetch_local, "attempt", None)
        if attempt is not None:
            attempt.attach(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
    pass


def pool_classes(guard: AddressGuard, local: threading.local) -> dict[str, type]:
    """Pool classes for a PoolManager whose connections go through ``guard``."""
    attrs = {"address_guard": guard, "fetch_local": local}
    http_conn = type("GuardedHTTPConnection", (_GuardedHTTPConnection,), attrs)
    https_conn = type("GuardedHTTPSConnection", (_GuardedHTTPSConnection,), attrs)
    return {
        "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
    }
