"""`images-service worker` starts Dramatiq with an idle poll of at most 100 ms and a prefetch of
one message per actor thread (issue 24, docs/throughput.md); an operator's values win."""

from __future__ import annotations

import argparse

import pytest

from images_service import cli
from images_service.config.settings import load_settings


@pytest.fixture
def started(monkeypatch, tmp_path):
    seen: dict = {}
    monkeypatch.setattr(cli, "_exec", lambda argv, env: seen.update(argv=argv, env=env))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))

    def start(**environ: str) -> dict:
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        settings = load_settings({"STORAGE_PATH": str(tmp_path / "images")})
        cli.cmd_worker(settings, argparse.Namespace(processes=2, threads=12))
        return seen

    return start


def test_the_worker_polls_idle_queues_often_and_prefetches_one_message_per_thread(started):
    env = started()["env"]
    assert env["dramatiq_worker_timeout"] == "100"
    assert env["dramatiq_queue_prefetch"] == "12"


def test_an_operators_values_win(started):
    env = started(dramatiq_worker_timeout="1000", dramatiq_queue_prefetch="64")["env"]
    assert env["dramatiq_worker_timeout"] == "1000"
    assert env["dramatiq_queue_prefetch"] == "64"
