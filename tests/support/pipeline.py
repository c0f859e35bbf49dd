"""Fixtures to run the real pipeline: a worker subprocess, an api test client, job waits."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from pymongo import MongoClient

from api import create_app
from images_service.config.settings import Settings
from images_service.dev.embedded import free_port
from tests.support.processes import kill_group, service_command, spawn, terminate_and_wait

KEY = "test-key-0123456789"


class WorkerProcess:
    def __init__(self, settings: Settings, log: Path, processes: int = 1, threads: int = 4) -> None:
        self.log = log
        self.metrics_port = free_port()
        env = {**settings.to_env(), "LOG_LEVEL": "INFO", "ENVIRONMENT": "development",
               "WORKER_METRICS_PORT": str(self.metrics_port)}
        self.proc = spawn(service_command("worker", "--processes", str(processes),
                                          "--threads", str(threads)),
                          env, log.parent, log)
        self.processes = processes

    def wait_ready(self, timeout_s: float = 30) -> "WorkerProcess":
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            if text.count("Worker process is ready") >= self.processes:
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited: {text[-3000:]}")
            time.sleep(0.05)
        raise AssertionError("worker not ready: " + self.log.read_text(errors="replace")[-3000:])

    def stop(self) -> int:
        if self.proc.poll() is None:
            code, _ = terminate_and_wait(self.proc, 40)
            return code
        return self.proc.returncode

    def kill(self) -> None:
        kill_group(self.proc)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(settings: Settings, *, processes: int = 1, threads: int = 4, name: str = "worker") -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"{name}-{len(workers)}.log", processes, threads)
        workers.append(worker)
        return worker.wait_ready()

    yield start
    for worker in workers:
        try:
            worker.stop()
        finally:
            worker.kill()


def api_client(settings: Settings):
    client = create_app(settings).test_client()
    client.environ_base["HTTP_X_API_KEY"] = KEY
    return client


def wait_job(client, job_id: str, *, timeout_s: float = 60,
             until: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    until = until or (lambda job: job["status"] in ("completed", "failed", "cancelled"))
    deadline = time.monotonic() + timeout_s
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json
        if until(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job did not reach the state in {timeout_s} s: {job}")


def source_db(settings: Settings, name: str = "serpy_db"):
    return MongoClient(settings.mongodb_uri, tz_aware=True)[name]
