"""Placeholder candidates (contract §18): what a document's row keeps, and how rows are
counted by document."""

from __future__ import annotations

from typing import Any

from images_service.content.candidates import EXAMPLES, document_hashes, rank_hashes

A, B, C = "8f373714acfcf4d0", "0f0f0f0f0f0f0f0f", "ffff0000ffff0000"


def record(index: int, phash: str | None, **fields: Any) -> dict[str, Any]:
    found = {"index": index, "url": f"https://x/{index}", "status": "downloaded",
             "file": f"original/img_{index:03d}.jpg", **fields}
    if phash is not None:
        found["phash"] = phash
    return found


def test_a_row_keeps_the_distinct_hashes_of_what_the_document_shows() -> None:
    records = [record(2, A), record(1, B.upper()), record(3, A, status="skipped"),
               record(4, C, placeholder="tiny"), record(5, C, placeholder="blank"),
               record(6, C, duplicate_of=2), record(7, None),
               {"index": 8, "url": "https://x/8", "status": "failed"},
               record(9, "nothex"), record(10, C, placeholder="known")]
    assert document_hashes(records) == [
        {"phash": B.lower(), "file": "original/img_001.jpg"},
        {"phash": A, "file": "original/img_002.jpg"},
        {"phash": C, "file": "original/img_010.jpg"}]  # known placeholders are counted


def row(folder: str, *hashes: str) -> dict[str, Any]:
    return {"folder": folder, "document_id": folder.rsplit("/", 1)[-1],
            "hashes": [{"phash": h, "file": "original/img_001.jpg"} for h in hashes]}


def test_hashes_are_ranked_by_documents_each_document_counted_once() -> None:
    rows = [row("d/c/1", A, B), row("d/c/2", A), row("d/c/3", A, B, C),
            row("d/c/1", C),  # an older row of document 1: not counted again
            row("d/c/4", C), {"folder": 5}, {"folder": "d/c/6", "hashes": "junk"},
            {"folder": "d/c/7", "hashes": [{"phash": "zz"}, "junk"]}]
    result = rank_hashes(rows, top=10, known_hashes=(int(C, 16) ^ 0b1111,))
    assert result["scanned"] == 6
    assert [(h["phash"], h["documents"], h["known"]) for h in result["hashes"]] == [
        (A, 3, False), (B, 2, False), (C, 2, True)]
    assert [e["document_id"] for e in result["hashes"][0]["examples"]] == ["1", "2", "3"]
    assert [h["phash"] for h in rank_hashes(rows, top=1)["hashes"]] == [A]


def test_a_hash_of_one_document_is_no_candidate_and_examples_are_bounded() -> None:
    rows = [row(f"d/c/{n}", A, f"{n:016x}") for n in range(3 * EXAMPLES)]
    (only,) = rank_hashes(rows, top=10)["hashes"]
    assert (only["phash"], only["documents"], len(only["examples"])) == (A, 3 * EXAMPLES,
                                                                         EXAMPLES)
