"""The ``processed`` entry of metadata.json, and what a re-download redoes."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from images_service.processing.records import (
    merge_processed,
    plan_variants,
    processed_entries,
    variant_file,
)
from images_service.processing.render import RenderedVariant, VariantFailure, render_variants
from tests.unit.images_service.processing.factories import photo, settings, variant

THUMB = variant("thumb:320x320:fit:webp:80")
CARD = variant("card:640x360:cover:jpeg")


def rendered(name: str, spec: str, ext: str = ".webp", fmt: str = "WEBP") -> RenderedVariant:
    return RenderedVariant(name, spec, fmt, ext, "image/webp", 320, 240, b"x" * 9120, "ab" * 32)


def entry(name: str, spec: str, ext: str = ".webp") -> dict[str, Any]:
    return {"file": f"processed/{name}/img_001{ext}", "format": "WEBP", "width": 320,
            "height": 240, "bytes": 9120, "sha256": "ab" * 32, "spec": spec}


def record(processed: dict[str, Any] | None = None, status: str = "downloaded") -> dict:
    image = {"index": 1, "url": "https://x/a.jpg", "status": status, "file": "original/img_001.jpg"}
    if status == "failed":
        del image["file"]
    if processed is not None:
        image["processed"] = processed
    return image


def test_entries_have_the_contracts_shape() -> None:
    failure = VariantFailure("card", CARD.spec, "cannot convert")
    assert processed_entries("original/img_001.jpg", [rendered("thumb", THUMB.spec), failure]) == {
        "thumb": {"file": "processed/thumb/img_001.webp", "format": "WEBP", "width": 320,
                  "height": 240, "bytes": 9120, "sha256": "ab" * 32,
                  "spec": "320x320:fit:webp:80"},
        "card": {"error": {"code": "processing_failed", "message": "cannot convert"}},
    }


def test_entries_from_real_renders_match_the_files() -> None:
    buffer = io.BytesIO()
    photo((400, 300)).save(buffer, "PNG")
    buffer.seek(0)
    results = render_variants(buffer, settings(), [THUMB, CARD])
    entries = processed_entries("original/img_012.png", results)
    assert entries["card"]["file"] == "processed/card/img_012.jpg"
    for result in results:
        assert isinstance(result, RenderedVariant)
        assert entries[result.name]["bytes"] == len(result.data)
        assert Image.open(io.BytesIO(result.data)).size == (
            entries[result.name]["width"], entries[result.name]["height"])


def test_variant_file_keeps_the_originals_index() -> None:
    assert variant_file("original/img_1234.tif", "thumb", ".png") == "processed/thumb/img_1234.png"


def test_a_fresh_image_needs_every_variant() -> None:
    plan = plan_variants(record(), [THUMB, CARD])
    assert plan.render == (THUMB, CARD) and plan.removed == ()


def test_current_variants_are_left_alone() -> None:
    plan = plan_variants(record({"thumb": entry("thumb", THUMB.spec)}), [THUMB, CARD])
    assert plan.render == (CARD,)


def test_a_changed_spec_is_rendered_again() -> None:
    old = {"thumb": entry("thumb", "320x320:fit:webp:70")}
    assert plan_variants(record(old), [THUMB]).render == (THUMB,)


def test_a_failed_variant_is_tried_again() -> None:
    old = {"thumb": {"error": {"code": "processing_failed", "message": "…"}}}
    assert plan_variants(record(old), [THUMB]).render == (THUMB,)


def test_a_variant_whose_file_is_gone_is_rendered_again() -> None:
    old = {"thumb": entry("thumb", THUMB.spec)}
    asked: list[tuple[str, int]] = []

    def present(file: str, size: int) -> bool:
        asked.append((file, size))
        return False

    assert plan_variants(record(old), [THUMB], present=present).render == (THUMB,)
    assert asked == [("processed/thumb/img_001.webp", 9120)]
    assert plan_variants(record(old), [THUMB], present=lambda f, n: True).render == ()


def test_unconfigured_variants_are_removed_with_their_files() -> None:
    old = {"thumb": entry("thumb", THUMB.spec), "old": entry("old", "10x10:fit:webp:85")}
    image = record(old)
    plan = plan_variants(image, [THUMB])
    assert plan.render == () and plan.removed == ("old",)
    processed, stale = merge_processed(image, [], [THUMB])
    assert processed == {"thumb": old["thumb"]}
    assert stale == ("processed/old/img_001.webp",)


def test_a_format_change_removes_the_old_file() -> None:
    # Given thumb was webp and is now configured as jpeg
    jpeg_thumb = variant("thumb:320x320:fit:jpeg:80")
    image = record({"thumb": entry("thumb", THUMB.spec)})
    assert plan_variants(image, [jpeg_thumb]).render == (jpeg_thumb,)
    new = rendered("thumb", jpeg_thumb.spec, ".jpg", "JPEG")
    processed, stale = merge_processed(image, [new], [jpeg_thumb])
    assert processed["thumb"]["file"] == "processed/thumb/img_001.jpg"
    assert processed["thumb"]["spec"] == "320x320:fit:jpeg:80"
    assert stale == ("processed/thumb/img_001.webp",)


def test_a_same_path_rerender_removes_nothing_but_a_failed_one_does() -> None:
    image = record({"thumb": entry("thumb", "320x320:fit:webp:70")})
    _, stale = merge_processed(image, [rendered("thumb", THUMB.spec)], [THUMB])
    assert stale == ()
    failed = VariantFailure("thumb", THUMB.spec, "boom")
    processed, stale = merge_processed(image, [failed], [THUMB])
    assert processed == {"thumb": {"error": {"code": "processing_failed", "message": "boom"}}}
    assert stale == ("processed/thumb/img_001.webp",)


def test_variants_follow_their_original() -> None:
    old = {"thumb": entry("thumb", THUMB.spec)}
    failed = record(old, status="failed")
    plan = plan_variants(failed, [THUMB])
    assert plan.render == () and plan.removed == ("thumb",)
    assert merge_processed(failed, [], [THUMB]) == ({}, ("processed/thumb/img_001.webp",))
    assert plan_variants(record(old, status="skipped"), [THUMB]).render == ()


def test_placeholders_get_no_variants_and_lose_those_they_had() -> None:
    # Contract §18: an image that is (or became, on a re-run) a placeholder has no variants.
    for status in ("downloaded", "skipped"):
        placeholder = {**record({"thumb": entry("thumb", THUMB.spec)}, status=status),
                       "placeholder": "known"}
        plan = plan_variants(placeholder, [THUMB, CARD])
        assert plan.render == () and plan.removed == ("thumb",)
        assert merge_processed(placeholder, [], [THUMB, CARD]) == (
            {}, ("processed/thumb/img_001.webp",))
    assert plan_variants({**record(), "placeholder": "tiny"}, [THUMB]).render == ()
    # No longer one (PLACEHOLDER_HASHES changed): its variants are made.
    assert plan_variants(record(), [THUMB]).render == (THUMB,)


def test_merge_keeps_the_configured_order() -> None:
    image = record({"card": entry("card", CARD.spec, ".jpg")})
    processed, _ = merge_processed(image, [rendered("thumb", THUMB.spec)], [THUMB, CARD])
    assert list(processed) == ["thumb", "card"]
