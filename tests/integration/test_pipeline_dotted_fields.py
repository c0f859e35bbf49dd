"""Dotted ``image_fields`` and ``SEARCH_FIELD`` on nx-27017, end to end (real worker).

nx-27017 returns a dotted projection (``{"media.gallery": 1}``) as a flat key, so a scan that
projected dotted paths found no URL there; scans project top-level fields and walk the paths
(images_service/jobs/projection.py).
"""

from __future__ import annotations

import uuid

from tests.support.pipeline import api_client, source_db, wait_job


def test_rest_jobs_find_images_and_names_under_dotted_paths(make_settings, start_worker,
                                                           image_server):
    # Given documents whose images and name sit in subdocuments
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "SEARCH_FIELD": "info.name",
                              "API_RATE_LIMIT": "100000/minute"})
    name = f"dotted_{uuid.uuid4().hex[:8]}"
    coll = source_db(settings)[name]
    first, second = coll.insert_many([
        {"info": {"name": f"Hotel {i}", "stars": 4},
         "media": {"gallery": [image_server.url(f"/image/JPEG/{name}-{i}-a"),
                               image_server.url(f"/image/PNG/{name}-{i}-b")],
                   "cover": "not a url"}}
        for i in (1, 2)]).inserted_ids
    start_worker(settings)
    client = api_client(settings)
    body = {"image_fields": ["media.gallery"]}

    # When a collection job and a document job ask for media.gallery
    collection_job = wait_job(client, client.post(
        f"/api/v1/download/collection/serpy_db/{name}", json=body).json["job_id"])
    document_job = wait_job(client, client.post(
        f"/api/v1/download/document/serpy_db/{name}/{second}",
        json={**body, "force": True}).json["job_id"])

    # Then both download the gallery into folders named by info.name
    assert collection_job["status"] == "completed", collection_job
    assert collection_job["progress"]["images_total"] == 4
    assert collection_job["progress"]["images_downloaded"] == 4
    assert document_job["status"] == "completed", document_job
    assert document_job["progress"]["images_downloaded"] == 2
    for doc_id, label in ((first, "hotel-1"), (second, "hotel-2")):
        folder = settings.storage_path / "serpy_db" / name / f"{doc_id}-{label}"
        assert sorted(p.name for p in (folder / "original").iterdir()) == \
            ["img_001.jpg", "img_002.png"], folder
        assert coll.find_one({"_id": doc_id})["images_download"]["path"] == \
            f"serpy_db/{name}/{doc_id}-{label}"
