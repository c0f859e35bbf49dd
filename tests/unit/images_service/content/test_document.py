"""A document's merged records marked with placeholders and near-duplicates (contract §18);
plain dicts, as metadata.json stores them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from images_service.content.document import (
    ContentRules,
    mark_document,
    newly_marked,
    record_placeholder,
    summary_counts,
    with_placeholder,
)
from images_service.validation import validate_image
from tests.support.scenes import scene, settings, watermark, write

A = "8f373714acfcf4d0"
A3 = f"{int(A, 16) ^ 0b111:016x}"  # 3 bits from A
A6 = f"{int(A, 16) ^ 0b111111:016x}"  # 6 bits from A
B = f"{~int(A, 16) & (2**64 - 1):016x}"  # 64 bits from A
RULES = ContentRules()


def image(index: int, phash: str | None = None, status: str = "downloaded",
          **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"index": index, "url": f"https://x/{index}.jpg", "status": status,
                              "width": 800, "height": 600}
    if status == "failed":
        record = {"index": index, "url": record["url"], "status": "failed",
                  "error": {"code": "http_404", "message": "Not Found"}}
    if phash is not None:
        record["phash"] = phash
    return {**record, **fields}


def by_index(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {r["index"]: r for r in records}


def test_a_near_duplicate_points_at_the_earliest_earlier_image() -> None:
    marked = by_index(mark_document(
        [image(3, A3), image(1, A), image(2, B), image(4, A6)], RULES))
    assert marked[3]["duplicate_of"] == 1
    assert "duplicate_of" not in marked[1] and "duplicate_of" not in marked[2]
    # 4 is 6 bits from 1 but 3 from 3, itself a duplicate: an earlier image all the same.
    assert marked[4]["duplicate_of"] == 3
    assert "duplicate_of" not in by_index(mark_document([image(1, A), image(4, A6)], RULES))[4]
    assert by_index(mark_document([image(1, A), image(4, A6)],
                                  ContentRules(duplicate_distance_bits=6)))[4]["duplicate_of"] == 1


def test_records_come_back_in_index_order_as_copies() -> None:
    records = [image(2, A), image(1, A)]
    marked = mark_document(records, RULES)
    assert [r["index"] for r in marked] == [1, 2]
    assert "duplicate_of" not in records[0]  # the input is left alone


def test_placeholders_are_never_compared() -> None:
    # 1 is known, 2 is tiny with A's hash: neither is a duplicate nor an original.
    rules = ContentRules(known_hashes=(int(A, 16),))
    marked = by_index(mark_document(
        [image(1, A3), image(2, A, width=1, height=1), image(3, A), image(4, B),
         image(5, B, placeholder="blank")], rules))
    assert (marked[1]["placeholder"], marked[2]["placeholder"]) == ("known", "tiny")
    assert marked[3]["placeholder"] == "known"
    assert marked[5]["placeholder"] == "blank"
    assert not any("duplicate_of" in r for r in marked.values())
    assert summary_counts(marked.values()) == {"placeholders": 4, "duplicates": 0}


def test_settings_dependent_reasons_are_decided_again_blank_is_kept() -> None:
    tiny_before = image(1, A, width=10, height=10, placeholder="tiny")
    assert record_placeholder(tiny_before, ContentRules(min_side_px=8)) is None
    known_before = image(2, A, placeholder="known")
    assert record_placeholder(known_before, ContentRules()) is None  # hash list emptied
    blank = image(3, B, placeholder="blank")
    assert record_placeholder(blank, ContentRules(min_side_px=0)) == "blank"
    assert record_placeholder(image(4, A), ContentRules(known_hashes=(int(A3, 16),))) == "known"


def test_stale_marks_are_removed_and_failed_or_unhashed_images_ignored() -> None:
    marked = by_index(mark_document([
        image(1, A),
        image(2, A3, status="failed", duplicate_of=1, placeholder="tiny"),
        image(3, None),                           # fast mode without PERCEPTUAL_HASH
        image(4, "not a hash"),                   # a record edited by hand
        image(5, B, duplicate_of=1),              # no longer near anything
        image(6, A3, status="skipped"),
    ], RULES))
    assert "duplicate_of" not in marked[2] and "placeholder" not in marked[2]
    assert "duplicate_of" not in marked[3] and "duplicate_of" not in marked[4]
    assert "duplicate_of" not in marked[5]
    assert marked[6]["duplicate_of"] == 1
    assert summary_counts(marked.values()) == {"placeholders": 0, "duplicates": 1}


def test_rules_from_settings() -> None:
    rules = ContentRules.from_settings(settings(
        MIN_IMAGE_SIDE="20", PLACEHOLDER_HASHES=A, DUPLICATE_DISTANCE="6"))
    assert rules == ContentRules(20, (int(A, 16),), 6)
    assert ContentRules.from_settings(settings()) == ContentRules()


def test_no_marks_without_placeholders_or_duplicates() -> None:
    marked = mark_document([image(1, A), image(2, B)], RULES)
    assert all("placeholder" not in r and "duplicate_of" not in r for r in marked)
    assert summary_counts(marked) == {"placeholders": 0, "duplicates": 0}


# --- real images: what a near-duplicate survives, and what is never one ---------------------

def hashed(path: Path) -> str:
    phash = validate_image(path, settings()).phash
    assert phash is not None
    return phash


def test_near_duplicates_across_resize_reencode_and_watermark(tmp_path: Path) -> None:
    records = []
    for seed in range(6):
        photo = scene(100 + seed, (800, 600))
        copies = [
            write(tmp_path, f"{seed}-orig", photo, "JPEG", quality=92),
            write(tmp_path, f"{seed}-small", photo.resize((400, 300)), "JPEG", quality=85),
            write(tmp_path, f"{seed}-q70", photo, "JPEG", quality=70),
            write(tmp_path, f"{seed}-webp", photo, "WEBP", quality=80),
            write(tmp_path, f"{seed}-png", photo.resize((560, 420)), "PNG"),
            write(tmp_path, f"{seed}-mark", watermark(photo), "JPEG", quality=85),
        ]
        for path in copies:
            records.append(image(len(records) + 1, hashed(path)))
    marked = mark_document(records, RULES)
    for position, record in enumerate(marked):
        original = position - position % 6 + 1  # the first copy of each photo
        if record["index"] == original:
            assert "duplicate_of" not in record, record
        else:
            assert record.get("duplicate_of") == original, record
    assert summary_counts(marked) == {"placeholders": 0, "duplicates": 30}


def test_different_images_are_never_flagged(tmp_path: Path) -> None:
    records = [image(seed + 1, hashed(write(tmp_path, f"{seed}", scene(200 + seed), "JPEG")))
               for seed in range(40)]
    marked = mark_document(records, RULES)
    assert summary_counts(marked) == {"placeholders": 0, "duplicates": 0}


def test_with_placeholder_sets_changes_and_removes_the_reason() -> None:
    rules = ContentRules(known_hashes=(int(A, 16),))
    # A skipped image whose hash is now in PLACEHOLDER_HASHES becomes known ...
    assert with_placeholder(image(1, A3, status="skipped"), rules)["placeholder"] == "known"
    # ... one no longer tiny under a lower MIN_IMAGE_SIDE is no placeholder any more ...
    tiny = image(2, B, width=10, height=10, placeholder="tiny")
    assert "placeholder" not in with_placeholder(tiny, ContentRules(min_side_px=8))
    assert with_placeholder(tiny, RULES)["placeholder"] == "tiny"
    # ... and blank stays (the record cannot tell otherwise); the input is left alone.
    blank = image(3, B, placeholder="blank")
    assert with_placeholder(blank, RULES) == blank and with_placeholder(blank, RULES) is not blank


def test_newly_marked_counts_each_image_once_by_its_url() -> None:
    rules = ContentRules(known_hashes=(int(A, 16),))
    b3 = f"{int(B, 16) ^ 0b111:016x}"
    first = mark_document([image(1, A), image(2, B, width=1, height=1), image(3, B),
                           image(4, "0" * 16, placeholder="blank"), image(5, b3)], rules)
    assert [r.get("placeholder") for r in first] == ["known", "tiny", None, "blank", None]
    assert first[4]["duplicate_of"] == 3
    assert newly_marked([], first) == ({"known": 1, "tiny": 1, "blank": 1}, 1)
    # The same records merged again (a re-run, a replay): nothing new.
    assert newly_marked(first, mark_document(first, rules)) == ({}, 0)
    # Moved to other indexes (same URLs, §15): no placeholder is new; but b3 now comes
    # before B, so B's image is a duplicate for the first time (and b3's no longer is).
    moved = mark_document([{**r, "index": 6 - r["index"]} for r in first], rules)
    assert moved[2]["duplicate_of"] == 1 and "duplicate_of" not in moved[0]
    assert newly_marked(first, moved) == ({}, 1)
    # A new image is, and so is a changed reason (under its new one).
    assert newly_marked(first, mark_document([*first, image(6, A3)], rules)) == (
        {"known": 1}, 0)
    assert newly_marked([image(1, A)], [image(1, A, placeholder="blank")]) == ({"blank": 1}, 0)
    assert newly_marked([image(1, A, placeholder="known")],
                        [image(1, A, placeholder="blank")]) == ({"blank": 1}, 0)
