"""The embedded dev stack behind README command 1: `images-service dev`.

Checks its fixed ports first (images_service/dev/ports.py: a taken one exits 2 naming the fix,
before anything starts). Then it starts nx-27017 and/or Redis when ``MONGODB_URI`` /
``REDIS_URL`` are not reachable, each in a process group of its own (a terminal's Ctrl-C must
not reach them), then the api, the worker and the listener as child processes, each in its own
process group too: the terminal's SIGINT reaches the stack alone, which then stops everything
in order. Each child's own process gets one SIGTERM (gunicorn and the Dramatiq master pass it
on to their workers themselves: a second one, to the whole group, would make Dramatiq kill its
workers before their 20 s drain); what is left of a child's group once it exited, or once the
grace period is over (or at a second Ctrl-C), is killed. The embedded servers stop last, after
everything that uses them, so no in-flight download meets a vanished database, broker or
bucket. One line per stopped process, no traceback.

When neither ``API_KEY`` nor ``API_KEYS`` is set, the key is generated once and kept in
``{data_dir}/dev-api-key`` (images_service/dev/api_key.py).

``--storage s3`` (or ``STORAGE_BACKEND=s3``) stores into a bucket: when ``S3_ENDPOINT_URL`` is
empty or does not answer, SeaweedFS is started too (images_service/dev/bucket.py), and stopped
with the rest.

A dev stack runs with a generated key and may allow private networks, so its api listens on
loopback only unless ``--host`` says otherwise. The banner shows connection strings with their
passwords redacted, and the API key only when the stack generated it (a key that came from the
environment is the operator's secret, and terminals are logged and shared).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pymongo.uri_parser import parse_uri
from redis.connection import parse_url as parse_redis_url

from images_service.backends import check_mongo, check_redis, mongo_client, redis_client
from images_service.config.settings import Settings, read_env
from images_service.dev.api_key import KEY_FILE_NAME, dev_api_key
from images_service.dev.bucket import DevStorage, child_environment, ensure_dev_storage
from images_service.dev.embedded import (
    ManagedProcess,
    _die_with_parent,
    port_open,
    start_embedded_mongo,
    start_redis,
)
from images_service.dev.ports import FixedPort, check_ports
from images_service.redaction import redact

log = logging.getLogger("images_service.dev")

#: Seconds a child gets after SIGTERM before its whole process group is killed (the worker
#: drains for 20 s: images_service/cli.py WORKER_SHUTDOWN_TIMEOUT_MS).
CHILD_GRACE_S = 30.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _mongo_reachable(settings: Settings) -> bool:
    client = mongo_client(settings, timeout_ms=1500, app="images-service-dev")
    try:
        return check_mongo(client, quiet=True) == "ok"
    finally:
        client.close()


def _redis_reachable(settings: Settings) -> bool:
    client = redis_client(settings, timeout_s=1.0)
    try:
        return check_redis(client, quiet=True) == "ok"
    finally:
        client.close()


def _ensure_mongo(settings: Settings, data_dir: Path, servers: list[ManagedProcess]) -> Settings:
    if _mongo_reachable(settings):
        return settings
    host, port = parse_uri(settings.mongodb_uri)["nodelist"][0]
    if host not in LOOPBACK or port_open(host, port):
        port = None  # not ours to take: run the embedded server on a free port instead
    server = start_embedded_mongo(data_dir / "mongo", host="127.0.0.1", port=port)
    servers.append(server)
    print(f"  started embedded MongoDB-compatible server nx-27017 on 127.0.0.1:{server.port}")
    return replace(settings, mongodb_uri=f"mongodb://127.0.0.1:{server.port}/?directConnection=true")


def _ensure_redis(settings: Settings, data_dir: Path, servers: list[ManagedProcess]) -> Settings:
    if _redis_reachable(settings):
        return settings
    parts = urlsplit(settings.redis_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if host not in LOOPBACK or port_open(host, port):
        port = None
    server = start_redis(data_dir / "redis", host="127.0.0.1", port=port)
    servers.append(server)
    print(f"  started Redis on 127.0.0.1:{server.port}")
    return replace(settings, redis_url=f"redis://127.0.0.1:{server.port}/0")


def child_argv(command: str, *, host: str) -> list[str]:
    """The command line of one child process of the stack (``api``, ``worker``, ``listener``)."""
    argv = [sys.executable, "-m", "images_service.cli", command]
    return argv + ["--host", host] if command == "api" else argv


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    # Own process group: Ctrl-C in the terminal reaches only us (gunicorn would take the
    # terminal's SIGINT as a quick, undrained shutdown), and we can kill the group's leftovers.
    # Out of our group, a child would outlive a stack killed with SIGKILL: it dies with us
    # (Linux), and its own workers follow (gunicorn's and Dramatiq's exit when orphaned).
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_die_with_parent)


def fixed_ports(settings: Settings, *, host: str) -> list[FixedPort]:
    """The ports the stack's children bind at fixed numbers, with the setting that moves each."""
    return [
        FixedPort("api", host, settings.port, "--port {n} or PORT={n}"),
        # Both metrics endpoints listen on every interface (cli.py, workers/listener).
        FixedPort("worker metrics", "0.0.0.0", settings.worker_metrics_port,
                  "WORKER_METRICS_PORT={n}"),
        FixedPort("listener metrics", "0.0.0.0", settings.listener_metrics_port,
                  "LISTENER_METRICS_PORT={n}"),
    ]


def redis_db(url: str) -> int:
    """The DB number a Redis URL selects (path ``/N`` or ``?db=N``; 0 when it names none)."""
    return int(parse_redis_url(url).get("db") or 0)


def _redis_line(url: str, embedded_dir: Path | None) -> str:
    db = redis_db(url)
    if embedded_dir is not None:
        return (f"  Redis     {redact(url)}  (DB {db}; embedded redis-server, "
                f"data in {embedded_dir})\n")
    parts = urlsplit(url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "db"])  # ?db= wins
    other = redact(urlunsplit(parts._replace(path="/N", query=query)))
    return (f"  Redis     {redact(url)}  (DB {db} of a running server, shared with its other "
            f"users; another DB: REDIS_URL={other})\n")


def banner(settings: Settings, *, host: str, key_file: Path | None = None,
           key_created: bool = False, storage: DevStorage | None = None,
           embedded_redis_dir: Path | None = None) -> str:
    """What the stack prints once it runs: where things are, with no secret it was given.

    ``key_file``: where the stack keeps the key it generated (shown, as the operator needs it
    to sign in); ``None`` when the keys came from ``API_KEY`` / ``API_KEYS`` (not shown).
    """
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown_host = f"[{shown_host}]" if ":" in shown_host else shown_host
    base = f"http://{shown_host}:{settings.port}"
    if key_file is None:
        key = "from API_KEY / API_KEYS (not shown)"
    elif key_created:
        key = f"{settings.api_keys[0]}  (generated; kept in {key_file} for the next starts)"
    else:
        key = (f"{settings.api_keys[0]}  (generated earlier, from {key_file}; "
               "delete it for a new key)")
    images = storage.describe() if storage else f"  images    {settings.storage_path.resolve()}\n"
    return (
        f"\n  API       {base}/api/v1  (docs: {base}/docs; listening on {host})\n"
        f"  console   {base}/ui/  (sign in with the API key)\n"
        f"  API key   {key}\n"
        f"  MongoDB   {redact(settings.mongodb_uri)}\n"
        f"{_redis_line(settings.redis_url, embedded_redis_dir)}"
        f"{images}"
        f"  private networks allowed: {str(settings.allow_private_networks).lower()}\n"
        "  Ctrl-C stops everything.\n"
    )


def _say(line: str) -> None:
    print(line, flush=True)


def _outcome(code: int) -> str:
    return f"exit {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _stop_children(children: dict[str, subprocess.Popen], force: threading.Event) -> None:
    """SIGTERM to each child's own process, then wait for all of them at once (they drain in
    parallel); SIGKILL of a group after ``CHILD_GRACE_S`` or at ``force`` (a second Ctrl-C)."""
    started = time.monotonic()
    for proc in children.values():
        if proc.poll() is None:
            # The process only, never its group: gunicorn's and Dramatiq's masters forward it
            # to their workers, and a Dramatiq worker takes a second SIGTERM as "kill now".
            proc.send_signal(signal.SIGTERM)
    pending = dict(children)
    while pending:
        for name, proc in list(pending.items()):
            if proc.poll() is None:
                continue
            _kill_group(proc.pid)  # leftovers of the group (e.g. a worker that outlived it)
            del pending[name]
            _say(f"  stopped {name} ({_outcome(proc.returncode)}, "
                 f"{time.monotonic() - started:.1f} s)")
        if not pending:
            break
        late = time.monotonic() - started > CHILD_GRACE_S
        if late or force.is_set():
            why = f"did not stop in {CHILD_GRACE_S:.0f} s" if late else "second Ctrl-C"
            for name, proc in pending.items():
                log.warning("%s: %s; killing its process group", name, why)
                _kill_group(proc.pid)
            for proc in pending.values():
                proc.wait()
            continue
        time.sleep(0.05)


def _stop_server(name: str, alive: bool, stop: Callable[[], None]) -> None:
    """Stop one embedded server and say so (or say that it had died)."""
    started = time.monotonic()
    if not alive:
        _say(f"  {name} had exited by itself")
        return
    stop()
    _say(f"  stopped {name} ({time.monotonic() - started:.1f} s)")


def run_dev_stack(
    settings: Settings, *, data_dir: Path, allow_private_networks: bool, port: int | None,
    host: str, storage_backend: str | None = None,
) -> int:
    """Run the whole service in the foreground until Ctrl-C / SIGTERM; returns the exit code.

    ``storage_backend`` (``--storage``) overrides ``STORAGE_BACKEND``. Raises
    :class:`~images_service.dev.ports.PortTaken` when a fixed port is in use and
    :class:`~images_service.dev.bucket.DevStorageError` (when S3 needs the embedded server and
    it is not installed), both before starting anything.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s dev: %(message)s")
    overrides: dict[str, object] = {}
    if "ENVIRONMENT" not in read_env():
        overrides["environment"] = "development"
    if allow_private_networks:
        overrides["allow_private_networks"] = True
    if port:
        overrides["port"] = port
    settings = replace(settings, **overrides)
    check_ports(fixed_ports(settings, host=host))

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    stop, force = threading.Event(), threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        # Nothing printed here: a handler that prints while the main thread prints raises
        # "reentrant call" (a traceback on Ctrl-C); the main thread says it instead.
        received.append(signum)
        (force if stop.is_set() else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)

    servers: list[ManagedProcess] = []
    children: dict[str, subprocess.Popen] = {}
    storage: DevStorage | None = None
    try:
        print("images-service dev stack")
        if (storage_backend or settings.storage_backend) == "s3":
            storage = ensure_dev_storage(settings, data_dir)
            settings = storage.settings
        elif storage_backend:
            settings = replace(settings, storage_backend=storage_backend)
        settings = _ensure_mongo(settings, data_dir, servers)
        settings = _ensure_redis(settings, data_dir, servers)
        key_file, key_created = None, False
        if not settings.api_keys:
            key, key_created = dev_api_key(data_dir)
            key_file = data_dir / KEY_FILE_NAME
            settings = replace(settings, api_keys=(key,))
        if storage is None:
            settings.storage_path.mkdir(parents=True, exist_ok=True)

        env = child_environment({**os.environ, **settings.to_env()}, storage)
        for command in ("api", "worker", "listener"):
            children[command] = _spawn(child_argv(command, host=host), env)
        embedded_redis = any(server.name == "redis-server" for server in servers)
        print(banner(settings, host=host, key_file=key_file, key_created=key_created,
                     storage=storage,
                     embedded_redis_dir=data_dir / "redis" if embedded_redis else None),
              flush=True)
        while not stop.wait(0.5):
            dead = [name for name, proc in children.items() if proc.poll() is not None]
            if dead:
                log.error("%s exited unexpectedly; stopping the stack", ", ".join(dead))
                return 1
        _say(f"\n{signal.Signals(received[0]).name}: stopping (api, worker and listener drain "
             "first; Ctrl-C again to kill them)")
        return 0
    finally:
        # Users first, then what they use, in the reverse order of their start.
        _stop_children(children, force)
        for server in reversed(servers):
            _stop_server(server.name, server.alive(), server.stop)
        if storage is not None and storage.server is not None:
            _stop_server("weed", storage.server.alive(), storage.close)
        print("images-service dev stack stopped", flush=True)
