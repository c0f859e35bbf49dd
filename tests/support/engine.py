"""Fixtures shared by the engine tests: settings for a loopback image server, a Fetcher."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from images_service.fetching.fetcher import Fetcher
from images_service.settings import Settings, load_settings


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
