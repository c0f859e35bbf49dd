"""The dev stack's port check: a taken or repeated fixed port is named with its fix."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest

from images_service.dev.ports import FixedPort, PortTaken, bindable, check_ports


@pytest.fixture
def taken() -> Iterator[int]:
    """A port someone listens on (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def _free() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_listening_port_is_not_bindable_a_free_one_is(taken: int) -> None:
    assert not bindable("127.0.0.1", taken)
    assert not bindable("0.0.0.0", taken)  # every interface includes the loopback one
    assert bindable("127.0.0.1", _free())


def test_free_ports_pass() -> None:
    check_ports([FixedPort("api", "127.0.0.1", _free(), "--port {n} or PORT={n}")])


def test_a_taken_port_is_named_with_its_fix_and_a_free_port_to_use(taken: int) -> None:
    with pytest.raises(PortTaken) as caught:
        check_ports([FixedPort("api", "127.0.0.1", taken, "--port {n} or PORT={n}")])
    message = str(caught.value)
    assert message.startswith(f"port {taken} (api, on 127.0.0.1) is already in use")
    suggested = int(message.split("--port ")[1].split()[0])
    assert taken < suggested <= taken + 20 and f"or PORT={suggested}" in message
    assert bindable("127.0.0.1", suggested)


def test_every_problem_is_named_at_once(taken: int) -> None:
    free = _free()
    with pytest.raises(PortTaken) as caught:
        check_ports([FixedPort("api", "127.0.0.1", free, "--port {n} or PORT={n}"),
                     FixedPort("worker metrics", "0.0.0.0", free, "WORKER_METRICS_PORT={n}"),
                     FixedPort("listener metrics", "0.0.0.0", taken, "LISTENER_METRICS_PORT={n}")])
    message = str(caught.value)
    assert f"port {free} is both the api and the worker metrics port: use " \
        "WORKER_METRICS_PORT=N with another N" in message
    assert f"port {taken} (listener metrics, on 0.0.0.0) is already in use" in message
    assert re.search(r"or use LISTENER_METRICS_PORT=\d+$", message), message
