"""MongoDB change-stream listener (placeholder process until the listener issue lands).

It starts, validates its settings and stops cleanly on SIGTERM/SIGINT; it does not watch yet.
"""

from __future__ import annotations

import logging
import signal
import threading

from images_service.logs import configure_logging
from images_service.settings import Settings

log = logging.getLogger(__name__)


def run_listener(settings: Settings, *, rescan: bool = False) -> int:
    configure_logging(settings.log_level, json_lines=not settings.is_development)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.warning("listener started: change-stream watching is not implemented yet")
    stop.wait()
    log.info("listener stopped")
    return 0
