"""The dev stack's own API key: created 0600 under the data directory, then reused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from images_service.dev.api_key import KEY_FILE_NAME, dev_api_key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_key_is_created_private_then_reused(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # a usual umask: a plain open() would give 0644
    try:
        key, created = dev_api_key(tmp_path)
    finally:
        os.umask(old_umask)
    path = tmp_path / KEY_FILE_NAME
    assert created and len(key) >= 32
    assert path.read_text() == key + "\n"
    assert _mode(path) == 0o600
    assert dev_api_key(tmp_path) == (key, False)
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE_NAME]  # no temporary file left


def test_a_kept_key_made_readable_by_others_is_made_private_again(tmp_path: Path) -> None:
    key, _ = dev_api_key(tmp_path)
    path = tmp_path / KEY_FILE_NAME
    path.chmod(0o644)
    assert dev_api_key(tmp_path) == (key, False)
    assert _mode(path) == 0o600


def test_an_unusable_file_is_replaced_by_a_new_key(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    for content in ("", "short\n", "has a space in it\n"):
        path.write_text(content)
        path.chmod(0o644)
        key, created = dev_api_key(tmp_path)
        assert created and path.read_text() == key + "\n" and _mode(path) == 0o600
