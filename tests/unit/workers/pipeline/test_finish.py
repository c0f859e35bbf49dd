"""Finishing a document from the metadata its last merge wrote (no second read)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from pymongo.errors import BulkWriteError

from images_service.config.settings import load_settings
from images_service.download.engine import DocumentPlan, ImageTask
from workers.pipeline.finish import Finished, Finisher, _records_of, document_status

PLAN = DocumentPlan("db", "hotels", "d1", "name", "x", "db/hotels/d1-x",
                    (ImageTask(1, "http://a/1"), ImageTask(2, "http://a/2")))


def _record(index: int, url: str, status: str = "downloaded") -> dict:
    return {"index": index, "url": url, "status": status}


def test_a_merge_holding_every_image_gives_their_records_in_plan_order() -> None:
    merged = {"images": [_record(2, "http://a/2", "failed"), _record(1, "http://a/1")]}
    records = _records_of(merged, PLAN)
    assert records == [_record(1, "http://a/1"), _record(2, "http://a/2", "failed")]
    counts = {s: sum(r["status"] == s for r in records) for s in ("downloaded", "skipped", "failed")}
    assert document_status(counts) == "partial"


def test_a_merge_missing_an_image_means_read_again() -> None:
    # Another message records image 2 (a retry): its record may land after this merge.
    assert _records_of({"images": [_record(1, "http://a/1")]}, PLAN) is None


def test_a_record_for_another_url_means_read_again() -> None:
    merged = {"images": [_record(1, "http://a/1"), _record(2, "http://old/2")]}
    assert _records_of(merged, PLAN) is None


# --- write-back refusals that only a real MongoDB makes (§14) ---------------------------------
# nx-27017 reproduces one per-document refusal (a unique index, tested in
# tests/integration/test_pipeline_integrity.py); MongoDB also refuses a document's update for a
# `$set` path under a scalar (PathNotViable, code 28), a collection validator (code 121) and
# the 16 MB limit (BSONObjectTooLarge, code 10334), each reported per document by an unordered
# bulk write as a BulkWriteError listing the refused operations by index. This fake collection
# answers as MongoDB documents it, so the branch real servers take is run here.

class _RefusingCollection:
    def __init__(self, refused: dict[int, tuple[int, str]], concern_error: bool = False) -> None:
        self.refused = refused
        self.concern_error = concern_error
        self.written: list = []

    def bulk_write(self, requests, ordered=True):
        assert ordered is False
        errors = []
        for index, request in enumerate(requests):
            if index in self.refused:
                code, message = self.refused[index]
                errors.append({"index": index, "code": code, "errmsg": message,
                               "op": request._doc})
            else:
                self.written.append(request._filter)
        details = {"writeErrors": errors, "writeConcernErrors": [], "nModified": len(self.written)}
        if self.concern_error:
            details["writeConcernErrors"] = [{"code": 64, "errmsg": "waiting for replication"}]
        if errors or self.concern_error:
            raise BulkWriteError(details)


def _finisher(collection) -> Finisher:
    settings = load_settings({"STORAGE_PATH": "/nonexistent"})
    ctx = SimpleNamespace(settings=settings, mongo={"db": {"hotels": collection}})
    return Finisher(ctx)  # type: ignore[arg-type]


def _finished(document_id: str) -> Finished:
    plan = DocumentPlan("db", "hotels", document_id, "name", "x", f"db/hotels/{document_id}",
                        (ImageTask(1, "http://a/1"),))
    return Finished(plan, {"source_id": json.dumps(document_id)}, [_record(1, "http://a/1")])


def test_each_refused_write_back_is_a_job_error_and_the_others_are_written() -> None:
    collection = _RefusingCollection({
        0: (28, "Cannot create field 'status' in element {images_download: 5}"),
        2: (121, "Document failed validation"),
        3: (10334, "BSONObj size: 16793600 (0x1004000) is invalid"),
    })
    docs = [_finished(f"d{n}") for n in range(5)]

    errors = list(_finisher(collection).write_back("job-1", docs).values())

    assert collection.written == [{"_id": "d1"}, {"_id": "d4"}]
    assert [(e["document_id"], e["code"]) for e in errors] == [
        ("d0", "writeback_failed"), ("d2", "writeback_failed"), ("d3", "writeback_failed")]
    assert "Cannot create field" in errors[0]["message"]


def test_a_write_concern_error_is_not_a_refusal_and_retries_the_message() -> None:
    collection = _RefusingCollection({}, concern_error=True)
    with pytest.raises(BulkWriteError):
        _finisher(collection).write_back("job-1", [_finished("d0")])
