"""Contract §18 end to end, on a real worker: what each image shows, recorded in every
metadata.json (``phash``, ``placeholder``, ``duplicate_of``, the summary's counts), no
variants for placeholders, the metrics counted once per image, and fast mode without
``PERCEPTUAL_HASH`` telling only ``tiny``."""

from __future__ import annotations

import io
import json
import re
import urllib.request

import imagehash
import pytest
from PIL import Image, ImageDraw, ImageFont
from prometheus_client.parser import text_string_to_metric_families

from tests.support.pipeline import api_client, source_db, wait_job
from tests.support.scenes import encode, scene

HEX16 = re.compile(r"^[0-9a-f]{16}$")


def no_photo() -> Image.Image:
    """A "no photo available" placeholder as listing sites serve it: a grey frame, a
    camera-ish drawing and a caption."""
    image = Image.new("RGB", (300, 200), (228, 230, 233))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((110, 50, 190, 110), 10, outline=(150, 155, 160), width=6)
    draw.ellipse((130, 60, 170, 100), outline=(150, 155, 160), width=6)
    draw.text((95, 135), "No photo available", fill=(120, 125, 130),
              font=ImageFont.load_default(size=14))
    return image


PHOTO = scene(1, (480, 360))
#: path -> (bytes, Content-Type): one document's images, in order (index 1 to 6).
IMAGES = {
    "/c/photo.jpg": (encode(PHOTO, "JPEG", quality=90), "image/jpeg"),
    "/c/pixel.gif": (encode(Image.new("RGB", (1, 1), (255, 255, 255)), "GIF"), "image/gif"),
    "/c/blank.png": (encode(Image.new("RGB", (400, 300), (240, 240, 240)), "PNG"), "image/png"),
    "/c/no-photo.png": (encode(no_photo(), "PNG"), "image/png"),
    # The photo again, smaller and re-encoded: a near-duplicate of image 1.
    "/c/photo-small.jpg": (encode(PHOTO.resize((240, 180), Image.Resampling.LANCZOS), "JPEG",
                                  quality=75), "image/jpeg"),
    "/c/other.webp": (encode(scene(2, (480, 360)), "WEBP", quality=80), "image/webp"),
}
#: The placeholder's hash as anyone computes it offline (the imagehash package, full decode).
NO_PHOTO_HASH = str(imagehash.phash(Image.open(io.BytesIO(IMAGES["/c/no-photo.png"][0]))))


def _serve(image_server) -> list[str]:
    for path, (body, content_type) in IMAGES.items():
        image_server.set_response(path, 200, body, {"Content-Type": content_type})
    return [image_server.url(path) for path in IMAGES]


def _run(settings, image_server) -> dict:
    """Download the collection; the test document's metadata.json."""
    _run_collection(settings)
    return _metadata(settings, "serpy_db/hotels/h1-hotel-content")


def _metrics(worker) -> dict[tuple[str, tuple], float]:
    url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    found: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in ("images_placeholders_total", "images_duplicates_total"):
                key = (s.name, tuple(sorted(s.labels.items())))
                found[key] = found.get(key, 0.0) + s.value
    return found


def _document(settings, image_server) -> None:
    db = source_db(settings)
    db.hotels.drop()
    db.hotels.insert_one({"_id": "h1", "name": "Hotel Content", "images": _serve(image_server)})


def test_placeholders_and_duplicates_are_recorded_end_to_end(make_settings, start_worker,
                                                             image_server) -> None:
    # Given full validation, a thumbnail variant, and the "no photo" image's hash configured
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
                              "PROCESSED_VARIANTS": "thumb:64x64:fit:webp:80",
                              "PLACEHOLDER_HASHES": NO_PHOTO_HASH})
    _document(settings, image_server)
    worker = start_worker(settings)

    # When the document is downloaded
    meta = _run(settings, image_server)

    # Then every stored image has its hash, and each record says what it shows
    photo, pixel, blank, known, small, other = meta["images"]
    assert all(HEX16.match(r["phash"]) and r["status"] == "downloaded" for r in meta["images"])
    assert known["phash"] == NO_PHOTO_HASH  # the same hash as imagehash computes offline
    assert (pixel["placeholder"], blank["placeholder"], known["placeholder"]) == (
        "tiny", "blank", "known")
    assert small["duplicate_of"] == 1
    for record in (photo, other, small):
        assert "placeholder" not in record
    for record in (photo, pixel, blank, known, other):
        assert "duplicate_of" not in record
    assert meta["summary"] == {"total": 6, "downloaded": 6, "failed": 0, "skipped": 0,
                               "present": 6, "gone": 0, "placeholders": 3,
                               "duplicates": 1}
    # Placeholders are stored but get no variants; the others (duplicates too) get theirs.
    folder = settings.storage_path / "serpy_db/hotels/h1-hotel-content"
    for record in (pixel, blank, known):
        assert "processed" not in record and (folder / record["file"]).is_file()
    assert sorted(p.name for p in (folder / "processed/thumb").iterdir()) == [
        "img_001.webp", "img_005.webp", "img_006.webp"]
    assert _metrics(worker) == {
        ("images_placeholders_total", (("reason", "blank"),)): 1.0,
        ("images_placeholders_total", (("reason", "known"),)): 1.0,
        ("images_placeholders_total", (("reason", "tiny"),)): 1.0,
        ("images_duplicates_total", ()): 1.0,
    }

    # And a second run (every image skipped) records the same and counts nothing again
    again = _run(settings, image_server)
    assert [r["status"] for r in again["images"]] == ["skipped"] * 6
    strip = ("status", "attempts")
    assert [{k: v for k, v in r.items() if k not in strip} for r in again["images"]] == [
        {k: v for k, v in r.items() if k not in strip} for r in meta["images"]]
    assert again["summary"]["placeholders"] == 3 and again["summary"]["duplicates"] == 1
    assert sorted(p.name for p in (folder / "processed/thumb").iterdir()) == [
        "img_001.webp", "img_005.webp", "img_006.webp"]
    assert sum(_metrics(worker).values()) == 4.0


def test_a_hash_added_to_placeholder_hashes_applies_to_stored_images(make_settings,
                                                                     start_worker,
                                                                     image_server) -> None:
    # Given the document downloaded with variants and no known placeholder
    env = {"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
           "PROCESSED_VARIANTS": "thumb:64x64:fit:webp:80"}
    settings = make_settings(env)
    _document(settings, image_server)
    worker = start_worker(settings)
    first = _run(settings, image_server)
    assert "placeholder" not in first["images"][3] and "processed" in first["images"][3]
    worker.stop()
    requests = len(image_server.requests)

    # When the operator adds its hash and the collection is run again (no force)
    settings = make_settings({**env, "PLACEHOLDER_HASHES": first["images"][3]["phash"]})
    worker = start_worker(settings, name="worker-known")
    meta = _run(settings, image_server)

    # Then it is a known placeholder without any request, and its variant is gone
    assert len(image_server.requests) == requests
    known = meta["images"][3]
    assert known["status"] == "skipped" and known["placeholder"] == "known"
    assert "processed" not in known
    folder = settings.storage_path / "serpy_db/hotels/h1-hotel-content"
    assert not (folder / "processed/thumb/img_004.webp").exists()
    assert meta["summary"]["placeholders"] == 3
    assert _metrics(worker) == {("images_placeholders_total", (("reason", "known"),)): 1.0,
                                ("images_duplicates_total", ()): 0.0}


def test_fast_mode_without_perceptual_hash_tells_only_tiny(make_settings, start_worker,
                                                           image_server) -> None:
    # Given fast validation, no variants, PERCEPTUAL_HASH off (the default)
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
                              "IMAGE_VALIDATION": "fast", "PLACEHOLDER_HASHES": NO_PHOTO_HASH})
    _document(settings, image_server)
    start_worker(settings)

    meta = _run(settings, image_server)

    # Then nothing was decoded: no hash, no blank, known or duplicate; only tiny (the header)
    assert not any("phash" in r or "duplicate_of" in r for r in meta["images"])
    assert [r.get("placeholder") for r in meta["images"]] == [None, "tiny", None, None, None,
                                                             None]
    assert (meta["summary"]["placeholders"], meta["summary"]["duplicates"]) == (1, 0)


def test_fast_mode_with_perceptual_hash_tells_everything(make_settings, start_worker,
                                                         image_server) -> None:
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
                              "IMAGE_VALIDATION": "fast", "PERCEPTUAL_HASH": "true",
                              "PLACEHOLDER_HASHES": NO_PHOTO_HASH})
    _document(settings, image_server)
    start_worker(settings)

    meta = _run(settings, image_server)

    assert all(HEX16.match(r["phash"]) for r in meta["images"])
    assert [r.get("placeholder") for r in meta["images"]] == [None, "tiny", "blank", "known",
                                                             None, None]
    assert meta["images"][4]["duplicate_of"] == 1
    assert (meta["summary"]["placeholders"], meta["summary"]["duplicates"]) == (3, 1)


def test_records_without_a_hash_get_one_when_their_variants_are_made(make_settings,
                                                                     start_worker,
                                                                     image_server) -> None:
    # Given records made without any decode (fast mode, no variants: as before §18)
    env = {"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
           "IMAGE_VALIDATION": "fast"}
    settings = make_settings(env)
    _document(settings, image_server)
    worker = start_worker(settings)
    assert not any("phash" in r for r in _run(settings, image_server)["images"])
    worker.stop()
    requests = len(image_server.requests)

    # When variants are configured and the collection runs again (no request: skipped)
    settings = make_settings({**env, "PROCESSED_VARIANTS": "thumb:64x64:fit:webp:80"})
    start_worker(settings, name="worker-variants")
    meta = _run(settings, image_server)

    # Then the decode that makes the variants records the hashes, blank and duplicate too
    # (a tiny image, told from its record, gets no variant, so it is not decoded: no hash)
    assert len(image_server.requests) == requests
    assert [bool(HEX16.match(r.get("phash", ""))) for r in meta["images"]] == [
        True, False, True, True, True, True]
    assert [r.get("placeholder") for r in meta["images"]] == [None, "tiny", "blank", None,
                                                             None, None]
    assert meta["images"][4]["duplicate_of"] == 1
    folder = settings.storage_path / "serpy_db/hotels/h1-hotel-content"
    assert sorted(p.name for p in (folder / "processed/thumb").iterdir()) == [
        "img_001.webp", "img_004.webp", "img_005.webp", "img_006.webp"]


@pytest.mark.parametrize("variants", ["", "thumb:64x64:fit:webp:80"])
def test_a_copy_from_another_document_carries_what_the_image_shows(make_settings,
                                                                   start_worker,
                                                                   image_server,
                                                                   variants) -> None:
    # Given two documents naming the same blank frame and photo (fetched once, §16); without
    # variants the copy is not decoded at all: what it shows comes from the URL index
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
                              "PROCESSED_VARIANTS": variants})
    urls = _serve(image_server)
    db = source_db(settings)
    db.hotels.drop()
    db.hotels.insert_one({"_id": "h1", "name": "First", "images": [urls[2], urls[0]]})
    start_worker(settings)
    _run_collection(settings)
    db.hotels.insert_one({"_id": "h2", "name": "Second", "images": [urls[0], urls[2]]})

    # When the second is downloaded
    _run_collection(settings)

    # Then its images are copies (no second request) recording the same hash and placeholder
    assert image_server.hits("/c/blank.png") == 1 and image_server.hits("/c/photo.jpg") == 1
    first, second = (_metadata(settings, f"serpy_db/hotels/{name}")["images"]
                     for name in ("h1-first", "h2-second"))
    photo, blank = second
    assert "copied_from" in photo and "copied_from" in blank
    assert (photo["phash"], blank["phash"]) == (first[1]["phash"], first[0]["phash"])
    assert blank["placeholder"] == "blank" and "processed" not in blank
    assert "placeholder" not in photo
    assert ("processed" in photo) == bool(variants)


def _run_collection(settings) -> None:
    client = api_client(settings)
    job = wait_job(client, client.post("/api/v1/download/collection/serpy_db/hotels")
                   .json["job_id"])
    assert job["status"] == "completed" and job["progress"]["images_failed"] == 0, job


def _metadata(settings, folder: str) -> dict:
    return json.loads((settings.storage_path / folder / "metadata.json").read_text("utf-8"))


def test_a_copy_made_after_its_hash_became_known_gets_no_variants(make_settings, start_worker,
                                                                  image_server) -> None:
    # Given a photo stored for one document (with its variant) before its hash was configured
    env = {"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
           "PROCESSED_VARIANTS": "thumb:64x64:fit:webp:80"}
    settings = make_settings(env)
    urls = _serve(image_server)
    db = source_db(settings)
    db.hotels.drop()
    db.hotels.insert_one({"_id": "h1", "name": "First", "images": [urls[3]]})
    worker = start_worker(settings)
    _run_collection(settings)
    first = _metadata(settings, "serpy_db/hotels/h1-first")["images"][0]
    assert "placeholder" not in first and "thumb" in first["processed"]
    worker.stop()

    # When its hash is configured and another document naming it is downloaded (a copy)
    settings = make_settings({**env, "PLACEHOLDER_HASHES": first["phash"]})
    start_worker(settings, name="worker-known")
    db.hotels.insert_one({"_id": "h2", "name": "Second", "images": [urls[3]]})
    _run_collection(settings)

    # Then the copy is a known placeholder from the start: no variant is made for it
    copy = _metadata(settings, "serpy_db/hotels/h2-second")["images"][0]
    assert "copied_from" in copy and copy["placeholder"] == "known"
    assert "processed" not in copy
    assert not (settings.storage_path / "serpy_db/hotels/h2-second/processed/thumb").exists()
    assert image_server.hits("/c/no-photo.png") == 1
