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


def test_a_refresh_jobs_bar_counts_its_re_checks():
    job = _job("running", documents_total=1, documents_done=1, images_total=4,
               images_skipped=1, images_failed=0)
    job["progress"].update(images_not_modified=2, images_changed=0, images_missing=0,
                           images_gone=1)
    assert progress_bars(job)["images"] == Bar(4, 4, "4 of 4 images (100 %): 0 downloaded, "
                                               "1 skipped, 2 not modified, 0 changed, "
                                               "0 missing, 1 gone, 0 failed")


def test_an_image_whose_source_is_gone_says_so():
    from api.console.pages import document_view
    from images_service.documents import StoredDocument

    stored = StoredDocument("db/c/d", b"", {"images": [
        {"index": 1, "url": "http://a/1", "status": "downloaded", "file": "original/img_001.jpg",
         "source": {"status": "gone", "since": "2026-12-01T00:00:00Z", "http_status": 410,
                    "misses": 1}},
        {"index": 2, "url": "http://a/2", "status": "downloaded", "file": "original/img_002.jpg"},
    ]})
    view = document_view("d", stored)
    assert [image.source for image in view.images] == ["gone", None]


def test_a_thumbnail_links_to_its_original():
    from api.console.pages import document_view
    from images_service.documents import StoredDocument

    stored = StoredDocument("db/c/d", b"", {"images": [
        {"index": 1, "url": "http://a/1", "status": "downloaded", "file": "original/img_001.jpg",
         "width": 800, "height": 600, "processed": {"thumb": {
             "file": "processed/thumb/img_001.webp", "width": 320, "height": 240}}},
        {"index": 2, "url": "http://a/2", "status": "failed"},
    ]})
    first, failed = document_view("d", stored).images
    assert (first.thumbnail, first.original) == ("processed/thumb/img_001.webp",
                                                 "original/img_001.jpg")
    assert failed.original is None


def test_a_job_completed_with_failed_images_says_so():
    from images_service.jobs.outcome import outcome

    assert outcome(_job("completed", images_failed=2)) == ("completed with 2 failed", "partial")
    assert outcome(_job("completed")) == ("completed", "completed")
    assert outcome(_job("failed", images_failed=2)) == ("failed", "failed")
