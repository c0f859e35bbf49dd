"""The reconcile step's small parts (workers/pipeline/reconcile.py, streams.py): read-ahead,
what a metadata.json names, how an owner is filed, the examples' bound."""

from __future__ import annotations

import threading

import pytest

from workers.pipeline.reconcile import MAX_EXAMPLES, Tally, _identity, _named_files
from workers.pipeline.streams import batches, read_ahead


def test_prefetch_gives_every_item_in_order_and_raises_the_producers_error():
    assert list(read_ahead(iter(range(10)))) == list(range(10))

    def failing():
        yield 1
        raise RuntimeError("storage gone")

    got = []
    with pytest.raises(RuntimeError, match="storage gone"):
        for item in read_ahead(failing()):
            got.append(item)
    assert got == [1]


def test_prefetch_reads_at_most_depth_ahead_and_stops_with_its_consumer():
    produced = []

    def items():
        for n in range(1000):
            produced.append(n)
            yield n

    reader = read_ahead(items(), depth=2)
    assert next(reader) == 0
    reader.close()  # the consumer stops (an ended job, a shutdown)
    assert len(produced) <= 4  # one consumed, two queued, one waiting to be put
    assert not [t for t in threading.enumerate() if t.name == "reconcile-prefetch"]


def test_named_files_are_the_metadata_and_each_records_file_and_variants():
    meta = {"images": [
        {"index": 1, "status": "downloaded", "file": "original/img_001.jpg",
         "processed": {"thumb": {"file": "processed/thumb/img_001.webp"},
                       "bad": {"error": {"code": "processing_failed"}}}},
        {"index": 2, "status": "failed", "file": "original/img_002.jpg"},
        "not a record"]}
    assert _named_files("d/c/f", meta) == {"d/c/f/metadata.json", "d/c/f/original/img_001.jpg",
                                          "d/c/f/processed/thumb/img_001.webp"}
    assert _named_files("d/c/f", None) == set()


def test_an_owner_is_filed_by_its_typed_key_or_else_by_its_id_text():
    assert _identity({"document_key": {"$numberInt": "5"}, "document_id": "5"}) == \
        _identity({"document_key": {"$numberLong": "5"}})  # one _id on MongoDB
    assert _identity({"document_key": "5"}) != _identity({"document_key": {"$numberInt": "5"}})
    assert _identity({"document_id": "5"}) == ("text", "5")


def test_examples_stop_at_the_bound_and_batches_cut_a_stream():
    tally = Tally([])
    tally.add("removed_files", [f"k{n}" for n in range(MAX_EXAMPLES + 20)])
    tally.add("trashed", ["late"])
    assert len(tally.examples) == MAX_EXAMPLES and tally.pending == {
        "removed_files": MAX_EXAMPLES + 20, "trashed": 1}
    assert list(batches(iter(range(5)), 2)) == [[0, 1], [2, 3], [4]]
