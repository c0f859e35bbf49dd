"""The dev stack's command lines and banner (the running stack is tested in integration)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from images_service.cli import build_parser
from images_service.config.settings import load_settings
from images_service.dev.stack import _stop_children, banner, child_argv, redis_db


def test_the_api_of_the_dev_stack_binds_loopback_unless_told_otherwise() -> None:
    args = build_parser().parse_args(["dev"])
    assert args.host == "127.0.0.1"
    assert child_argv("api", host=args.host)[-3:] == ["api", "--host", "127.0.0.1"]
    assert build_parser().parse_args(["dev", "--host", "0.0.0.0"]).host == "0.0.0.0"
    assert child_argv("worker", host="0.0.0.0")[-1] == "worker"  # only the api binds a host


def test_banner_redacts_passwords_and_hides_a_key_it_was_given(tmp_path: Path) -> None:
    settings = load_settings({"API_KEY": "given-key-0001",
                              "MONGODB_URI": "mongodb+srv://app:m-pass-1@cluster.example.net/",
                              "REDIS_URL": "redis://:r-pass-2@cache:6379/0",
                              "STORAGE_PATH": str(tmp_path)})
    text = banner(settings, host="127.0.0.1")
    for secret in ("given-key-0001", "m-pass-1", "r-pass-2"):
        assert secret not in text
    assert "mongodb+srv://app:***@cluster.example.net/" in text
    assert "redis://:***@cache:6379/0" in text
    assert "from API_KEY / API_KEYS" in text


def test_banner_shows_a_key_it_generated_and_where_it_keeps_it(tmp_path: Path) -> None:
    settings = load_settings({"API_KEY": "generated-key-0002", "STORAGE_PATH": str(tmp_path)})
    key_file = tmp_path / "dev-api-key"
    text = banner(settings, host="0.0.0.0", key_file=key_file, key_created=True)
    assert f"generated-key-0002  (generated; kept in {key_file} for the next starts)" in text
    assert "http://127.0.0.1:8001/api/v1" in text and "listening on 0.0.0.0" in text
    text = banner(settings, host="0.0.0.0", key_file=key_file, key_created=False)
    assert f"generated-key-0002  (generated earlier, from {key_file};" in text


def test_banner_prints_the_console_url(tmp_path: Path) -> None:
    settings = load_settings({"API_KEY": "generated-key-0003", "STORAGE_PATH": str(tmp_path),
                              "PORT": "8011"})
    text = banner(settings, host="127.0.0.1", key_file=tmp_path / "dev-api-key")
    assert "console   http://127.0.0.1:8011/ui/" in text


#: A master that forwards SIGTERM to the worker it forked (as gunicorn's and Dramatiq's do),
#: a little later, so a second SIGTERM sent to the whole group would reach the worker first.
MASTER = r"""
import os, signal, sys, time
log = sys.argv[1]
child = os.fork()
if child == 0:
    def on_term(signum, frame):
        with open(log, "a") as out:
            out.write("term\n")
    signal.signal(signal.SIGTERM, on_term)
    with open(log + ".ready", "w"):
        pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and open(log).read().count("term") < 1:
        time.sleep(0.01)
    time.sleep(0.5)  # a second signal, if any, arrives meanwhile
    os._exit(0)
def forward(signum, frame):
    time.sleep(0.2)
    os.kill(child, signal.SIGTERM)
signal.signal(signal.SIGTERM, forward)
os.waitpid(child, 0)
"""


def test_a_child_gets_one_sigterm_its_master_forwards(tmp_path: Path) -> None:
    log = tmp_path / "terms"
    log.write_text("")
    master = subprocess.Popen([sys.executable, "-c", MASTER, str(log)], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "terms.ready").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        # When the stack stops that child
        _stop_children({"worker": master}, threading.Event())
        # Then its worker got SIGTERM once (from its master), not twice
        assert master.returncode == 0
        assert log.read_text() == "term\n"
    finally:
        if master.poll() is None:
            os.killpg(master.pid, signal.SIGKILL)
            master.wait()


def test_the_redis_db_of_a_url() -> None:
    assert redis_db("redis://127.0.0.1:6379") == 0
    assert redis_db("redis://127.0.0.1:6379/5") == 5
    assert redis_db("redis://:pw@cache:6379/0?db=3") == 3  # redis-py: the query wins
    assert redis_db("redis://cache:6379?db=3") == 3


def test_banner_names_the_redis_db_and_how_to_pick_another(tmp_path: Path) -> None:
    settings = load_settings({"API_KEY": "given-key-0004", "STORAGE_PATH": str(tmp_path),
                              "REDIS_URL": "redis://:r-pass-5@127.0.0.1:6379"})
    text = banner(settings, host="127.0.0.1")
    assert ("  Redis     redis://:***@127.0.0.1:6379  (DB 0 of a running server, shared with its "
            "other users; another DB: REDIS_URL=redis://:***@127.0.0.1:6379/N)\n") in text
    assert "r-pass-5" not in text
    settings = load_settings({"API_KEY": "given-key-0004", "STORAGE_PATH": str(tmp_path),
                              "REDIS_URL": "redis://cache:6379/0?db=2&health_check_interval=5"})
    assert ("(DB 2 of a running server, shared with its other users; another DB: "
            "REDIS_URL=redis://cache:6379/N?health_check_interval=5)") in banner(settings,
                                                                                 host="::1")
    settings = load_settings({"API_KEY": "given-key-0004", "STORAGE_PATH": str(tmp_path),
                              "REDIS_URL": "redis://127.0.0.1:41234/0"})
    text = banner(settings, host="127.0.0.1", embedded_redis_dir=tmp_path / "redis")
    assert (f"  Redis     redis://127.0.0.1:41234/0  (DB 0; embedded redis-server, data in "
            f"{tmp_path / 'redis'})\n") in text
