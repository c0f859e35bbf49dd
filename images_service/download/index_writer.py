"""The URL index's entries of freshly downloaded images, written in batches off the download
threads (contract §16).

Why: every downloaded image makes its URL's index entry (:meth:`UrlIndex.record`) before its
fetch claim goes, so a document waiting for the same URL finds the copy. Written by the
download thread itself, that was one MongoDB round trip per image, and the benchmark's
timeline (issue 24, docs/throughput.md) showed download threads spending more time in it than
in the downloads themselves (nx-27017 runs one command at a time per database): about 19 of a
process's 34 download threads, on average, waiting for their own index write.

Now the download thread hands the entry to this writer and goes on to its next image. One
writer thread per process writes whatever has gathered in one ``bulk_write``, then runs each
entry's ``then`` (the claim's release: so "indexed before the claim goes" still holds) and sets
its :class:`Pending`. The document is recorded in metadata.json only after its entries are
written (the actor waits on :meth:`Pending.wait`), so a job that ends has its URLs in the index,
as before, and a failed write fails the message like the direct write did (it is replayed;
the URL index is a hint, so an entry lost by a crash costs at most a second request).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from images_service.download.url_index import UrlIndex

log = logging.getLogger(__name__)

#: At most this many entries per bulk write.
MAX_BATCH = 256


class Pending:
    """One entry's write: :meth:`wait` returns once it is written, or raises its error."""

    __slots__ = ("_done", "error")

    def __init__(self) -> None:
        self._done = threading.Event()
        self.error: BaseException | None = None

    def settle(self, error: BaseException | None) -> None:
        self.error = error
        self._done.set()

    def wait(self, timeout_s: float | None = None) -> None:
        if not self._done.wait(timeout_s):
            raise TimeoutError("the URL index write did not finish in time")
        if self.error is not None:
            raise self.error


#: A queued entry: folder key, record, the URL's fetch claim (released after the write), waiter.
_Entry = tuple[str, Mapping[str, Any], Any, Pending]


class IndexWriter:
    """Batches :meth:`UrlIndex.record` of many folders into one round trip, on its own thread.

    ``release(claims)``: gives up the fetch claims of a written batch, as (claim, written)
    pairs, in one round trip (:meth:`~images_service.download.fetch_once.FetchOnce.
    release_many`).
    """

    def __init__(self, index: UrlIndex,
                 release: Callable[[list[tuple[Any, bool]]], None] | None = None, *,
                 max_batch: int = MAX_BATCH) -> None:
        self.index = index
        self.release = release
        self.max_batch = max_batch
        self._queue: list[_Entry] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        #: Bulk writes made, entries written and seconds spent writing (the benchmark's
        #: timeline reads them; plain counters, written by the writer thread only).
        self.writes = self.entries = 0
        self.write_s = 0.0

    def queued(self) -> int:
        """Entries waiting for the next write."""
        return len(self._queue)

    def add(self, folder: str, record: Mapping[str, Any], claim: Any = None) -> Pending:
        """Queue ``record`` (a downloaded image of ``folder``) for the index; ``claim`` (its
        URL's fetch claim, if any) is released once the entry is written (or failed)."""
        pending = Pending()
        with self._cond:
            if not self._closed:
                self._queue.append((folder, record, claim, pending))
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, daemon=True,
                                                    name="url-index-writer")
                    self._thread.start()
                self._cond.notify()
                return pending
        # Closed (the worker is stopping): written by the caller, as before the writer existed.
        self._write([(folder, record, claim, pending)])
        return pending

    def close(self) -> None:
        """Write what is queued, then stop; later entries are written by their callers."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    return
                batch = self._queue[:self.max_batch]
                del self._queue[:self.max_batch]
            self._write(batch)

    def _write(self, batch: list[_Entry]) -> None:
        error: BaseException | None = None
        started = time.monotonic()
        try:
            self.index.record_many([(folder, record) for folder, record, _, _ in batch])
        except Exception as exc:  # noqa: BLE001 -- handed to each waiter (MongoDB down)
            log.warning("could not write %d URL index entries: %s", len(batch), exc)
            error = exc
        self.writes += 1
        self.entries += len(batch)
        self.write_s += time.monotonic() - started
        claims = [(claim, error is None) for _, _, claim, _ in batch if claim is not None]
        release_error: BaseException | None = None
        if claims and self.release is not None:
            try:
                self.release(claims)
            except Exception as exc:  # noqa: BLE001 -- its waiters raise it (Redis down)
                log.warning("could not release %d fetch claims: %s", len(claims), exc)
                release_error = exc
        for _, _, claim, pending in batch:
            pending.settle(error or (release_error if claim is not None else None))
