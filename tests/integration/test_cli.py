"""The command line against a live api (werkzeug on a loopback port) and a real worker.

The CLI runs as a subprocess with stdout piped, so these also check the plain output; the
server's settings in its environment are deliberately invalid (client commands ignore them).
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest
from werkzeug.serving import make_server

from api import create_app
from images_service.dev.embedded import free_port
from tests.support.pipeline import KEY, api_client, source_db
from tests.support.processes import REPO, run_on_terminal, service_command


class LiveApi:
    def __init__(self, settings) -> None:
        self.settings = settings
        self.server = make_server("127.0.0.1", free_port(), create_app(settings), threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def env(self, key: str = KEY, url: str | None = None) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO), "IMAGES_SERVICE_URL": url or self.url,
                "API_KEY": key, "MAX_RETRIES": "not-a-number"}

    def cli(self, *args: str, key: str = KEY, url: str | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(service_command(*args), env=self.env(key, url), cwd=cwd,
                              capture_output=True, text=True, timeout=90)

    def cli_on_terminal(self, *args: str) -> tuple[int, str]:
        """Run with stdout on a pseudo-terminal; returns (exit status, what it showed)."""
        return run_on_terminal(service_command(*args), self.env())


@pytest.fixture
def live_api(make_settings, tmp_path) -> Iterator[LiveApi]:
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
                              "RETRY_BACKOFF_MIN_MS": "50", "RETRY_BACKOFF_MAX_MS": "200",
                              "MAX_RETRIES": "1"})
    source_db(settings).hotels.drop()
    api = LiveApi(settings)
    yield api
    api.server.shutdown()


def _hotels(settings, image_server, *, broken: bool) -> None:
    docs = [{"_id": f"h{i}", "name": f"Hotel {i}",
             "images": [image_server.url(f"/image/JPEG/{i}"), image_server.url(f"/image/PNG/{i}")]}
            for i in range(4)]
    if broken:
        docs[0]["images"].append(image_server.url("/status/404"))
    source_db(settings).hotels.insert_many(docs)


def test_download_wait_ends_0_with_plain_lines(live_api, start_worker, image_server, tmp_path):
    # Given hotels whose images all exist, and a worker
    _hotels(live_api.settings, image_server, broken=False)
    start_worker(live_api.settings)

    # When a collection download is started and followed, piped
    result = live_api.cli("download", "collection", "serpy_db", "hotels", "--limit", "10",
                          "--wait", cwd=tmp_path)

    # Then it ends 0 on a completed job, with plain lines only
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    job_id = lines[0].split()[1]
    assert lines[0] == f"job {job_id} pending"
    assert lines[-2].startswith("completed documents 4/4  images 8/8")
    assert lines[-1] == f"job {job_id} completed: 4 documents, 8 images downloaded, 0 skipped, 0 failed"
    assert "\x1b" not in result.stdout + result.stderr
    assert api_client(live_api.settings).get(f"/api/v1/jobs/{job_id}").json["status"] == "completed"


def test_wait_on_a_terminal_draws_progress_bars(live_api, start_worker, image_server):
    _hotels(live_api.settings, image_server, broken=False)
    start_worker(live_api.settings)
    status, shown = live_api.cli_on_terminal("download", "document", "serpy_db", "hotels", "h1",
                                             "--wait")
    assert status == 0, shown
    assert "\x1b[" in shown and "━" in shown  # rich's bars, drawn with control codes
    assert "documents" in shown and "images" in shown and "2/2" in shown
    assert "completed: 1 documents, 2 images downloaded, 0 skipped, 0 failed" in shown


def test_failed_images_end_1_and_retry_makes_a_job_that_names_the_first(
        live_api, start_worker, image_server):
    _hotels(live_api.settings, image_server, broken=True)
    start_worker(live_api.settings)
    first = live_api.cli("download", "collection", "serpy_db", "hotels", "--wait")
    assert first.returncode == 1, first.stdout + first.stderr
    first_id = first.stdout.split()[1]
    assert "  http_404  h0  " + image_server.url("/status/404") in first.stdout
    assert first.stdout.splitlines()[-1].endswith("8 images downloaded, 0 skipped, 1 failed")

    # Retry of the finished job: only the failed image is fetched again, and fails again
    retried = live_api.cli("retry", first_id, "--wait")
    assert retried.returncode == 1, retried.stdout + retried.stderr
    header, *_, last = retried.stdout.splitlines()
    retry_id = header.split()[1]
    assert header == f"job {retry_id} pending (retry of {first_id})"
    assert last == (f"job {retry_id} completed with 1 failed: 4 documents, 0 images "
                    "downloaded, 8 skipped, 1 failed")
    job = api_client(live_api.settings).get(f"/api/v1/jobs/{retry_id}").json
    assert (job["retry_of"], job["type"], job["force"]) == (first_id, "collection", False)

    # `jobs` lists both, tab-separated when piped; `job` shows the retry's origin
    listed = live_api.cli("jobs")
    assert [row.split("\t")[:3] for row in listed.stdout.splitlines()] == [
        [retry_id, "collection", "completed"], [first_id, "collection", "completed"]]
    shown = live_api.cli("job", retry_id)
    assert f"retry of:     {first_id}" in shown.stdout and "http_404" in shown.stdout
    # One vocabulary: the same words and the same exit status with or without --wait
    assert "status:       completed with 1 failed" in shown.stdout
    assert shown.returncode == retried.returncode == 1


def test_cancel_and_api_errors(live_api):
    # Given a pending job (no worker)
    source_db(live_api.settings).hotels.insert_one({"_id": "h", "name": "H", "images": []})
    started = live_api.cli("download", "document", "serpy_db", "hotels", "h")
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.split()[1]

    active = live_api.cli("retry", job_id)
    assert (active.returncode, active.stderr.strip()) == (
        2, f"images-service: 409 job_active: job {job_id} is still pending")
    cancelled = live_api.cli("cancel", job_id)
    assert cancelled.returncode == 0 and cancelled.stdout.startswith(f"job {job_id} cancelled:")
    again = live_api.cli("cancel", job_id)
    assert again.returncode == 2 and "409 job_finished" in again.stderr
    # a cancelled job makes `job --wait` end 1 at once
    assert live_api.cli("job", job_id, "--wait").returncode == 1

    missing = live_api.cli("job", "nope")
    assert (missing.returncode, missing.stderr.strip()) == (
        2, "images-service: 404 job_not_found: job nope not found")


def test_wrong_key_ends_2_saying_401(live_api):
    result = live_api.cli("jobs", key="wrong-key-0000000")
    assert result.returncode == 2
    assert result.stderr.strip() == ("images-service: 401 unauthorized: missing or invalid "
                                     "X-API-Key header (check API_KEY)")


def test_unreachable_api_ends_2_saying_connection_refused(live_api):
    url = f"http://127.0.0.1:{free_port()}"
    result = live_api.cli("download", "collection", "serpy_db", "hotels", "--wait", url=url)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (f"images-service: connection refused: {url} "
                                     "(is the api running? set IMAGES_SERVICE_URL)")


@pytest.mark.parametrize("args,message", [
    (("download", "collection", "db", "c", "--filter", "{nope"), "--filter is not valid JSON"),
    (("download", "collection", "db", "c", "--limit", "x"), "invalid int value"),
    (("jobs", "--status", "done"), "invalid choice"),
])
def test_usage_errors_end_2(live_api, args, message):
    result = live_api.cli(*args)
    assert result.returncode == 2 and message in result.stderr
