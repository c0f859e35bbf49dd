"""Finishing a document from the metadata its last merge wrote (no second read)."""

from __future__ import annotations

from images_service.download.engine import DocumentPlan, ImageTask
from workers.pipeline.finish import _records_of, document_status

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
