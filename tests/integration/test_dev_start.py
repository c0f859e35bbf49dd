"""`images-service dev` at start (issue 23): taken ports and the kept dev API key."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import REPO, free_ports, service_command


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
