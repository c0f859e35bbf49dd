"""Fixtures shared by the engine tests: settings for a loopback image server, a Fetcher, the
storage of those settings (the filesystem under ``tmp_path``)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from images_service.config.settings import Settings, load_settings
from images_service.download import engine
from images_service.fetching.fetcher import Fetcher
from images_service.storage.backend import Storage
from images_service.storage.factory import create_storage


def make_settings(tmp_path: Path, **env: str) -> Settings:
    values = {"STORAGE_PATH": str(tmp_path / "images"), "PRIVATE_NETWORK_ALLOWLIST": "127.0.0.0/27",
              "DOWNLOAD_TIMEOUT": "2"}
    values.update(env)
    return load_settings(values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def fetcher(settings: Settings) -> Iterator[Fetcher]:
    with Fetcher(settings) as f:
        yield f


@pytest.fixture
def storage(settings: Settings) -> Iterator[Storage]:
    with create_storage(settings) as store:
        yield store


def download_one(plan: engine.DocumentPlan, task: engine.ImageTask, fetcher: Fetcher,
                 storage: Storage, settings: Settings, **kwargs: object) -> dict:
    """One attempt at one image through a fresh folder of ``plan`` (job ``j``)."""
    folder = engine.DocumentFolder(storage, plan, job_id="j")
    return engine.download_image(folder, task, fetcher, settings, **kwargs)
