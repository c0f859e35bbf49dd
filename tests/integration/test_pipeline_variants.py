"""Derived images through the whole pipeline, on both storage backends (contract §5, §10, §12).

Real worker subprocesses, Redis, nx-27017, the loopback image server (serving the images
the processing unit tests build) and, for ``s3``, a real SeaweedFS bucket. A worker's
settings are fixed at start, so a changed ``PROCESSED_VARIANTS`` is a new worker (the old
one stopped first). After every step the tree holds exactly the layout: the files
metadata.json names, nothing else (no temporary file, no pending upload).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import pytest
from PIL import Image, ImageDraw

from images_service.download.engine import download_document
from images_service.processing.encoders import ENCODERS, Encoder
from images_service.processing.specs import VariantSpec
from tests.support.pipeline import api_client, source_db, wait_job
from tests.support.s3_layout import assert_only_layout, object_versions, unwritable_path
from tests.unit.images_service.processing.factories import (
    BLUE,
    GREEN,
    RED,
    WHITE,
    corners,
    frames,
    near,
    photo,
    transparent_palette,
    with_orientation,
)

VARIANTS = "thumb:320x320:fit:webp:80,card:64x36:cover:jpeg:85"
THUMB_SPEC, CARD_SPEC = "320x320:fit:webp:80", "64x36:cover:jpeg:85"
FOLDER = "serpy_db/hotels/h1-hotel-ritz"


def encode(image: Image.Image, image_format: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, image_format, **params)
    return out.getvalue()


def marked(image: Image.Image, ink: Any) -> Image.Image:
    """``image`` with a block of ``ink`` in its top-left corner: a flat colour alone is a
    ``blank`` placeholder (contract §18), which gets no variants."""
    ImageDraw.Draw(image).rectangle((0, 0, image.width // 4, image.height // 4), fill=ink)
    return image


def animated_gif() -> bytes:
    first, *rest = (marked(frame, (0, 0, 0)) for frame in frames([RED, BLUE, GREEN]))
    return encode(first, "GIF", save_all=True, append_images=rest, duration=100, loop=0)


#: path on the image server -> (body, original extension, thumb size, card size).
IMAGES: dict[str, tuple[bytes, str, tuple[int, int], tuple[int, int]]] = {
    # Stored 640×480, red block top-left; EXIF 6 shows it 480×640 with red top-right.
    "/v/exif6.jpg": (with_orientation(corners((640, 480), 80), 6), ".jpg", (240, 320), (64, 36)),
    "/v/cmyk.jpg": (encode(marked(Image.new("CMYK", (80, 60), (0, 255, 255, 0)), (0, 0, 0, 255)),
                           "JPEG"), ".jpg", (80, 60), (64, 36)),
    "/v/palette.png": (encode(transparent_palette(), "PNG", transparency=1), ".png", (40, 40), (40, 23)),
    "/v/anim.gif": (animated_gif(), ".gif", (40, 30), (40, 23)),
    # A placeholder (one colour; tiny too at the default MIN_IMAGE_SIDE): stored, no variants
    # (contract §18).
    "/v/dot.png": (encode(Image.new("RGB", (1, 1), GREEN), "PNG"), ".png", (1, 1), (1, 1)),
    "/v/strip.png": (encode(photo((10000, 10)), "PNG"), ".png", (320, 1), (18, 10)),
}


@dataclass
class Tree:
    """One backend's image tree, read with the test's own means (never the service's)."""

    env: dict[str, str]
    keys: Callable[[], list[str]]  #: every key; asserts nothing else is there
    read: Callable[[str], bytes]
    versions: Callable[[], dict[str, Any]]  #: key -> what changes when it is written again
    content_type: Callable[[str], str | None]


@pytest.fixture(params=["filesystem", "s3"])
def tree(request: pytest.FixtureRequest, tmp_path: Path) -> Tree:
    common = {"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
              "RETRY_BACKOFF_MIN_MS": "50", "RETRY_BACKOFF_MAX_MS": "1000",
              # The 10-pixel strip is a renderer edge case here, not a tiny placeholder.
              "MIN_IMAGE_SIDE": "0"}
    if request.param == "filesystem":
        root = tmp_path / "images"

        def fs_keys() -> list[str]:
            everything = [p for p in root.rglob("*") if p.is_file()]
            assert [p for p in everything if p.name.startswith(".")] == []  # no temp file
            return sorted(p.relative_to(root).as_posix() for p in everything)

        def fs_versions() -> dict[str, Any]:
            # A write is a rename of a new file: a new inode.
            return {k: (root / k).stat().st_ino for k in fs_keys()}

        return Tree({**common, "STORAGE_PATH": str(root)}, fs_keys,
                    lambda key: (root / key).read_bytes(), fs_versions, lambda key: None)
    request.getfixturevalue("aws_credentials")
    server = request.getfixturevalue("seaweedfs")
    bucket = request.getfixturevalue("s3_bucket")
    client = server.client()
    return Tree(
        {**common, "STORAGE_BACKEND": "s3", "S3_BUCKET": bucket,
         "S3_ENDPOINT_URL": server.endpoint_url,
         # Below a regular file: any write to the local tree would fail.
         "STORAGE_PATH": str(unwritable_path(tmp_path / "local"))},
        lambda: assert_only_layout(server, bucket),
        lambda key: client.get_object(Bucket=bucket, Key=key)["Body"].read(),
        lambda: object_versions(server, bucket),
        lambda key: client.head_object(Bucket=bucket, Key=key)["ContentType"],
    )


def serve(image_server, paths) -> list[str]:
    for path in paths:
        image_server.set_response(path, 200, IMAGES[path][0], {"Content-Type": "image/x"})
    return [image_server.url(path) for path in paths]


def insert(settings, urls) -> None:
    hotels = source_db(settings).hotels
    hotels.drop()
    hotels.insert_one({"_id": "h1", "name": "Hotel Ritz", "images": urls})


def document(tree: Tree, make_settings, image_server, paths):
    """Settings without variants and an api client, for one document serving ``paths``."""
    base = make_settings(tree.env)
    insert(base, serve(image_server, paths))
    return base, api_client(base)


def run(client, body=None) -> dict[str, Any]:
    response = client.post("/api/v1/download/collection/serpy_db/hotels", json=body or {})
    job = wait_job(client, response.json["job_id"], timeout_s=90)
    assert job["status"] == "completed", job
    return job


def metadata(tree: Tree) -> dict[str, Any]:
    return json.loads(tree.read(f"{FOLDER}/metadata.json"))


def assert_exact_layout(tree: Tree) -> dict[str, Any]:
    """The tree is metadata.json plus exactly the files its records name; returns it."""
    meta = metadata(tree)
    named = {f"{FOLDER}/metadata.json"}
    for record in meta["images"]:
        if record.get("file"):
            named.add(f"{FOLDER}/{record['file']}")
        for entry in (record.get("processed") or {}).values():
            if "file" in entry:
                named.add(f"{FOLDER}/{entry['file']}")
    assert set(tree.keys()) == named
    return meta


def check_entry(tree: Tree, entry: dict[str, Any], *, name: str, index: int, spec: str,
                ext: str, size: tuple[int, int]) -> Image.Image:
    """A variant's record matches its stored file; returns the decoded image."""
    image_format = {".webp": "WEBP", ".jpg": "JPEG", ".png": "PNG"}[ext]
    assert entry["file"] == f"processed/{name}/img_{index:03d}{ext}"
    assert (entry["spec"], entry["format"]) == (spec, image_format)
    assert (entry["width"], entry["height"]) == size
    data = tree.read(f"{FOLDER}/{entry['file']}")
    assert (len(data), entry["sha256"]) == (entry["bytes"], hashlib.sha256(data).hexdigest())
    image = Image.open(io.BytesIO(data))
    image.load()
    assert (image.format, image.size) == (image_format, size)
    content_type = tree.content_type(f"{FOLDER}/{entry['file']}")  # None: the filesystem
    assert content_type in (None, f"image/{image_format.lower()}")
    return image


def rgb(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    return image.convert("RGBA").getpixel(xy)


def test_every_kind_of_image_gets_exact_variants(
        tree, make_settings, start_worker, image_server):
    settings = make_settings({**tree.env, "PROCESSED_VARIANTS": VARIANTS})
    paths = list(IMAGES)
    insert(settings, serve(image_server, paths))
    start_worker(settings)
    client = api_client(settings)

    job = run(client)
    assert (job["progress"]["images_downloaded"], job["progress"]["images_failed"]) == (6, 0)
    meta = assert_exact_layout(tree)
    thumbs: dict[str, Image.Image] = {}
    cards: dict[str, Image.Image] = {}
    for index, (path, record) in enumerate(zip(paths, meta["images"]), start=1):
        _, ext, thumb_size, card_size = IMAGES[path]
        assert record["status"] == "downloaded"
        assert record["file"] == f"original/img_{index:03d}{ext}"
        if path == "/v/dot.png":  # a placeholder
            assert "processed" not in record
            continue
        assert set(record["processed"]) == {"thumb", "card"}
        thumbs[path] = check_entry(tree, record["processed"]["thumb"], name="thumb", index=index,
                                   spec=THUMB_SPEC, ext=".webp", size=thumb_size)
        cards[path] = check_entry(tree, record["processed"]["card"], name="card", index=index,
                                  spec=CARD_SPEC, ext=".jpg", size=card_size)
    assert len(tree.keys()) == 1 + 6 + 5 * 2

    # EXIF 6: red only the right rotation puts top-right, green bottom-right, blue elsewhere.
    exif = thumbs["/v/exif6.jpg"]
    assert near(rgb(exif, (235, 4))[:3], RED) and near(rgb(exif, (235, 315))[:3], GREEN)
    assert near(rgb(exif, (4, 4))[:3], BLUE) and near(rgb(exif, (4, 315))[:3], BLUE)
    # CMYK becomes RGB red; the palette's transparency is kept in webp, flattened in jpeg.
    assert cards["/v/cmyk.jpg"].mode == "RGB" and near(rgb(cards["/v/cmyk.jpg"], (30, 18)), (*RED, 255))
    palette = thumbs["/v/palette.png"]
    assert palette.mode == "RGBA" and rgb(palette, (30, 20))[3] == 0
    assert near(rgb(palette, (5, 20)), (*RED, 255))
    assert near(rgb(cards["/v/palette.png"], (30, 11))[:3], WHITE)
    # An animation gives its first frame (red), not blue or green.
    assert near(rgb(thumbs["/v/anim.gif"], (20, 15))[:3], RED, 12)


def test_backfill_spec_change_removal_and_force_without_requests(
        tree, make_settings, start_worker, image_server):
    paths = ["/v/exif6.jpg", "/v/palette.png"]
    base, client = document(tree, make_settings, image_server, paths)

    def step(variants: str, body: dict[str, Any] | None = None) -> tuple[dict[str, Any], int]:
        """Run a collection job with a new worker configured with ``variants``."""
        worker = start_worker(make_settings({**tree.env, "PROCESSED_VARIANTS": variants}))
        hits_before = image_server.hits()
        job = run(client, body)
        worker.stop()
        return job, image_server.hits() - hits_before

    # Without variants: processed/ stays empty (contract §10), records have no "processed".
    job, requests = step("")
    assert requests == 2 and job["progress"]["images_downloaded"] == 2
    meta = assert_exact_layout(tree)
    assert all("processed" not in r for r in meta["images"])
    assert not [k for k in tree.keys() if "/processed/" in k]

    # Variants configured: made from the stored originals, no request to the image server.
    job, requests = step(VARIANTS)
    assert requests == 0 and job["progress"]["images_skipped"] == 2
    meta = assert_exact_layout(tree)
    for index, record in enumerate(meta["images"], start=1):
        assert record["status"] == "skipped"
        check_entry(tree, record["processed"]["thumb"], name="thumb", index=index,
                    spec=THUMB_SPEC, ext=".webp", size=IMAGES[paths[index - 1]][2])
    versions = tree.versions()

    # thumb's spec changes (and its format, so its extension): re-rendered, the .webp files
    # go; card is current and untouched. Still no request.
    time.sleep(1.1)  # S3 LastModified has a 1 s resolution
    job, requests = step("thumb:160x160:fit:png,card:64x36:cover:jpeg:85")
    assert requests == 0
    meta = assert_exact_layout(tree)
    assert check_entry(tree, meta["images"][0]["processed"]["thumb"], name="thumb", index=1,
                       spec="160x160:fit:png", ext=".png", size=(120, 160))
    after = tree.versions()
    cards = [k for k in after if "/processed/card/" in k]
    assert len(cards) == 2 and all(after[k] == versions[k] for k in cards)
    assert not [k for k in after if k.endswith(".webp")]

    # thumb removed from the setting: its files go, card stays.
    job, requests = step("card:64x36:cover:jpeg:85")
    assert requests == 0
    meta = assert_exact_layout(tree)
    assert all(set(r["processed"]) == {"card"} for r in meta["images"])
    assert not [k for k in tree.keys() if "/processed/thumb/" in k]

    # force: every image fetched and every variant made again.
    time.sleep(1.1)
    before = tree.versions()
    job, requests = step(VARIANTS, {"force": True})
    assert requests == 2 and job["progress"]["images_downloaded"] == 2
    meta = assert_exact_layout(tree)
    after = tree.versions()
    assert all(after[k] != before[k] for k in after if "/processed/card/" in k)
    assert all(set(r["processed"]) == {"thumb", "card"} for r in meta["images"])
    assert all(r["processed"]["thumb"]["spec"] == THUMB_SPEC for r in meta["images"])

    # An image that now fails (404 on a forced re-fetch) loses its variants with its original.
    image_server.set_response("/v/palette.png", 404)
    job, _ = step(VARIANTS, {"force": True})
    meta = assert_exact_layout(tree)
    assert meta["images"][1]["status"] == "failed" and "processed" not in meta["images"][1]
    assert not [k for k in tree.keys() if "img_002" in k]


def test_a_variant_that_cannot_be_made_leaves_the_image_stored(
        tree, make_settings, start_worker, image_server):
    # A real failure, with no test seam: the originals were stored under the default pixel
    # limit; a worker with a lower MAX_IMAGE_PIXELS refuses to decode the 100 000-pixel
    # strip, so its variants cannot be made. The image itself stays stored (skipped).
    base, client = document(tree, make_settings, image_server, ["/v/strip.png", "/v/cmyk.jpg"])
    worker = start_worker(base)
    run(client)
    worker.stop()
    start_worker(make_settings({**tree.env, "PROCESSED_VARIANTS": VARIANTS,
                                "MAX_IMAGE_PIXELS": "50000"}))
    job = run(client)
    assert (job["progress"]["images_skipped"], job["progress"]["images_failed"]) == (2, 0)
    meta = assert_exact_layout(tree)
    strip, cmyk = meta["images"]
    assert strip["status"] == "skipped" and strip["file"] == "original/img_001.png"
    for name in ("thumb", "card"):
        error = strip["processed"][name]["error"]
        assert error["code"] == "processing_failed" and "decompression_bomb" in error["message"]
    assert set(cmyk["processed"]) == {"thumb", "card"} and "file" in cmyk["processed"]["card"]
    assert source_db(base).hotels.find_one({"_id": "h1"})["images_download"]["status"] == \
        "completed"


class _Exploding(Encoder):
    """An output format whose encoder always fails: the processing core's own test seam."""

    name, pillow_format, extension, content_type = "exploding", "X", ".x", "image/x"
    uses_quality, keeps_alpha = False, True

    def _save(self, image: Image.Image, buffer: io.BytesIO, quality: int) -> None:
        raise OSError("encoder exploded")


def test_a_variant_failing_in_a_download_is_recorded_and_isolated(
        tree, make_settings, image_server, monkeypatch):
    # No image both passes validation and defeats the renderer (every mode our formats
    # decode to converts, and no spec can exceed an encoder's limits), so a fresh download's
    # variant failure uses the core's registry seam: an extra encoder that raises. It only
    # works in-process, so this runs the engine's own download_document (real fetch, real
    # storage, the same download_image as the worker), not a worker subprocess.
    monkeypatch.setitem(ENCODERS, "exploding", _Exploding())
    settings = make_settings(tree.env)
    settings = replace(settings, processed_variants=(
        VariantSpec("thumb", 320, 320, "fit", "webp", 80),
        VariantSpec("broken", 50, 50, "fit", "exploding", 85)))
    urls = serve(image_server, ["/v/cmyk.jpg"])
    meta = download_document({"_id": "h1", "name": "Hotel Ritz", "images": urls},
                             "serpy_db", "hotels", settings, job_id="j1")
    (record,) = meta["images"]
    assert record["status"] == "downloaded"
    assert record["processed"]["broken"] == {
        "error": {"code": "processing_failed", "message": "encoder exploded"}}
    assert record["processed"]["thumb"]["file"] == "processed/thumb/img_001.webp"
    assert_exact_layout(tree)
    assert sorted(k for k in tree.keys() if "/processed/" in k) == [
        f"{FOLDER}/processed/thumb/img_001.webp"]
