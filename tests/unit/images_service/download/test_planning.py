"""Planning a document: folder key, numbered URLs, the previous folder from the write-back."""

from __future__ import annotations

from pathlib import Path

import pytest
from bson import ObjectId

from images_service.download.planning import plan_document
from images_service.errors import UnsafePathError
from tests.support.engine import make_settings

OID = ObjectId("6b0cb0ab6fcbe85b40478ada")


def test_folder_key_and_numbered_urls(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    plan = plan_document({"_id": OID, "name": "Hôtel Ritz", "images": ["http://a/1", "http://a/2"]},
                         "serpy_db", "hotels", settings)
    assert plan.relative_folder == f"serpy_db/hotels/{OID}-hotel-ritz"
    assert [(t.index, t.url) for t in plan.images] == [(1, "http://a/1"), (2, "http://a/2")]
    assert plan.search_value == "Hôtel Ritz" and plan.previous_relative_folder is None


def test_a_missing_search_field_gives_the_bare_id_folder(tmp_path: Path) -> None:
    plan = plan_document({"_id": OID, "images": []}, "serpy_db", "hotels", make_settings(tmp_path))
    assert plan.relative_folder == f"serpy_db/hotels/{OID}" and plan.search_value is None


@pytest.mark.parametrize("flat", [False, True])
def test_the_previous_folder_comes_from_the_write_back_path(tmp_path: Path, flat: bool) -> None:
    settings = make_settings(tmp_path)
    old = f"serpy_db/hotels/{OID}-old-name"
    # MongoDB nests a projected dotted path; nx-27017 returns it as a flat key: both are read.
    status = {f"{settings.status_field}.path": old} if flat else \
        {settings.status_field: {"path": old}}
    plan = plan_document({"_id": OID, "name": "New name", **status}, "serpy_db", "hotels", settings)
    assert plan.previous_relative_folder == old


@pytest.mark.parametrize("path", [
    "serpy_db/other/6b0cb0ab6fcbe85b40478ada-x",  # another collection
    "serpy_db/hotels/6b0cb0ab6fcbe85b40478adb-x",  # another document
    "serpy_db/hotels/../../etc",  # not a folder of this tree
])
def test_a_write_back_path_of_another_folder_is_ignored(tmp_path: Path, path: str) -> None:
    settings = make_settings(tmp_path)
    doc = {"_id": OID, "name": "n", settings.status_field: {"path": path}}
    assert plan_document(doc, "serpy_db", "hotels", settings).previous_relative_folder is None


def test_an_id_that_cannot_name_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafePathError):
        plan_document({"_id": "../x", "images": []}, "serpy_db", "hotels", make_settings(tmp_path))
