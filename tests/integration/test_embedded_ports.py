"""Embedded servers (weed, nx-27017, redis-server) are ready only on a port they hold themselves.

Two dev stacks (or two test processes) may both find SeaweedFS's preferred port 8333 free and
start a server on it: the second fails to bind while the first answers on that port. Before,
the second stack's readiness probe talked to the first one's server, called it ready, and then
ran with a dead server of its own (seen in CI as a zombie ``weed``).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from botocore.exceptions import ClientError

from images_service.dev.embedded import ManagedProcess, _wait_ready, listens
from images_service.dev.embedded_s3 import EmbeddedS3


def _has_bucket(server: EmbeddedS3, name: str) -> bool:
    try:
        server.client().head_bucket(Bucket=name)
        return True
    except ClientError as exc:
        assert exc.response["Error"]["Code"] in ("404", "NoSuchBucket"), exc.response
        return False


def test_a_weed_that_lost_its_port_starts_again_on_fresh_ports(tmp_path: Path) -> None:
    # Given a second server that picked the same S3 port while it was still free
    first = EmbeddedS3(tmp_path / "first", keys=("a", "first-secret"))
    second = EmbeddedS3(tmp_path / "second", keys=("b", "second-secret"),
                        ports={"s3": first.ports["s3"]})
    taken = first.ports["s3"]
    assert second.ports["s3"] == taken
    try:
        # When the first one takes the port before the second one starts
        first.start(probe_bucket="first-bucket")
        second.start(probe_bucket="second-bucket")
        # Then the second runs on ports of its own, its S3 port held by its own process
        assert second.alive() and first.alive()
        assert second.ports["s3"] != taken
        assert listens(second.process.process.pid, second.ports["s3"])
        # And its probe never went to the first one's server
        assert _has_bucket(first, "first-bucket") and not _has_bucket(first, "second-bucket")
        assert _has_bucket(second, "second-bucket") and not _has_bucket(second, "first-bucket")
        # And the process that lost the race was reaped, not left a zombie
        # (other weeds may be children too: this process's session-wide test server)
        weeds = [p for p in psutil.Process().children() if p.name() == "weed"]
        assert {first.process.process.pid, second.process.process.pid} <= {p.pid for p in weeds}
        assert [p.pid for p in weeds if p.status() == psutil.STATUS_ZOMBIE] == []
    finally:
        second.close(grace_s=5.0)
        first.close(grace_s=5.0)


def test_a_server_is_not_ready_on_a_port_someone_else_answers(tmp_path: Path) -> None:
    # Given a port another process listens on, and our server alive without holding it
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        proc = ManagedProcess("ours", ours, "127.0.0.1", port, tmp_path / "ours.log")
        try:
            # When we wait for it to be ready: it never is (before: ready after 50 ms alive)
            with pytest.raises(RuntimeError, match="did not open"):
                _wait_ready(proc, timeout_s=1.0)
            assert ours.poll() is not None  # and it was stopped
        finally:
            proc.kill()


def test_a_restarted_weed_keeps_its_ports_or_says_it_lost_one(tmp_path: Path) -> None:
    # Given a server that ran, stopped, and whose S3 port another process took meanwhile
    server = EmbeddedS3(tmp_path / "s3", keys=("a", "secret"))
    try:
        server.start()
        ports = dict(server.ports)
        server.stop(grace_s=5.0)
        with socket.socket() as squatter:
            # (as servers do: its probe's connections may still be in TIME_WAIT)
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", ports["s3"]))
            squatter.listen()
            # When it is started again: it does not move (its clients know the endpoint)
            with pytest.raises(RuntimeError, match=f"lost its S3 port {ports['s3']}"):
                server.start(timeout_s=10.0)
        assert server.ports == ports and not server.alive()
    finally:
        server.close(grace_s=5.0)
