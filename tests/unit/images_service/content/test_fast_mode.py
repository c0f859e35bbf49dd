"""IMAGE_VALIDATION=fast and §18: nothing decoded, nothing hashed, unless PERCEPTUAL_HASH."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from images_service.content import phash
from images_service.validation import core, validate_image
from tests.support.scenes import FORMATS, scene, settings, write

FAST = settings(IMAGE_VALIDATION="fast")
FAST_HASHED = settings(IMAGE_VALIDATION="fast", PERCEPTUAL_HASH="true")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every decode and every hash made through validation."""
    seen: list[str] = []
    real_decode, real_facts = core._decode, phash.content_facts
    monkeypatch.setattr(core, "_decode", lambda image: seen.append("decode") or real_decode(image))
    monkeypatch.setattr(core, "content_facts",
                        lambda *a, **k: seen.append("hash") or real_facts(*a, **k))
    return seen


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_fast_mode_without_perceptual_hash_decodes_and_hashes_nothing(
        tmp_path: Path, fmt: str, calls: list[str]) -> None:
    blank = write(tmp_path, "blank", Image.new("RGB", (300, 200), (255, 255, 255)), fmt)
    info = validate_image(blank, FAST)
    assert calls == []
    assert (info.phash, info.placeholder) == (None, None)  # blank needs the pixels
    # tiny needs only the header: it is still told.
    spacer = write(tmp_path, "spacer", Image.new("RGB", (1, 1)), fmt)
    assert validate_image(spacer, FAST).placeholder == "tiny"
    assert calls == []


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_fast_mode_with_perceptual_hash_decodes_once_and_hashes_like_full(
        tmp_path: Path, fmt: str, calls: list[str]) -> None:
    path = write(tmp_path, "photo", scene(7, (400, 300)), fmt)
    info = validate_image(path, FAST_HASHED)
    assert calls == ["decode", "hash"]
    assert info == validate_image(path, settings())
    blank = write(tmp_path, "blank", Image.new("RGB", (300, 200), (255, 255, 255)), fmt)
    assert validate_image(blank, FAST_HASHED).placeholder == "blank"


def test_full_mode_decodes_once_and_hashes(tmp_path: Path, calls: list[str]) -> None:
    info = validate_image(write(tmp_path, "photo", scene(8), "PNG"), settings())
    assert calls == ["decode", "hash"] and info.phash is not None
