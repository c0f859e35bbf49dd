"""`images-service trash`, `restore` and `purge` (contract §15) against a live api (werkzeug on a
loopback port), nx-27017, Redis and a tree downloaded from the loopback image server.

The CLI runs as a subprocess: with stdin from /dev/null and stdout piped (a script), or with
stdin, stdout and stderr on a pseudo-terminal (a person, who is asked before a purge).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from images_service.download import engine
from images_service.fetching.fetcher import Fetcher
from images_service.storage import trash
from images_service.storage.factory import create_storage
from tests.integration.test_cli import LiveApi
from tests.support.pipeline import source_db
from tests.support.processes import run_on_terminal, service_command

FOLDER = "serpy_db/hotels/h1-hotel-ritz"


@pytest.fixture
def live(make_settings, image_server) -> Iterator[tuple[LiveApi, object]]:
    """A live api and its tree: hotel h1 ("Hotel Ritz") downloaded with two images."""
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true",
                              "API_RATE_LIMIT": "100000/minute"})
    db = source_db(settings)
    db.hotels.drop()
    doc = {"_id": "h1", "name": "Hotel Ritz", "images": [image_server.url("/image/JPEG/1"),
                                                         image_server.url("/image/PNG/2")]}
    db.hotels.insert_one(doc)
    storage = create_storage(settings)
    with Fetcher(settings) as fetcher:
        engine.download_document(doc, "serpy_db", "hotels", settings, job_id="j",
                                 storage=storage, fetcher=fetcher)
    assert len(storage.list(FOLDER)) == 3
    api = LiveApi(settings)
    yield api, storage
    api.server.shutdown()
    storage.close()


def _script(api: LiveApi, *args: str) -> subprocess.CompletedProcess:
    """Run as a script would: no terminal anywhere."""
    return subprocess.run(service_command(*args), env=api.env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=90)


def _person(api: LiveApi, *args: str, answer: str) -> tuple[int, str]:
    """Run on a pseudo-terminal; type ``answer`` when the question appears."""
    return run_on_terminal(service_command(*args), api.env(), interactive=True, answer=answer)


def test_trash_lists_and_restore_brings_back(live):
    api, storage = live
    trash.trash_folder(storage, FOLDER)

    listed = _script(api, "trash", "serpy_db", "hotels")
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    folder, document_id, deleted_at, images = line.split("\t")
    assert (folder, document_id, images) == ("h1-hotel-ritz", "h1", "2")
    assert deleted_at.endswith("Z")
    as_json = _script(api, "trash", "serpy_db", "hotels", "--json")
    assert json.loads(as_json.stdout) == {"items": [{
        "folder": "h1-hotel-ritz", "document_id": "h1", "deleted_at": deleted_at, "images": 2}]}

    restored = _script(api, "restore", "serpy_db", "hotels", "h1-hotel-ritz")
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.strip() == "restored h1-hotel-ritz to serpy_db/hotels/"
    assert len(storage.list(FOLDER)) == 3
    assert _script(api, "trash", "serpy_db", "hotels").stdout == ""

    again = _script(api, "restore", "serpy_db", "hotels", "h1-hotel-ritz")
    assert again.returncode == 2 and "404 not_in_trash" in again.stderr

    # Trashed, then the folder written again: restore is refused, both kept
    trash.trash_folder(storage, FOLDER)
    storage.put_bytes(f"{FOLDER}/metadata.json", b'{"document_id": "h1", "images": []}')
    taken = _script(api, "restore", "serpy_db", "hotels", "h1-hotel-ritz")
    assert taken.returncode == 2 and "409 folder_conflict" in taken.stderr
    assert len(storage.trash().list(FOLDER)) == 3


def test_purge_without_a_terminal_refuses_unless_told_yes(live):
    api, storage = live
    trash.trash_folder(storage, FOLDER)
    storage.put_bytes(f"{FOLDER}/metadata.json", b'{"document_id": "h1", "images": []}')

    refused = _script(api, "purge", "serpy_db", "hotels", "h1")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert len(storage.trash().list(FOLDER)) == 3 and len(storage.list(FOLDER)) == 1

    purged = _script(api, "purge", "serpy_db", "hotels", "h1", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.strip() == "purged document h1 of serpy_db.hotels: 4 files removed"
    assert storage.list("") == [] and storage.trash().list("") == []

    gone = _script(api, "purge", "serpy_db", "hotels", "h1", "--yes")
    assert gone.returncode == 2 and "404 document_not_found" in gone.stderr


def test_purge_on_a_terminal_asks_first(live):
    api, storage = live

    code, shown = _person(api, "purge", "serpy_db", "hotels", "h1", answer="n")
    assert code == 1, shown
    assert "Remove every image of document h1 of serpy_db.hotels" in shown
    assert "not purged" in shown
    assert len(storage.list(FOLDER)) == 3

    code, shown = _person(api, "purge", "serpy_db", "hotels", "h1", answer="y")
    assert code == 0, shown
    assert "3 files removed" in shown
    assert storage.list("") == []
