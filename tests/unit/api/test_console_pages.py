"""What the console's pages compute: progress bars and the thumbnail of an image."""

from __future__ import annotations

from api.console.pages import Bar, _thumbnail, progress_bars


def _job(status: str, **progress: int) -> dict:
    base = dict.fromkeys(("documents_total", "documents_done", "images_total",
                          "images_downloaded", "images_skipped", "images_failed"), 0)
    return {"status": status, "progress": {**base, **progress}}


def test_bars_count_every_final_image_and_cap_at_the_total():
    bars = progress_bars(_job("running", documents_total=4, documents_done=1, images_total=10,
                              images_downloaded=5, images_skipped=1, images_failed=1))
    assert bars["documents"] == Bar(1, 4, "1 of 4 documents (25 %)")
    assert bars["images"] == Bar(7, 10, "7 of 10 images (70 %): 5 downloaded, 1 skipped, 1 failed")
    assert progress_bars(_job("running", documents_total=2, documents_done=3))["documents"].value == 2


def test_an_empty_job_is_full_only_when_it_completed():
    assert progress_bars(_job("completed"))["documents"] == Bar(1, 1, "0 of 0 documents (100 %)")
    for status in ("pending", "running", "cancelled", "failed"):
        assert progress_bars(_job(status))["documents"] == Bar(0, 1, "0 of 0 documents"), status


def test_the_thumbnail_is_the_smallest_listed_file():
    record = {"status": "downloaded", "file": "original/img_001.jpg", "width": 1024, "height": 768,
              "processed": {
                  "card": {"file": "processed/card/img_001.jpg", "width": 640, "height": 360},
                  "thumb": {"file": "processed/thumb/img_001.webp", "width": 320, "height": 240},
                  "broken": {"error": {"code": "processing_failed", "message": "…"}}}}
    assert _thumbnail(record) == ("processed/thumb/img_001.webp", 320, 240)
    assert _thumbnail({**record, "processed": {}}) == ("original/img_001.jpg", 1024, 768)
    assert _thumbnail({"status": "failed", "error": {"code": "http_404"}}) is None
