"""A reconcile job's result as the command line prints it (contract §15)."""

from __future__ import annotations

from images_service.client import format as fmt
from tests.unit.images_service.client.factories import make_job


def _reconcile(dry_run: bool, examples: list[str]) -> dict:
    return make_job("completed", type="reconcile", dry_run=dry_run, result={
        "trashed": 1, "downloaded": 2, "removed_files": 3, "examples": examples})


def test_result_lines_say_what_was_done_then_the_examples():
    lines = fmt.result_lines(_reconcile(False, ["db/c/a-x", "db/c/b/original/img_009.jpg"]))
    assert lines == ["reconcile: trashed 1 folders, downloaded 2 documents, removed 3 files",
                     "  db/c/a-x", "  db/c/b/original/img_009.jpg"]
    assert fmt.details(_reconcile(False, []))[-1].startswith("reconcile: trashed 1")


def test_a_dry_run_says_what_it_would_have_done_with_paths_escaped():
    lines = fmt.result_lines(_reconcile(True, ["db/c/\x1b[31mred"]))
    assert lines[0] == ("reconcile (dry run): would have trashed 1 folders, would have "
                        "downloaded 2 documents, would have removed 3 files")
    assert lines[1] == "  db/c/\\x1b[31mred"


def test_other_jobs_have_no_result_lines():
    assert fmt.result_lines(make_job("completed")) == []
