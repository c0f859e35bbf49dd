"""The command line's text: progress and final lines, exit statuses, the jobs table, details."""

from __future__ import annotations

import pytest

from images_service.client import format as fmt
from tests.unit.images_service.client.factories import make_job


def test_progress_line_counts_documents_and_finished_images():
    line = fmt.progress_line(make_job(done=2, total=5, downloaded=4, skipped=1, failed=1))
    assert line == ("running   documents 2/5  images 6/9 "
                    "(downloaded 4, skipped 1, failed 1)")


def test_final_line_names_the_job_its_status_and_why_it_failed():
    assert fmt.final_line(make_job("completed", done=3)) == (
        "job j1 completed: 3 documents, 2 images downloaded, 0 skipped, 0 failed")
    failed = make_job("failed", done=0, downloaded=0, message="collection serpy_db.hotels not found")
    assert fmt.final_line(failed).endswith("0 failed (collection serpy_db.hotels not found)")


@pytest.mark.parametrize("status,failed,expected", [
    ("completed", 0, 0), ("completed", 1, 1), ("failed", 0, 1), ("cancelled", 0, 1),
])
def test_exit_status(status, failed, expected):
    assert fmt.exit_status(make_job(status, failed=failed)) == expected


def test_error_lines_show_the_last_few_and_say_how_many_more():
    errors = [{"document_id": f"d{i}", "url": f"http://x/{i}.jpg", "code": "http_404",
               "message": "Not Found"} for i in range(7)]
    lines = fmt.error_lines(make_job(errors=errors))
    assert lines[0] == "  ... 2 more errors: images-service job j1"
    assert lines[1:] == [f"  http_404  d{i}  http://x/{i}.jpg" for i in range(2, 7)]
    assert fmt.error_lines(make_job()) == []


def test_plain_table_is_tab_separated_without_header_or_control_codes():
    jobs = [make_job(), make_job("completed", job_id="j2", type="document", document_id="42",
                                 failed=1)]
    rows = fmt.plain_table(jobs)
    assert rows[0] == "j1\tcollection\trunning\tserpy_db.hotels\t1/3\t2/9\t0\t2026-11-28T10:00:00Z"
    assert rows[1].split("\t")[:7] == ["j2", "document", "completed", "serpy_db.hotels/42",
                                      "1/3", "3/9", "1"]
    assert not any("\x1b" in row for row in rows)


def test_details_list_set_fields_only():
    lines = fmt.details(make_job("completed", retry_of="j0", filter={"city": "Madrid"}, limit=5))
    text = "\n".join(lines)
    assert "retry of:     j0" in text and 'filter:       {"city": "Madrid"}' in text
    assert "force" not in text and "message" not in text and "errors" not in text


def test_placeholder_rows_are_tab_separated_and_escape_what_documents_hold():
    result = {"database": "db", "collection": "hotels", "scanned": 40, "hashes": [
        {"phash": "8f373714acfcf4d0", "documents": 12, "known": True,
         "examples": [{"document_id": "a\x1b[31mb", "file": "original/img_001.jpg"},
                      {"document_id": "c\td", "file": "original/img_002.png"}]},
        {"phash": "0f0f0f0f0f0f0f0f", "documents": 2, "known": False, "examples": []}]}
    assert fmt.placeholder_rows(result) == [
        "8f373714acfcf4d0\t12\tknown\ta\\x1b[31mb:original/img_001.jpg c\\td:original/img_002.png",
        "0f0f0f0f0f0f0f0f\t2\t-\t"]
    assert fmt.placeholder_summary(result) == (
        "2 hashes shared by 2 documents or more, among the 40 newest documents of db.hotels "
        "finished by jobs; review the examples, then add the hashes to PLACEHOLDER_HASHES")
    assert fmt.placeholder_summary({**result, "hashes": []}).startswith("0 hashes shared")
