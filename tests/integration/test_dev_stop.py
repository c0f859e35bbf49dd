"""Ctrl-C of `images-service dev` (issue 23): a graceful stop of everything it started.

The stack runs with its own embedded servers (nx-27017, redis-server, and weed with
``--storage s3``); a download is held in flight by a slow loopback server when Ctrl-C reaches
the stack's process group, as it does from a terminal. Then: exit 0, no traceback, one line
per stopped process (embedded servers last), no process left, no nx-27017 ``-wal`` file, and
the image stored by the worker's drain (or its message still queued), never recorded failed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from pymongo import MongoClient

from images_service.dev.embedded import start_embedded_mongo
from tests.support.image_server import ImageServer
from tests.support.processes import (
    descendants,
    free_ports,
    kill_group,
    service_command,
    spawn,
    wait_http_json,
)

#: How long the image server holds the answer: well inside the worker's 20 s drain.
HOLD_S = 3.0
#: The embedded servers in the order the stack starts them (it stops them in reverse).
SERVERS = {"filesystem": ("nx-27017", "redis-server"), "s3": ("weed", "nx-27017", "redis-server")}


def _start(tmp_path: Path, storage: str) -> tuple[subprocess.Popen, int, str]:
    """The dev stack with every backing server embedded; (process, api port, API key)."""
    port, mongo_port, redis_port, worker_metrics, listener_metrics = free_ports(5)
    env = {"MONGODB_URI": f"mongodb://127.0.0.1:{mongo_port}/?directConnection=true",
           "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "S3_ENDPOINT_URL": "",
           "STORAGE_PATH": str(tmp_path / "images"), "WORKER_PROCESSES": "1",
           "WORKER_THREADS": "2", "API_WORKERS": "1", "API_KEY": "", "API_KEYS": "",
           "WORKER_METRICS_PORT": str(worker_metrics),
           "LISTENER_METRICS_PORT": str(listener_metrics)}
    proc = spawn(service_command("dev", "--storage", storage, "--port", str(port),
                                 "--data-dir", str(tmp_path / "data"), "--allow-private-networks"),
                 env, tmp_path, tmp_path / "dev.log")
    try:
        status, body = wait_http_json(f"http://127.0.0.1:{port}/api/v1/health", 90, proc=proc)
        assert status == 200, (tmp_path / "dev.log").read_text()
        key = re.search(r"API key\s+(\S+)\s+\(generated", (tmp_path / "dev.log").read_text())
        assert key, (tmp_path / "dev.log").read_text()
    except BaseException:
        kill_group(proc)
        raise
    return proc, port, key.group(1)


def _post(url: str, key: str) -> dict:
    request = urllib.request.Request(url, data=b"{}", method="POST", headers={
        "X-API-Key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _names(processes: list[psutil.Process]) -> dict[str, psutil.Process]:
    found = {}
    for process in processes:
        try:
            found.setdefault(process.name(), process)
        except psutil.NoSuchProcess:
            pass
    return found


def _alive(processes: list[psutil.Process]) -> list[str]:
    left = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return left


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("storage", ["filesystem", "s3"])
def test_ctrl_c_drains_the_download_and_stops_everything_cleanly(storage: str,
                                                                 tmp_path: Path) -> None:
    images = ImageServer("127.0.0.1").start()
    proc, port, key = _start(tmp_path, storage)
    try:
        everything = descendants(proc)
        servers = _names(everything)
        # Given embedded servers outside the stack's process group (the terminal's)
        for name in SERVERS[storage]:
            assert name in servers, sorted(servers)
            assert os.getpgid(servers[name].pid) != os.getpgid(proc.pid), name
        assert "(DB 0; embedded redis-server, data in" in (tmp_path / "dev.log").read_text()
        mongo_uri = re.search(r"MongoDB\s+(mongodb://\S+)", (tmp_path / "dev.log").read_text())
        with MongoClient(mongo_uri.group(1)) as client:
            client.optest.items.insert_one({"_id": "slow", "name": "Slow", "images": [
                images.url(f"/image/JPEG/s?delay={HOLD_S}")]})
        # And a download held in flight by the image server
        job_id = _post(f"http://127.0.0.1:{port}/api/v1/download/document/optest/items/slow",
                       key)["job_id"]
        _wait_for(lambda: images.hits("/image/JPEG/s") >= 1, 30, "the download to start")

        # When Ctrl-C reaches the stack's process group, as from its terminal
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(90)
        seconds = time.monotonic() - started
    finally:
        kill_group(proc)
        images.stop()
    output = (tmp_path / "dev.log").read_text()

    # Then the stack exits 0 without a traceback, and nothing it started is left
    assert code == 0, output[-3000:]
    assert "Traceback" not in output, output[-5000:]
    assert "Killing worker process" not in output, output[-3000:]
    assert _alive(everything) == []
    assert seconds < 60
    # One line per process stopped, the embedded servers after api, worker and listener
    stopped = re.findall(r"^  stopped (\S+)", output, re.MULTILINE)
    assert sorted(stopped[:3]) == ["api", "listener", "worker"], output[-3000:]
    assert stopped[3:] == list(reversed(SERVERS[storage])), output[-3000:]
    # nx-27017 stopped cleanly: no write-ahead log left next to its databases
    assert not list((tmp_path / "data" / "mongo").glob("*-wal"))
    # The image was stored by the drain, or its message waits in the queue; never failed
    server = start_embedded_mongo(tmp_path / "data" / "mongo")
    try:
        with MongoClient(f"mongodb://127.0.0.1:{server.port}/?directConnection=true") as client:
            job = client.images_service.jobs.find_one({"_id": job_id})
    finally:
        server.stop()
    assert job["progress"]["images_failed"] == 0 and job["errors"] == [], job
    assert (job["status"], job["progress"]["images_downloaded"]) == ("completed", 1) or \
        job["status"] in ("pending", "running"), job


def test_a_killed_stack_leaves_no_process_behind(tmp_path: Path) -> None:
    # Given a running stack (its children in process groups of their own)
    proc, _, _ = _start(tmp_path, "filesystem")
    try:
        everything = descendants(proc)
        assert len(everything) >= 5
        # When the stack itself is killed (SIGKILL: no chance to stop anything)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # Then every process it started goes too, within seconds
        deadline = time.monotonic() + 20
        while _alive(everything) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive(everything) == [], (tmp_path / "dev.log").read_text()[-3000:]
    finally:
        kill_group(proc)
        for process in everything:  # what the failing version leaves, not to leak it
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
