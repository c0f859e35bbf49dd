"""The total deadline of one download attempt, enforced by a watchdog thread.

A server that trickles a byte now and then never trips the socket's read timeout, so each
:class:`~images_service.fetching.fetcher.Fetcher` has one :class:`Watchdog` thread that, when
an attempt's deadline passes, shuts its socket down: the blocked read returns at once and the
attempt fails with ``timeout``. :class:`Attempt` is the state the fetching thread and the
watchdog share.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time

from urllib3.connection import HTTPConnection


class Attempt:
    """Deadline state of one attempt, shared by the fetching thread and the watchdog."""

    __slots__ = ("deadline", "expired", "_conn", "_done", "_lock")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline  # time.monotonic() seconds
        self.expired = False
        self._conn: HTTPConnection | None = None
        self._done = False
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def attach(self, conn: HTTPConnection) -> None:
        """The connection now serving this attempt (called by the connection itself)."""
        with self._lock:
            self._conn = conn
            if self.expired:
                shutdown_socket(conn)

    def expire(self) -> None:
        """Called by the watchdog at the deadline: unblock whatever read is in progress."""
        with self._lock:
            if self._done:
                return
            self.expired = True
            if self._conn is not None:
                shutdown_socket(self._conn)

    def finish(self) -> None:
        with self._lock:
            self._done = True
            self._conn = None


def shutdown_socket(conn: HTTPConnection) -> None:
    sock = getattr(conn, "sock", None)
    if sock is None:
        return
    try:
        # socket.socket.shutdown, not SSLSocket.shutdown: the latter also drops the TLS
        # object under the feet of the reading thread.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class Watchdog:
    """One daemon thread that expires attempts at their deadlines (started on first use)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Attempt]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, attempt: Attempt) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("Fetcher is closed")
            heapq.heappush(self._heap, (attempt.deadline, next(self._seq), attempt))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="fetch-deadline-watchdog", daemon=True
                )
                self._thread.start()
            elif self._heap[0][2] is attempt:
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                due = []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
            for attempt in due:
                attempt.expire()  # a no-op for attempts that already finished
