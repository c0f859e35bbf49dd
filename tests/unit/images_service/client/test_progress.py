"""Following a job: plain lines per change when piped, bars on a terminal, patience with 503s."""

from __future__ import annotations

import io

import pytest

from images_service.client.http import ApiClientError
from images_service.client.progress import JobPoller, follow
from tests.unit.images_service.client.factories import make_job


class ScriptedApi:
    """Answers GET /jobs/{id} from a script of jobs (or errors), one per call."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.paths: list[str] = []

    def get(self, path, **params):
        self.paths.append(path)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_piped_output_is_one_plain_line_per_change():
    api = ScriptedApi(make_job("pending", done=0, total=0, downloaded=0, images_total=0),
                      make_job(done=1), make_job(done=1), make_job(done=2),
                      make_job("completed", done=3, downloaded=9))
    out = io.StringIO()
    job = follow(api, "j1", out, terminal=False, sleep=lambda s: None)
    assert job["status"] == "completed" and api.paths[0] == "/jobs/j1"
    assert out.getvalue().splitlines() == [
        "pending   documents 0/0  images 0/0 (downloaded 0, skipped 0, failed 0)",
        "running   documents 1/3  images 2/9 (downloaded 2, skipped 0, failed 0)",
        "running   documents 2/3  images 2/9 (downloaded 2, skipped 0, failed 0)",
        "completed documents 3/3  images 9/9 (downloaded 9, skipped 0, failed 0)",
    ]
    assert "\x1b" not in out.getvalue()


def test_terminal_output_draws_bars_for_documents_and_images():
    api = ScriptedApi(make_job("pending", done=0, total=0, downloaded=0, images_total=0),
                      make_job(done=1), make_job("completed", done=3, downloaded=9))
    out = io.StringIO()
    assert follow(api, "j1", out, terminal=True, sleep=lambda s: None)["status"] == "completed"
    text = out.getvalue()
    assert "\x1b" in text  # a terminal gets control codes (cursor moves, colours)
    assert "documents" in text and "images" in text and "3/3" in text and "9/9" in text


def test_transient_errors_are_asked_again_until_patience_runs_out():
    clock = iter(range(100)).__next__
    busy = ApiClientError("503 unavailable: MongoDB is unavailable", status=503, transient=True)
    api = ScriptedApi(busy, busy, make_job("completed"))
    assert JobPoller(api, "j1", sleep=lambda s: None, clock=clock).read()["status"] == "completed"

    api = ScriptedApi(busy)
    with pytest.raises(ApiClientError, match="503"):
        JobPoller(api, "j1", patience_s=3, sleep=lambda s: None, clock=clock).read()


def test_other_errors_end_the_wait_at_once():
    api = ScriptedApi(ApiClientError("404 job_not_found: job j1 not found", status=404),
                      make_job("completed"))
    with pytest.raises(ApiClientError, match="job_not_found"):
        JobPoller(api, "j1", sleep=lambda s: None).read()
    assert len(api.paths) == 1
