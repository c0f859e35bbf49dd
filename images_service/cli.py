"""The `images-service` command: api, worker, listener, the dev stack, and the api's client.

Every process subcommand reads and validates all settings first, so a bad value fails fast
with a message naming the variable, whichever process is started. ``api`` and ``worker`` then
*exec* gunicorn / the Dramatiq CLI, so SIGTERM reaches the real server process directly. The
client subcommands (download, jobs, job, cancel, retry: images_service/client/) only talk to
the api and skip the settings: they must work where no server is configured.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from images_service import __version__
from images_service.client.commands import add_client_commands
from images_service.config.settings import Settings, SettingsError, load_settings

#: Dramatiq waits this long (ms) for in-flight messages on SIGTERM before requeueing them,
#: keeping the whole worker exit within the contract's 30 s.
WORKER_SHUTDOWN_TIMEOUT_MS = 20_000
#: Longest wait (ms) of an idle worker before it looks at its queues again.
IDLE_POLL_MAX_MS = 100


def _exec(argv: list[str], env: dict[str, str]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, env)


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(settings.to_env())
    return env


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    if settings.api_key_required_but_missing:
        raise SettingsError("API_KEY (or API_KEYS) is required when ENVIRONMENT=production")
    env = _child_env(settings)
    if args.port:
        env["PORT"] = str(args.port)
    env["API_BIND_HOST"] = args.host
    env["PROMETHEUS_MULTIPROC_DIR"] = _fresh_metrics_dir(env, "api")
    conf = Path(__file__).resolve().parent.parent / "api" / "gunicorn_conf.py"
    _exec([sys.executable, "-m", "gunicorn", "-c", str(conf), "api.wsgi:app"], env)
    return 0  # not reached


def _fresh_metrics_dir(env: dict[str, str], name: str) -> str:
    """prometheus_client multiprocess mode: a fresh, empty directory per start."""
    path = Path(env.get("PROMETHEUS_MULTIPROC_DIR") or
                Path(tempfile.gettempdir()) / f"images-service-{name}-metrics-{os.getpid()}")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return str(path)


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    processes = args.processes or settings.worker_processes
    threads = args.threads or settings.worker_threads
    env = _child_env(replace(settings, worker_processes=processes, worker_threads=threads))
    metrics_dir = _fresh_metrics_dir(env, "worker")
    env.update({
        # Must be set before prometheus_client is imported in the worker processes.
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
        # Dramatiq's Prometheus middleware reads its settings from these variables.
        "dramatiq_prom_db": metrics_dir,
        "dramatiq_prom_host": "0.0.0.0",
        "dramatiq_prom_port": str(settings.worker_metrics_port),
        # The Dramatiq master keeps this pid (exec): its forked processes watch it
        # (workers/orphans.py).
        "IMAGES_SERVICE_WORKER_MASTER_PID": str(os.getpid()),
    })
    # glibc gives each thread that allocates big buffers an arena of its own (up to 8 per
    # core) and keeps what was freed there: decoded pixels of one image per download thread.
    # Two arenas bound that (contract §14: memory is bounded); an operator's value wins.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    # An idle Dramatiq consumer polls its queue with a backoff growing to this many ms
    # (Dramatiq's default: 1000). At 1000 the first message of a job waited up to a second
    # in each process, and one process often started downloading a second after the other
    # (issue 24's timeline, docs/throughput.md); at 100 an idle worker makes about ten
    # cheap fetches per second per queue instead of one.
    env.setdefault("dramatiq_worker_timeout", str(IDLE_POLL_MAX_MS))
    # A process takes from the queue only the messages its actor threads can start (Dramatiq's
    # default is twice as many): prefetched messages wait in one process while the other may
    # be idle at the end of a job (issue 24's timeline).
    env.setdefault("dramatiq_queue_prefetch", str(threads))
    argv = [
        sys.executable, "-m", "dramatiq", "workers.app:setup", "workers.actors",
        "--processes", str(processes),
        "--threads", str(threads),
        "--worker-shutdown-timeout", str(WORKER_SHUTDOWN_TIMEOUT_MS),
        "--skip-logging",
    ]  # fmt: skip
    _exec(argv, env)
    return 0  # not reached


def cmd_listener(settings: Settings, args: argparse.Namespace) -> int:
    # Exec'd like the other processes, so the command line does not import worker code.
    argv = [sys.executable, "-m", "workers.listener"] + (["--rescan"] if args.rescan else [])
    _exec(argv, _child_env(settings))
    return 0  # not reached


#: Packages of the ``[dev]`` extra the dev stack needs (the embedded MongoDB-compatible server).
DEV_PACKAGES = ("nx_27017", "neosqlite")


def _missing_dev_packages() -> list[str]:
    missing = []
    for name in DEV_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    # The production image installs the runtime only: say what to install, not a traceback.
    missing = _missing_dev_packages()
    if missing:
        print(f"images-service dev: the dev stack needs {', '.join(missing)} (the [dev] extra): "
              "pip install 'images-service[dev]'", file=sys.stderr)
        return 2
    from images_service.dev.bucket import DevStorageError
    from images_service.dev.ports import PortTaken
    from images_service.dev.stack import run_dev_stack

    try:
        return run_dev_stack(
            settings,
            data_dir=Path(args.data_dir),
            allow_private_networks=args.allow_private_networks,
            port=args.port,
            host=args.host,
            storage_backend=args.storage,
        )
    except (DevStorageError, PortTaken) as exc:
        print(f"images-service dev: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="images-service",
        description="Download and manage the images referenced by MongoDB documents.",
        epilog="Configuration comes from environment variables (and a .env file); see README.",
    )
    parser.add_argument("--version", action="version", version=f"images-service {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    api = sub.add_parser("api", help="run the REST API under gunicorn (port 8001 / PORT)")
    api.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    api.add_argument("--port", type=int, default=None, help="port (default: PORT or 8001)")
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="run the Dramatiq download workers")
    worker.add_argument("--processes", type=int, default=None, help="default: WORKER_PROCESSES")
    worker.add_argument("--threads", type=int, default=None, help="default: WORKER_THREADS")
    worker.set_defaults(func=cmd_worker)

    listener = sub.add_parser("listener", help="run the MongoDB change-stream listener")
    listener.add_argument("--rescan", action="store_true",
                          help="run a catch-up scan of the watched collections now")
    listener.set_defaults(func=cmd_listener)

    dev = sub.add_parser(
        "dev", help="run everything locally, starting embedded MongoDB/Redis when unreachable"
    )
    dev.add_argument("--data-dir", default="./data", help="where embedded servers keep data")
    dev.add_argument("--port", type=int, default=None, help="api port (default: PORT or 8001)")
    # Loopback by default: the dev stack runs with a printed key and may allow private
    # networks, which must not be reachable from the LAN by accident.
    dev.add_argument("--host", default="127.0.0.1",
                     help="address the api binds (default 127.0.0.1; 0.0.0.0 for every interface)")
    dev.add_argument("--storage", choices=("filesystem", "s3"), default=None,
                     help="storage backend (default: STORAGE_BACKEND); s3 starts an embedded "
                          "SeaweedFS when S3_ENDPOINT_URL is empty or does not answer")
    dev.add_argument("--allow-private-networks", action="store_true",
                     help="set ALLOW_PRIVATE_NETWORKS=true (to fetch from local test servers)")
    dev.set_defaults(func=cmd_dev)

    add_client_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "client_command", False):
        return args.func(args)
    try:
        settings = load_settings()
        return args.func(settings, args)
    except SettingsError as exc:
        print(f"images-service: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
