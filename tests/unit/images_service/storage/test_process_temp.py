"""The private directory of download bodies bound for a bucket (storage/process_temp.py):
never a directory or symlink someone else prepared at a predictable path."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from images_service.storage import process_temp

OLD_NAME = f"images-service-{os.getpid()}"  #: the fixed name this module used to reuse


@pytest.fixture(autouse=True)
def _forget_directories():
    yield
    process_temp._dirs.clear()


def _private(directory: Path) -> bool:
    info = os.lstat(directory)
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
            and stat.S_IMODE(info.st_mode) == 0o700)


def test_a_directory_pre_created_at_the_old_path_is_not_used(tmp_path: Path) -> None:
    # Given another user's directory, open to all, where the process's directory used to be
    planted = tmp_path / OLD_NAME
    planted.mkdir()
    planted.chmod(0o777)
    # When the process asks for its directory
    directory = process_temp.ensure_own_dir(tmp_path)
    # Then it gets a new one, private, and the planted one stays empty
    assert directory != planted and directory.parent == tmp_path
    assert directory.name.startswith(f"images-service-{os.getpid()}-")
    assert _private(directory)
    (directory / ".tmp-body.part").write_bytes(b"body")
    assert list(planted.iterdir()) == []
    assert process_temp.ensure_own_dir(tmp_path) == directory  # the same one, checked


def test_a_symlink_at_the_old_path_is_not_followed(tmp_path: Path) -> None:
    # Given a symlink to the attacker's directory where the process's directory used to be
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / OLD_NAME).symlink_to(theirs)
    directory = process_temp.ensure_own_dir(tmp_path / "tmp")
    (directory / ".tmp-body.part").write_bytes(b"body")
    assert not directory.is_symlink() and _private(directory)
    assert list(theirs.iterdir()) == []


def test_a_directory_replaced_by_a_symlink_is_made_again(tmp_path: Path) -> None:
    directory = process_temp.ensure_own_dir(tmp_path)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    directory.rmdir()
    directory.symlink_to(theirs)
    again = process_temp.ensure_own_dir(tmp_path)
    assert again != directory and _private(again)
    process_temp.remove_own_dir(tmp_path)
    assert not again.exists() and theirs.is_dir()  # removal never follows the symlink either


def test_the_mode_is_0700_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        assert stat.S_IMODE(os.stat(process_temp.ensure_own_dir(tmp_path)).st_mode) == 0o700
    finally:
        os.umask(previous)


def _child_dir(root: str, out: str) -> None:
    Path(out).write_text(str(process_temp.ensure_own_dir(Path(root))))
    os._exit(0)  # killed: no cleanup


def test_a_forked_process_gets_its_own_and_dead_ones_are_removed(tmp_path: Path) -> None:
    mine = process_temp.ensure_own_dir(tmp_path)
    child = multiprocessing.get_context("fork").Process(
        target=_child_dir, args=(str(tmp_path), str(tmp_path / "child")))
    child.start()
    child.join(10)
    theirs = Path((tmp_path / "child").read_text())
    assert theirs != mine and theirs.name.startswith(f"images-service-{child.pid}-")
    # an old-style directory of a dead pid, and a symlink named like one (never followed)
    old_style = tmp_path / f"images-service-{child.pid}"
    old_style.mkdir(mode=0o700)
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_bytes(b"")
    (tmp_path / f"images-service-{child.pid}-link").symlink_to(target)

    assert process_temp.remove_dirs_of_dead_processes(tmp_path) == 2
    assert not theirs.exists() and not old_style.exists()
    assert mine.is_dir() and (target / "keep").exists()
