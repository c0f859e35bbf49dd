"""A tree to trash, restore and purge (contract §15): two hotels downloaded on the backend
of ``any_storage_env``, the api over it, and their copies in the URL index."""

from __future__ import annotations

import json

import pytest

from images_service.download import engine
from images_service.download.url_index import UrlIndex
from images_service.fetching.fetcher import Fetcher
from images_service.storage.factory import create_storage
from tests.support.pipeline import api_client, source_db


def meta(store, folder: str) -> dict | None:
    raw = store.read_bytes(f"{folder}/metadata.json")
    return json.loads(raw) if raw is not None else None


@pytest.fixture
def trash_stack(make_settings, any_storage_env, image_server):
    """The api and its storage, with hotels h1 ("Hotel Ritz") and h2 downloaded (two images
    and a thumbnail each) and their copies in the URL index."""
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true",
                              "API_RATE_LIMIT": "100000/minute",
                              "PROCESSED_VARIANTS": "thumb:32x32:fit:webp:80",
                              **any_storage_env})
    db = source_db(settings)
    db.hotels.drop()
    docs = [{"_id": f"h{n}", "name": name, "images": [image_server.url(f"/image/JPEG/{n}a"),
                                                      image_server.url(f"/image/PNG/{n}b")]}
            for n, name in ((1, "Hotel Ritz"), (2, "Sea View"))]
    db.hotels.insert_many(docs)
    storage = create_storage(settings)
    urls = UrlIndex(source_db(settings).client, settings.jobs_database)
    with Fetcher(settings) as fetcher:
        for doc in docs:
            stored = engine.download_document(doc, "serpy_db", "hotels", settings, job_id="j",
                                              storage=storage, fetcher=fetcher)
            assert stored["summary"]["downloaded"] == 2
    for folder in ("serpy_db/hotels/h1-hotel-ritz", "serpy_db/hotels/h2-sea-view"):
        urls.record(folder, meta(storage, folder)["images"])
    yield settings, api_client(settings), storage, urls
    storage.close()
