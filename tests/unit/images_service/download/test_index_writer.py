"""The URL index writer: entries written in batches off the download threads, each entry's
``then`` (the claim's release) only after its write, and a failed write reported to each
waiter (the message fails and is replayed, as when the thread wrote the entry itself)."""

from __future__ import annotations

import threading

import pytest
from pymongo.errors import AutoReconnect

from images_service.download.index_writer import IndexWriter


class _Index:
    """Records each bulk write (a list of (folder, record) pairs); can block or fail."""

    def __init__(self) -> None:
        self.writes: list[list[tuple[str, dict]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.error: Exception | None = None

    def record_many(self, items) -> None:
        self.entered.set()
        assert self.gate.wait(10)
        if self.error is not None:
            raise self.error
        self.writes.append(list(items))


def _record(n: int) -> dict:
    return {"url": f"http://h/{n}", "file": f"original/img_{n:03d}.png", "status": "downloaded"}


def test_entries_queued_during_a_write_go_together_in_the_next_one() -> None:
    index = _Index()
    writer = IndexWriter(index)  # type: ignore[arg-type]
    index.gate.clear()
    first = writer.add("db/c/d0", _record(0))
    assert index.entered.wait(5)  # the writer is inside the first write
    rest = [writer.add(f"db/c/d{n}", _record(n)) for n in range(1, 6)]
    index.gate.set()
    for pending in [first, *rest]:
        pending.wait(5)
    writer.close()
    assert [len(w) for w in index.writes] == [1, 5]
    assert index.writes[1][0] == ("db/c/d1", _record(1))


def test_claims_are_released_together_after_their_write_and_before_the_waiter_returns() -> None:
    index = _Index()
    released: list[tuple[list, int]] = []
    writer = IndexWriter(index, release=lambda claims: released.append(  # type: ignore[arg-type]
        (claims, len(index.writes))))
    index.gate.clear()
    first = writer.add("db/c/d0", _record(0), claim="c0")
    assert index.entered.wait(5)
    rest = [writer.add("db/c/d1", _record(1), claim="c1"), writer.add("db/c/d2", _record(2))]
    index.gate.set()
    for pending in [first, *rest]:
        pending.wait(5)
    writer.close()
    # each claim released with "stored" once its entry was written, one call per write
    assert released == [([("c0", True)], 1), ([("c1", True)], 2)]


def test_a_failed_write_releases_without_stored_and_reaches_every_waiter() -> None:
    index = _Index()
    index.error = AutoReconnect("mongo down")
    released: list = []
    writer = IndexWriter(index, release=released.extend)  # type: ignore[arg-type]
    pending = writer.add("db/c/d0", _record(0), claim="c0")
    with pytest.raises(AutoReconnect):
        pending.wait(5)
    writer.close()
    assert released == [("c0", False)]  # the claim goes without "stored": others request it


def test_a_failed_release_reaches_the_waiters_of_its_claims_only() -> None:
    index = _Index()

    def release(claims) -> None:
        raise ConnectionError("redis down")

    writer = IndexWriter(index, release=release)  # type: ignore[arg-type]
    index.gate.clear()
    blocker = writer.add("db/c/d9", _record(9))
    assert index.entered.wait(5)
    claimed, unclaimed = writer.add("db/c/d0", _record(0), claim="c0"), writer.add(
        "db/c/d1", _record(1))
    index.gate.set()
    blocker.wait(5)
    unclaimed.wait(5)
    with pytest.raises(ConnectionError):
        claimed.wait(5)
    writer.close()


def test_after_close_the_caller_writes_its_entry_itself() -> None:
    index = _Index()
    writer = IndexWriter(index)  # type: ignore[arg-type]
    writer.close()
    pending = writer.add("db/c/d0", _record(0))
    pending.wait(0)  # already written, by this thread
    assert index.writes == [[("db/c/d0", _record(0))]]
