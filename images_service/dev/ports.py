"""The dev stack's fixed ports, checked before anything starts (issue 23).

The api (``--port`` / ``PORT``, default 8001) and the metrics endpoints of the worker
(``WORKER_METRICS_PORT``, 9191) and the listener (``LISTENER_METRICS_PORT``, 9192) listen on
fixed ports. When one is taken, gunicorn would retry for seconds and the stack would stop with
"api exited unexpectedly" after printing a banner with a URL that belongs to someone else; the
Dramatiq exposition server would die with a traceback. So the stack binds each port once
itself first and, when that fails, exits 2 with the setting to change (and a free port to try)
before printing anything. The embedded servers need no check: they take a free port when
theirs is taken.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

#: How far above a taken port a free one is looked for, to suggest it.
SUGGESTION_RANGE = 20


@dataclass(frozen=True)
class FixedPort:
    """A port a child of the stack will bind, and how the operator changes it."""

    what: str  #: "api", "worker metrics", …
    host: str
    port: int
    fix: str  #: the setting(s) that change it, with ``{n}`` for the number


class PortTaken(RuntimeError):
    """A fixed port of the stack is in use; the message names the fix."""


def bindable(host: str, port: int) -> bool:
    """Whether a listening socket could bind ``host:port`` now.

    ``SO_REUSEADDR`` as gunicorn and http.server set it: a port whose last connections are in
    TIME_WAIT is free for them, so it counts as free here too.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError:
            return False
    return True


def _free_above(host: str, port: int, taken: set[int]) -> int | None:
    for candidate in range(port + 1, min(port + 1 + SUGGESTION_RANGE, 65536)):
        if candidate not in taken and bindable(host, candidate):
            return candidate
    return None


def check_ports(ports: list[FixedPort]) -> None:
    """Raise :class:`PortTaken` naming every taken or repeated port and its fix."""
    problems = []
    wanted = {p.port for p in ports}
    seen: dict[int, str] = {}
    for fixed in ports:
        if fixed.port in seen:
            problems.append(f"port {fixed.port} is both the {seen[fixed.port]} and the "
                            f"{fixed.what} port: use {fixed.fix.format(n='N')} with another N")
            continue
        seen[fixed.port] = fixed.what
        if bindable(fixed.host, fixed.port):
            continue
        free = _free_above(fixed.host, fixed.port, wanted)
        fix = fixed.fix.format(n=free or "N")
        problems.append(f"port {fixed.port} ({fixed.what}, on {fixed.host}) is already in use: "
                        f"stop what listens there or use {fix}")
    if problems:
        raise PortTaken("; ".join(problems))
