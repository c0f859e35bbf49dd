"""The `images-service` command: help, fail-fast configuration, clean start and SIGTERM stop."""

from __future__ import annotations

import re
import subprocess

import psutil
import pytest

from images_service.dev.embedded import free_port, start_redis
from tests.support.processes import (
    descendants,
    kill_group,
    service_command,
    spawn,
    terminate_and_wait,
    wait_http_json,
)

KEY = "test-key-0123456789"


def test_help_lists_every_command() -> None:
    out = subprocess.run(service_command("--help"), capture_output=True, text=True, check=True)
    for command in ("api", "worker", "listener", "dev", "download", "jobs", "retry",
                    "placeholders"):
        assert command in out.stdout


@pytest.mark.parametrize("command", ["api", "worker", "listener", "dev"])
def test_bad_value_fails_fast_naming_the_variable(command: str, tmp_path) -> None:
    result = subprocess.run(service_command(command), capture_output=True, text=True, timeout=30,
                            cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "MAX_RETRIES": "lots"})
    assert result.returncode == 2
    assert "MAX_RETRIES" in result.stderr


def test_api_refuses_to_start_in_production_without_key(tmp_path) -> None:
    result = subprocess.run(service_command("api"), capture_output=True, text=True, timeout=30,
                            cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "ENVIRONMENT": "production"})
    assert result.returncode == 2
    assert "API_KEY" in result.stderr


def _env(mongo_uri: str, redis_url: str, tmp_path) -> dict[str, str]:
    return {"MONGODB_URI": mongo_uri, "REDIS_URL": redis_url, "API_KEY": KEY,
            "STORAGE_PATH": str(tmp_path / "images"), "WORKER_PROCESSES": "1",
            "WORKER_THREADS": "2", "API_WORKERS": "2",
            "WORKER_METRICS_PORT": str(free_port()), "LISTENER_METRICS_PORT": str(free_port())}


def test_api_serves_under_gunicorn_and_stops_on_sigterm(mongo_uri, redis_url, tmp_path) -> None:
    port = free_port()
    proc = spawn(service_command("api", "--host", "127.0.0.1", "--port", str(port)),
                 _env(mongo_uri, redis_url, tmp_path), tmp_path, tmp_path / "api.log")
    try:
        status, body = wait_http_json(f"http://127.0.0.1:{port}/api/v1/health", proc=proc)
        assert (status, body["status"]) == (200, "ok")
        status, body = wait_http_json(f"http://127.0.0.1:{port}/api/v1/openapi.json", proc=proc)
        assert status == 401 and body["error"]["code"] == "unauthorized"
        status, _ = wait_http_json(f"http://127.0.0.1:{port}/api/v1/jobs?status=bad", proc=proc,
                                   headers={"X-API-Key": KEY})
        assert status == 400
        children = descendants(proc)
        assert children, "gunicorn workers expected"
        code, seconds = terminate_and_wait(proc)
        assert code in (0, 143) and seconds < 30
        assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
        assert KEY not in (tmp_path / "api.log").read_text()  # the API key is never logged
    finally:
        kill_group(proc)


@pytest.mark.parametrize("command", ["worker", "listener"])
def test_background_processes_stop_cleanly_on_sigterm(command, mongo_uri, redis_url, tmp_path) -> None:
    proc = spawn(service_command(command), _env(mongo_uri, redis_url, tmp_path), tmp_path,
                 tmp_path / f"{command}.log")
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(3)  # still running: it started
        children = descendants(proc)
        code, seconds = terminate_and_wait(proc)
        assert code in (0, 143), (tmp_path / f"{command}.log").read_text()[-2000:]
        assert seconds < 30
        assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    finally:
        kill_group(proc)


def _start_dev_stack(tmp_path, port: int, mongo_uri: str, redis_url: str,
                     **env: str) -> subprocess.Popen:
    """`images-service dev` with small sizing, once its api answers /health with both ok."""
    env = {"MONGODB_URI": mongo_uri, "REDIS_URL": redis_url,
           "WORKER_PROCESSES": "1", "WORKER_THREADS": "2", "API_WORKERS": "1",
           "WORKER_METRICS_PORT": str(free_port()), "LISTENER_METRICS_PORT": str(free_port()),
           **env}
    proc = spawn(service_command("dev", "--port", str(port), "--data-dir", str(tmp_path / "data")),
                 env, tmp_path, tmp_path / "dev.log")
    try:
        status, body = wait_http_json(f"http://127.0.0.1:{port}/api/v1/health", 60, proc=proc)
        assert status == 200 and body["checks"] == {"mongodb": "ok", "redis": "ok", "storage": "ok"}
    except BaseException:
        kill_group(proc)
        raise
    return proc


def test_dev_stack_starts_embedded_mongo_and_leaves_nothing_behind(redis_url, tmp_path) -> None:
    port, mongo_port = free_port(), free_port()
    proc = _start_dev_stack(tmp_path, port, f"mongodb://127.0.0.1:{mongo_port}", redis_url)
    try:
        assert (tmp_path / "data" / "mongo").is_dir()  # --data-dir: one file per database
        log = (tmp_path / "dev.log").read_text()
        assert "API key" in log and f"127.0.0.1:{mongo_port}" in log
        # The Redis it was given, and which DB of it (issue 23: not DB 0 of someone's server)
        db = redis_url.rsplit("/", 1)[1]
        assert f"Redis     {redis_url}  (DB {db} of a running server" in log
        key = re.search(r"API key\s+(\S+)\s+\(generated; kept in ", log).group(1)
        status, _ = wait_http_json(f"http://127.0.0.1:{port}/api/v1/jobs", proc=proc,
                                   headers={"X-API-Key": key})
        assert status == 200  # the printed key is the one the api accepts
        everything = descendants(proc)
        assert _listening_addresses(everything, port) == {"127.0.0.1"}  # loopback by default
        assert len(everything) >= 4  # nx-27017, api, worker, listener (and their children)
        code, seconds = terminate_and_wait(proc, 60)
        assert code == 0 and seconds < 60
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in everything)
    finally:
        kill_group(proc)


def _listening_addresses(processes: list[psutil.Process], port: int) -> set[str]:
    found = set()
    for process in processes:
        try:
            found |= {c.laddr.ip for c in process.net_connections("tcp")
                      if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        except psutil.NoSuchProcess:
            pass
    return found


def test_dev_stack_prints_no_secret_it_was_given(tmp_path) -> None:
    # Given a key from the environment, a Redis that needs a password, a MongoDB URI with one
    redis_server = start_redis(tmp_path / "locked-redis", password="redis-pass-0451")
    port, proc = free_port(), None
    try:
        # When the stack is up (the worker and listener reach the locked Redis too)
        proc = _start_dev_stack(tmp_path, port,
                                f"mongodb://svc:mongo-pass-0452@127.0.0.1:{free_port()}",
                                f"redis://:redis-pass-0451@127.0.0.1:{redis_server.port}/0",
                                API_KEY="env-key-never-printed-77")
        status, _ = wait_http_json(f"http://127.0.0.1:{port}/api/v1/jobs", proc=proc,
                                   headers={"X-API-Key": "env-key-never-printed-77"})
        assert status == 200
        code, _ = terminate_and_wait(proc, 60)
        assert code == 0
    finally:
        if proc is not None:
            kill_group(proc)
        redis_server.stop()
    # Then its whole output names where things are without the secrets
    log = (tmp_path / "dev.log").read_text()
    assert "API key   from API_KEY / API_KEYS (not shown)" in log
    assert not (tmp_path / "data" / "dev-api-key").exists()  # a given key is never written
    assert f"redis://:***@127.0.0.1:{redis_server.port}/0" in log
    for secret in ("env-key-never-printed-77", "redis-pass-0451", "mongo-pass-0452"):
        assert secret not in log
