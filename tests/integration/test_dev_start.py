"""`images-service dev` at start (issue 23): taken ports, and the dev API key kept and reused."""

from __future__ import annotations

import re
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import (
    REPO,
    free_ports,
    kill_group,
    service_command,
    spawn,
    terminate_and_wait,
    wait_http_json,
)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on (every interface, as a metrics endpoint would)."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def _run_dev(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    api, mongo, redis_port, worker_metrics, listener_metrics = free_ports(5)
    full_env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "MONGODB_URI": f"mongodb://127.0.0.1:{mongo}",
                "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "PORT": str(api),
                "WORKER_METRICS_PORT": str(worker_metrics),
                "LISTENER_METRICS_PORT": str(listener_metrics), **env}
    started = time.monotonic()
    result = subprocess.run(service_command("dev", "--data-dir", str(tmp_path / "data"), *args),
                            env=full_env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    return result, time.monotonic() - started


@pytest.mark.parametrize(("where", "fix"), [
    ("--port", "--port {n} or PORT={n}"),
    ("PORT", "--port {n} or PORT={n}"),
    ("WORKER_METRICS_PORT", "WORKER_METRICS_PORT={n}"),
    ("LISTENER_METRICS_PORT", "LISTENER_METRICS_PORT={n}"),
])
def test_a_taken_port_exits_2_naming_the_fix_before_the_banner(where: str, fix: str,
                                                               taken_port: int,
                                                               tmp_path: Path) -> None:
    # Given a port of the stack that another program listens on
    args, env = (("--port", str(taken_port)), {}) if where == "--port" else \
        ((), {where: str(taken_port)})
    # When the dev stack is started
    result, seconds = _run_dev(tmp_path, *args, **env)
    # Then it exits 2 at once, naming the port and the setting that moves it
    assert result.returncode == 2, result.stdout + result.stderr
    assert seconds < 10  # no server started, no bind retries
    assert f"port {taken_port} (" in result.stderr and "is already in use" in result.stderr
    prefix = fix.split("{n}")[0]
    assert prefix in result.stderr, result.stderr
    # And nothing else: no banner, no key, no traceback, no embedded server started
    assert "API key" not in result.stdout and "http://" not in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "data" / "mongo").exists()


def _start_dev(tmp_path: Path, log_name: str, mongo_uri: str,
               redis_url: str) -> tuple[subprocess.Popen, int]:
    """The dev stack on the test servers, once its api answers /health."""
    port, worker_metrics, listener_metrics = free_ports(3)
    env = {"MONGODB_URI": mongo_uri, "REDIS_URL": redis_url, "API_KEY": "", "API_KEYS": "",
           "STORAGE_PATH": str(tmp_path / "images"), "WORKER_PROCESSES": "1",
           "WORKER_THREADS": "2", "API_WORKERS": "1",
           "WORKER_METRICS_PORT": str(worker_metrics),
           "LISTENER_METRICS_PORT": str(listener_metrics)}
    proc = spawn(service_command("dev", "--port", str(port), "--data-dir", str(tmp_path / "data")),
                 env, tmp_path, tmp_path / log_name)
    try:
        wait_http_json(f"http://127.0.0.1:{port}/api/v1/health", 60, proc=proc)
    except BaseException:
        kill_group(proc)
        raise
    return proc, port


def _banner_key(log: Path) -> tuple[str, str]:
    found = re.search(r"API key\s+(\S+)\s+\((generated[^;]*);", log.read_text())
    assert found, log.read_text()
    return found.group(1), found.group(2)


def test_the_generated_key_is_kept_private_and_reused(mongo_uri: str, redis_url: str,
                                                     tmp_path: Path) -> None:
    key_file = tmp_path / "data" / "dev-api-key"
    # Given a first start without API_KEY / API_KEYS
    proc, port = _start_dev(tmp_path, "dev1.log", mongo_uri, redis_url)
    try:
        key, note = _banner_key(tmp_path / "dev1.log")
        # Then the key it prints is kept under the data directory, readable by its owner only
        assert note == "generated" and key_file.read_text() == key + "\n"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        status, _ = wait_http_json(f"http://127.0.0.1:{port}/api/v1/jobs",
                                   headers={"X-API-Key": key})
        assert status == 200
        assert terminate_and_wait(proc, 60)[0] == 0
    finally:
        kill_group(proc)
    # When the stack starts again on the same data directory
    proc, port = _start_dev(tmp_path, "dev2.log", mongo_uri, redis_url)
    try:
        # Then it uses the same key, and says where it comes from
        assert _banner_key(tmp_path / "dev2.log") == (key, "generated earlier, from "
                                                           f"{key_file}")
        status, _ = wait_http_json(f"http://127.0.0.1:{port}/api/v1/jobs",
                                   headers={"X-API-Key": key})
        assert status == 200
        assert terminate_and_wait(proc, 60)[0] == 0
    finally:
        kill_group(proc)
