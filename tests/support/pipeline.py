"""Fixtures to run the real pipeline: a worker subprocess, an in-process pipeline driven step
by step (Rig), an api test client, job waits."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis
from pymongo import MongoClient

from api import create_app
from images_service.backends import mongo_client
from images_service.config.settings import Settings
from images_service.dev.embedded import free_port
from images_service.queueing.broker import NAMESPACE, build_broker
from images_service.queueing.messages import DOCUMENTS_ACTOR, DOWNLOAD_QUEUE, Enqueuer
from tests.support.processes import kill_group, service_command, spawn, terminate_and_wait
from workers.pipeline import DownloadPipeline

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


class Rig:
    """The pipeline in this process on the test servers, driven step by step: messages are
    read from the broker's Redis hashes and handed to the steps in the order a test needs
    (no worker's timing to race with)."""

    def __init__(self, settings, image_server) -> None:
        self.settings = settings
        self.server = image_server
        self.client = api_client(settings)
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.pipeline = DownloadPipeline(
            settings, mongo=mongo_client(settings), redis_client=self.redis,
            enqueuer=Enqueuer(build_broker(settings, client=self.redis)))
        self.db = source_db(settings)

    def messages(self, actor: str, job_id: str) -> list[list]:
        """The args of the queued (ready or delayed) messages of ``actor`` for ``job_id``."""
        found = []
        for suffix in ("", ".DQ"):
            for raw in self.redis.hvals(f"{NAMESPACE}:{DOWNLOAD_QUEUE}{suffix}.msgs"):
                message = json.loads(raw)
                if message["actor_name"] == actor and message["args"][0] == job_id:
                    found.append(message["args"])
        return found

    def take_messages(self, actor: str, job_id: str) -> list[tuple[list, int | None]]:
        """Like :meth:`messages`, but removes them from the broker, with each one's ETA (Unix
        ms, None when not delayed): a test hands them to the steps itself."""
        found = []
        for suffix in ("", ".DQ"):
            key = f"{NAMESPACE}:{DOWNLOAD_QUEUE}{suffix}.msgs"
            for message_id, raw in self.redis.hgetall(key).items():
                message = json.loads(raw)
                if message["actor_name"] == actor and message["args"][0] == job_id:
                    self.redis.hdel(key, message_id)
                    self.redis.lrem(f"{NAMESPACE}:{DOWNLOAD_QUEUE}{suffix}", 0, message_id)
                    found.append((message["args"], message["options"].get("eta")))
        return found

    def document_job(self, document_id: str) -> tuple[str, list[dict]]:
        """A document job, scanned: its id and its plans (as its message carries them)."""
        job_id = self.client.post(
            f"/api/v1/download/document/serpy_db/hotels/{document_id}").json["job_id"]
        self.pipeline.scan(job_id)
        (args,) = self.messages(DOCUMENTS_ACTOR, job_id)
        return job_id, args[1]

    def job(self, job_id: str) -> dict:
        return self.client.get(f"/api/v1/jobs/{job_id}").json

    def close(self) -> None:
        self.pipeline.close()
