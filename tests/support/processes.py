"""Helpers to run the service's own commands as real subprocesses in tests."""

from __future__ import annotations

import ctypes
import json
import os
import pty
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
PR_SET_PDEATHSIG = 1


def service_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "images_service.cli", *args]


def run_on_terminal(argv: list[str], env: dict[str, str], *, interactive: bool = False,
                    answer: str | None = None, prompt: bytes = b"[y/N]") -> tuple[int, str]:
    """Run ``argv`` with its output on a pseudo-terminal (its input too when ``interactive``),
    typing ``answer`` once ``prompt`` is shown; returns (exit status, what it showed)."""
    leader, follower = pty.openpty()
    streams = ({"stdin": follower, "stdout": follower, "stderr": follower} if interactive
               else {"stdout": follower, "stderr": subprocess.STDOUT})
    proc = subprocess.Popen(argv, env=env, **streams)
    os.close(follower)
    shown, answered = b"", answer is None
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not chunk:
            break
        shown += chunk
        if not answered and prompt in shown:
            os.write(leader, f"{answer}\n".encode())
            answered = True
    os.close(leader)
    return proc.wait(timeout=90), shown.decode(errors="replace")


def _die_with_parent() -> None:
    # Linux: SIGKILL this child when the test process dies, so an aborted test run never
    # leaves servers or workers behind (a leftover worker would steal the next run's messages).
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    out = open(log, "wb")
    return subprocess.Popen(args, env=full_env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_die_with_parent)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free TCP ports: all bound at once, so the OS cannot hand one out
    twice (separate ``free_port()`` calls can return the same port)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_http_json(url: str, timeout_s: float = 30.0, proc: subprocess.Popen | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """Poll ``url`` until it answers (any status); returns (status, JSON body)."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before {url} answered")
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer in {timeout_s} s: {last}")


def descendants(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def terminate_and_wait(proc: subprocess.Popen, timeout_s: float = 30.0) -> tuple[int, float]:
    """SIGTERM ``proc``; returns (exit code, seconds it took)."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout_s)
    return code, time.monotonic() - started


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
