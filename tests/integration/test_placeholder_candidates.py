"""Finding placeholder candidates across a collection (contract §18): the endpoint and the
command list the hashes shared by the most documents, from the rows the real worker keeps of
every finished document (never the source collection)."""

from __future__ import annotations

import os
import subprocess
import threading

from werkzeug.serving import make_server

from api import create_app
from images_service.dev.embedded import free_port
from tests.support.pipeline import KEY, api_client, source_db, wait_job
from tests.support.processes import REPO, service_command
from tests.support.scenes import encode, scene

BLANK = encode(scene(0, (200, 150)).point(lambda _: 128), "PNG")
NO_PHOTO = encode(scene(77, (300, 200)), "PNG")
LOGO = encode(scene(78, (240, 120)), "PNG")
ENV = {"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute"}


def _collection(settings, image_server) -> None:
    """Seven hotels: each its own photo; the "no photo" image at its own URL in five of
    them; one shared logo URL in three (fetched once, then copied); a blank frame in all."""
    png = {"Content-Type": "image/png"}
    image_server.set_response("/blank.png", 200, BLANK, png)
    image_server.set_response("/logo.png", 200, LOGO, png)
    docs = []
    for i in range(7):
        image_server.set_response(f"/photo-{i}.jpg", 200, encode(scene(i + 1), "JPEG"),
                                  {"Content-Type": "image/jpeg"})
        image_server.set_response(f"/listing/{i}/main.png", 200, NO_PHOTO, png)
        images = [image_server.url(f"/photo-{i}.jpg"), image_server.url("/blank.png")]
        if i < 5:
            images.append(image_server.url(f"/listing/{i}/main.png"))
        if i >= 4:
            images.append(image_server.url("/logo.png"))
        docs.append({"_id": f"h{i}", "name": f"Hotel {i}", "images": images})
    db = source_db(settings)
    db.hotels.drop()
    db.hotels.insert_many(docs)


def _download(settings) -> None:
    client = api_client(settings)
    job = wait_job(client, client.post("/api/v1/download/collection/serpy_db/hotels")
                   .json["job_id"])
    assert job["status"] == "completed" and job["progress"]["images_failed"] == 0, job


def _hash_of(settings, document: str, index: int) -> str:
    meta = api_client(settings).get(f"/api/v1/documents/serpy_db/hotels/{document}").json
    return meta["images"][index - 1]["phash"]


def test_the_hashes_shared_by_the_most_documents_are_listed(make_settings, start_worker,
                                                            image_server) -> None:
    # Given a collection downloaded by a real worker
    settings = make_settings(ENV)
    _collection(settings, image_server)
    start_worker(settings)
    _download(settings)
    no_photo, logo = _hash_of(settings, "h0", 3), _hash_of(settings, "h4", 4)
    assert image_server.hits("/logo.png") == 1

    # When the candidates are asked for (the source collection is gone: it is not read)
    source_db(settings).hotels.drop()
    response = api_client(settings).get("/api/v1/placeholders/serpy_db/hotels?top=5")

    # Then the "no photo" image (5 documents, 5 URLs) comes first, the logo (3 documents,
    # one URL) second; photos (one document each) and the blank frame are not listed
    assert response.status_code == 200, response.json
    body = response.json
    assert (body["database"], body["collection"], body["scanned"]) == ("serpy_db", "hotels", 7)
    assert [(h["phash"], h["documents"], h["known"]) for h in body["hashes"]] == [
        (no_photo, 5, False), (logo, 3, False)]
    first = body["hashes"][0]["examples"]
    assert len(first) == 5 and {e["file"] for e in first} == {"original/img_003.png"}
    assert {e["document_id"] for e in first} == {"h0", "h1", "h2", "h3", "h4"}

    # A second run of the collection (new rows for the same documents) counts each once,
    # and a configured hash is flagged known
    source_db(settings).hotels.drop()
    _collection(settings, image_server)
    _download(settings)
    known = make_settings({**ENV, "PLACEHOLDER_HASHES": no_photo})
    again = api_client(known).get("/api/v1/placeholders/serpy_db/hotels?top=1").json
    assert again["scanned"] == 7
    assert [(h["phash"], h["documents"], h["known"]) for h in again["hashes"]] == [
        (no_photo, 5, True)]
    # scan bounds the documents looked at (the newest first)
    assert api_client(settings).get(
        "/api/v1/placeholders/serpy_db/hotels?scan=2").json["scanned"] == 2


def test_bad_names_and_parameters_are_refused(make_settings) -> None:
    client = api_client(make_settings(ENV))
    for path in ("/api/v1/placeholders/serpy_db/ho%24tels", "/api/v1/placeholders/a%20b/c",
                 "/api/v1/placeholders/serpy_db/hotels?top=0",
                 "/api/v1/placeholders/serpy_db/hotels?scan=x"):
        response = client.get(path)
        assert response.status_code == 400 and response.json["error"]["code"] == "invalid_request"
    empty = client.get("/api/v1/placeholders/serpy_db/nothing_here?top=100000").json
    assert (empty["scanned"], empty["hashes"]) == (0, [])
    assert client.get("/api/v1/placeholders/serpy_db/hotels",
                      headers={"X-API-Key": "wrong-key-000000"}).status_code == 401


def test_the_command_lists_them_too(make_settings, start_worker, image_server) -> None:
    settings = make_settings(ENV)
    _collection(settings, image_server)
    start_worker(settings)
    _download(settings)
    no_photo, logo = _hash_of(settings, "h0", 3), _hash_of(settings, "h4", 4)
    server = make_server("127.0.0.1", free_port(), create_app(settings), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "PYTHONPATH": str(REPO), "API_KEY": KEY,
           "IMAGES_SERVICE_URL": f"http://127.0.0.1:{server.server_port}"}
    try:
        done = subprocess.run(service_command("placeholders", "serpy_db", "hotels", "--top", "5"),
                              env=env, capture_output=True, text=True, timeout=90)
        as_json = subprocess.run(service_command("placeholders", "serpy_db", "hotels", "--json"),
                                 env=env, capture_output=True, text=True, timeout=90)
    finally:
        server.shutdown()

    # Piped: one tab-separated line per hash, no header
    assert done.returncode == 0, done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert [line[:3] for line in lines] == [[no_photo, "5", "-"], [logo, "3", "-"]]
    assert sorted(lines[0][3].split()) == [f"h{i}:original/img_003.png" for i in range(5)]
    assert as_json.returncode == 0 and f'"phash": "{no_photo}"' in as_json.stdout
