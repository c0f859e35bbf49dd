"""Processes forked by the Dramatiq master exit when the master is gone.

Dramatiq's worker processes and the process it forks for the Prometheus exposition server do
not watch their master: if it is killed (SIGKILL, OOM, or the dev stack killed with it), they
would go on forever, unsupervised (a worker consuming messages, the exposition server holding
``WORKER_METRICS_PORT``). Each polls its parent once a second and exits when it changed;
unacked messages are redelivered by the broker's maintenance, as for any dead worker.

The master's pid comes from ``IMAGES_SERVICE_WORKER_MASTER_PID``, set by `images-service
worker` to its own pid before it execs the master (same pid), not from ``os.getppid()`` at
start: a master killed while the process was still booting would leave it with the adoptive
parent as its "master", never noticing. Kept light (no service imports): the exposition
server's process imports this module before it serves anything.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from dramatiq.middleware.prometheus import Prometheus, _run_exposition_server

log = logging.getLogger(__name__)

MASTER_PID_VARIABLE = "IMAGES_SERVICE_WORKER_MASTER_PID"


def master_pid() -> int:
    return int(os.environ.get(MASTER_PID_VARIABLE) or os.getppid())


def _exit_when_orphaned(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            log.error("worker master %s is gone; exiting", parent_pid)
            os._exit(1)


def watch_master() -> None:
    """Exit this process (within a second or so) once the Dramatiq master is gone."""
    threading.Thread(target=_exit_when_orphaned, args=(master_pid(),), daemon=True,
                     name="orphan-watch").start()


def run_exposition_server() -> int:
    """Dramatiq's metrics exposition server, in the process the master forks for it."""
    watch_master()
    return _run_exposition_server()  # dramatiq is pinned (constraints.txt): its private name


class OrphanAwarePrometheus(Prometheus):
    """Dramatiq's Prometheus middleware whose forked exposition server dies with its master."""

    @property
    def forks(self) -> list:
        return [run_exposition_server]
