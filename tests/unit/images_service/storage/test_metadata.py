"""metadata.json's model: the records marked by what they show and the summary's counts
(contract §6, §18)."""

from __future__ import annotations

from images_service.content.document import ContentRules
from images_service.storage.metadata import DocumentHeader, build_metadata

HEADER = DocumentHeader("serpy_db", "hotels", "42", "name", "Hotel")
A = "8f373714acfcf4d0"
A2 = f"{int(A, 16) ^ 0b11:016x}"


def record(index: int, **fields: object) -> dict:
    return {"index": index, "url": f"https://x/{index}.jpg", "status": "downloaded",
            "file": f"original/img_{index:03d}.jpg", "width": 800, "height": 600, **fields}


def test_with_rules_every_write_marks_the_whole_document() -> None:
    images = [record(2, phash=A2), record(1, phash=A, duplicate_of=7),
              record(3, width=1, height=1), {"index": 4, "url": "https://x/4", "status": "failed"}]
    meta = build_metadata(HEADER, images, job_id="j", total=4, rules=ContentRules())
    one, two, three, four = meta["images"]
    assert "duplicate_of" not in one and two["duplicate_of"] == 1  # decided again
    assert three["placeholder"] == "tiny" and "placeholder" not in four
    assert meta["summary"] == {"total": 4, "downloaded": 3, "failed": 1, "skipped": 0,
                               "present": 3, "gone": 0, "placeholders": 1,
                               "duplicates": 1}
    assert "duplicate_of" in images[1]  # the caller's records are left alone


def test_without_rules_records_are_kept_as_they_come_and_counted() -> None:
    images = [record(1, phash=A), record(2, phash=A), record(3, placeholder="blank"),
              record(4, width=1, height=1)]
    meta = build_metadata(HEADER, images, job_id="j", total=4)
    assert [r.get("placeholder") for r in meta["images"]] == [None, None, "blank", None]
    assert not any("duplicate_of" in r for r in meta["images"])
    assert (meta["summary"]["placeholders"], meta["summary"]["duplicates"]) == (1, 0)
