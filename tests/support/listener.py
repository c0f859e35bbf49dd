"""Helpers of the listener tests: listener subprocesses, unique namespaces, waits on jobs.

Registered in tests/conftest.py; the ``test_listener_*`` modules import its helpers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from images_service.backends import mongo_client, redis_client
from images_service.config.settings import Settings
from images_service.dev.embedded import free_port
from images_service.jobs.store import JobStore
from images_service.jobs.triggers import Triggers
from images_service.queueing.broker import build_broker
from images_service.queueing.messages import Enqueuer
from tests.support.processes import kill_group, service_command, spawn, terminate_and_wait
from workers.listener.enqueue import JobSubmitter
from workers.listener.lease import Lease


def listener_settings(make_settings: Callable[..., Settings], database: str,
                      **env: str) -> Settings:
    """Settings watching ``database.*`` that download from the loopback image server."""
    return make_settings({
        "WATCH_NAMESPACES": f"{database}.*", "ALLOW_PRIVATE_NETWORKS": "true",
        "RETRY_BACKOFF_MIN_MS": "50", "RETRY_BACKOFF_MAX_MS": "500",
        "LISTENER_METRICS_PORT": str(free_port()), "WORKER_METRICS_PORT": str(free_port()),
        **env,
    })


def make_submitter(settings: Settings, lease: Lease) -> tuple[JobSubmitter, JobStore]:
    """The listener's job submitter on the test servers, and its job store."""
    mongo = mongo_client(settings)
    red = redis_client(settings)
    jobs = JobStore(mongo, settings.jobs_database)
    enqueuer = Enqueuer(build_broker(settings, client=red))
    return JobSubmitter(Triggers(settings, mongo, red, jobs, enqueuer), jobs, enqueuer,
                        lease), jobs


def unique_db(prefix: str = "lst") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


class ListenerProcess:
    """A real `images-service listener` subprocess with its log."""

    def __init__(self, settings: Settings, log: Path, *, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.log = log
        full_env = {**settings.to_env(), "ENVIRONMENT": "development", "LOG_LEVEL": "INFO",
                    "LISTENER_METRICS_PORT": str(free_port()), **(env or {})}
        self.metrics_port = int(full_env["LISTENER_METRICS_PORT"])
        self.offset = log.stat().st_size if log.exists() else 0
        self.proc = spawn(service_command("listener", *args), full_env, log.parent, log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")[self.offset:] if self.log.exists() else ""

    def wait_for(self, needle: str, timeout_s: float = 30, count: int = 1) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.text().count(needle) >= count:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"listener exited with {self.proc.returncode} "
                                     f"before {needle!r}:\n{self.text()[-4000:]}")
            time.sleep(0.05)
        raise AssertionError(f"listener did not log {needle!r} in {timeout_s} s:\n"
                             f"{self.text()[-4000:]}")

    def wait_leading(self, timeout_s: float = 30) -> ListenerProcess:
        self.wait_for("listening", timeout_s)
        return self

    def wait_scan_done(self, timeout_s: float = 30, count: int = 1) -> ListenerProcess:
        self.wait_for("catch-up scan finished", timeout_s, count)
        return self

    def metrics(self) -> dict[str, float]:
        """The listener's Prometheus samples, ``name{labels}`` -> value."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=5) as response:
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def leading(self) -> bool:
        return "listening" in self.text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is not None:
            return self.proc.returncode
        code, _ = terminate_and_wait(self.proc, 40)
        return code

    def cleanup(self) -> None:
        try:
            os.kill(self.proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        kill_group(self.proc)


@pytest.fixture
def start_listener(tmp_path: Path) -> Iterator[Callable[..., ListenerProcess]]:
    started: list[ListenerProcess] = []

    def start(settings: Settings, *, name: str = "listener", args: tuple[str, ...] = (),
              env: dict[str, str] | None = None) -> ListenerProcess:
        listener = ListenerProcess(settings, tmp_path / f"{name}.log", args=args, env=env)
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.cleanup()


def jobs_of(settings: Settings) -> list[dict[str, Any]]:
    client = MongoClient(settings.mongodb_uri, tz_aware=True)
    try:
        return list(client[settings.jobs_database].jobs.find({"type": "change_stream"}))
    finally:
        client.close()


def wait_until(predicate: Callable[[], Any], timeout_s: float = 30, what: str = "condition",
               interval_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"{what} not reached in {timeout_s} s (last: {value!r})")


def wait_jobs(settings: Settings, count: int, *, timeout_s: float = 60,
              finished: bool = True) -> list[dict[str, Any]]:
    """Wait until exactly-at-least ``count`` change_stream jobs exist (and are finished)."""
    def ready() -> list[dict[str, Any]] | None:
        jobs = jobs_of(settings)
        if len(jobs) < count:
            return None
        if finished and any(j["status"] not in ("completed", "failed", "cancelled") for j in jobs):
            return None
        return jobs

    return wait_until(ready, timeout_s, f"{count} finished change_stream jobs")


def jobs_per_document(jobs: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job["document_id"]] = counts.get(job["document_id"], 0) + 1
    return counts


def image_doc(image_server, name: str, count: int = 1, **fields: Any) -> dict[str, Any]:
    return {"name": name,
            "images": [image_server.url(f"/image/JPEG/{name}-{i}") for i in range(count)],
            **fields}


def metadata_exists(settings: Settings, database: str, collection: str, doc_id: Any) -> bool:
    folder = settings.storage_path / database / collection
    return folder.is_dir() and any(
        (p / "metadata.json").is_file() for p in folder.glob(f"{doc_id}*"))


def sigstop(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGSTOP)


def sigcont(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGCONT)
