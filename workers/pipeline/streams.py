"""Streams in bounded pieces: batches of an iterator, and a thread reading ahead of its user.

The reconcile step (workers/pipeline/reconcile.py) reads a collection and its tree in
batches; :func:`read_ahead` lets the next batch be read (the database's and the storage's
round trips, in a thread) while the current one is judged, holding at most ``depth`` batches
more in memory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from queue import Full, Queue
from typing import Any

_DONE = object()


def read_ahead(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """``items``, produced by a thread at most ``depth`` ahead: the producer's waits (MongoDB,
    the storage) overlap the consumer's work, and memory holds ``depth`` items more."""
    queue: Queue[tuple[Any, BaseException | None]] = Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                queue.put(value, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001 -- handed to the consumer, raised there
            put((_DONE, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # a generator: its cursor is closed here, in its thread
                close()

    thread = threading.Thread(target=produce, name="reconcile-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = queue.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
