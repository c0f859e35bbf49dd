"""Rendering real files: orientation, colour modes, alpha, ICC, animations, sizes, encoders."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from PIL import Image

from images_service.errors import DownloadError
from images_service.processing import render
from images_service.processing.encoders import ENCODERS, Encoder
from images_service.processing.render import (
    RenderedVariant,
    VariantFailure,
    render_variants,
    validate_and_render,
)
from images_service.processing.specs import VariantSpec
from tests.unit.images_service.processing.factories import (
    BLUE,
    GREEN,
    RED,
    WHITE,
    corners,
    frames,
    near,
    open_bytes,
    photo,
    save,
    settings,
    srgb_profile,
    swapped_primaries_profile,
    transparent_palette,
    variant,
    with_orientation,
)

SETTINGS = settings()
#: Big enough to keep every test image unscaled; png so the pixels read back exactly.
AS_IS = variant("as_is:10000x10000:fit:png")


def one(source: Path | bytes, spec: VariantSpec) -> RenderedVariant:
    """Render one variant, asserting it was made."""
    source = io.BytesIO(source) if isinstance(source, bytes) else source
    (result,) = render_variants(source, SETTINGS, [spec])
    assert isinstance(result, RenderedVariant), result
    return result


def corner_colours(image: Image.Image, inset_px: int = 4) -> dict[str, tuple[int, ...]]:
    w, h = image.size
    at = {"tl": (inset_px, inset_px), "tr": (w - 1 - inset_px, inset_px),
          "bl": (inset_px, h - 1 - inset_px), "br": (w - 1 - inset_px, h - 1 - inset_px)}
    return {name: image.convert("RGB").getpixel(xy) for name, xy in at.items()}


# Stored pixels: red top-left, green top-right of a 64×48 image. Where EXIF orientation N
# must put them (and whether the displayed image is 48×64).
ORIENTATIONS = {
    1: ("tl", "tr", False), 2: ("tr", "tl", False), 3: ("br", "bl", False),
    4: ("bl", "br", False), 5: ("tl", "bl", True), 6: ("tr", "br", True),
    7: ("br", "tr", True), 8: ("bl", "tl", True),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(orientation: int) -> None:
    red_at, green_at, swaps = ORIENTATIONS[orientation]
    source = io.BytesIO(with_orientation(corners((64, 48)), orientation))
    made, jpeg = render_variants(source, SETTINGS, [AS_IS, variant("j:100x100:fit:jpeg")])
    assert (made.width, made.height) == ((48, 64) if swaps else (64, 48))
    assert 0x0112 not in open_bytes(jpeg.data).getexif()  # never rotated twice
    colours = corner_colours(open_bytes(made.data))
    assert near(colours[red_at], RED) and near(colours[green_at], GREEN)
    others = set(colours) - {red_at, green_at}
    assert all(near(colours[c], BLUE) for c in others)


def test_orientation_with_dct_scaling_keeps_sizes_exact(tmp_path: Path) -> None:
    # Given a 2048×1024 JPEG shown rotated (orientation 6: 1024×2048 upright)
    path = tmp_path / "big.jpg"
    path.write_bytes(with_orientation(corners((2048, 1024), block_px=256), 6))
    seen: list[int] = []
    original = render._render_decoded
    render._render_decoded = lambda dec, vs: seen.append(dec.reduction) or original(dec, vs)
    try:
        info, (thumb,) = validate_and_render(path, SETTINGS, [variant("t:320x320:fit:png")])
    finally:
        render._render_decoded = original
    # Then it was decoded at 1/4 (the largest DCT scale still >= 160×320 upright), and the
    # variant has the exact size computed on the full-size original, upright.
    assert seen == [4]
    assert (info.width, info.height) == (2048, 1024)
    assert (thumb.width, thumb.height) == (160, 320)
    colours = corner_colours(open_bytes(thumb.data), inset_px=10)
    assert near(colours["tr"], RED) and near(colours["br"], GREEN)


def test_validation_alone_still_decodes_jpeg_at_one_eighth(tmp_path: Path) -> None:
    path = save(photo((1024, 768)), tmp_path / "p.jpg", "JPEG")
    seen: list[int] = []
    original = render._render_decoded
    render._render_decoded = lambda dec, vs: seen.append(dec.reduction) or original(dec, vs)
    try:
        validate_and_render(path, SETTINGS, [])
        validate_and_render(path, SETTINGS, [variant("big:1024x1024:fit:jpeg")])
        validate_and_render(path, SETTINGS, [variant("s:64x64:cover:jpeg"),
                                             variant("m:400x300:fit:jpeg")])
    finally:
        render._render_decoded = original
    assert seen == [8, 1, 2]


@pytest.mark.parametrize(
    ("image_size", "spec", "output"),
    [
        ((1024, 768), "t:320x320:fit:webp:80", (320, 240)),
        ((1024, 768), "t:320x320:cover:jpeg", (320, 320)),
        ((1024, 768), "t:640x360:cover:png", (640, 360)),
        ((300, 200), "t:640x360:fit:jpeg", (300, 200)),  # never enlarged
        ((300, 200), "t:640x360:cover:webp", (300, 169)),  # cropped at its own scale
        ((1, 1), "t:320x320:fit:png", (1, 1)),
        ((1, 1), "t:320x180:cover:jpeg", (1, 1)),
        ((10000, 10), "t:320x320:fit:webp", (320, 1)),
        ((10000, 10), "t:320x320:cover:png", (10, 10)),
    ],
)
def test_sizes_are_exact(tmp_path: Path, image_size: tuple[int, int], spec: str,
                         output: tuple[int, int]) -> None:
    path = save(photo(image_size), tmp_path / "in.png", "PNG")
    made = one(path, variant(spec))
    assert (made.width, made.height) == output
    assert open_bytes(made.data).size == output


@pytest.mark.parametrize(("fmt", "pillow", "ext", "ctype"), [
    ("jpeg", "JPEG", ".jpg", "image/jpeg"), ("webp", "WEBP", ".webp", "image/webp"),
    ("png", "PNG", ".png", "image/png")])
def test_each_format_is_what_it_says(tmp_path: Path, fmt: str, pillow: str, ext: str,
                                     ctype: str) -> None:
    path = save(photo((400, 300)), tmp_path / "in.jpg", "JPEG")
    made = one(path, variant(f"v:200x200:fit:{fmt}:70"))
    assert (made.format, made.extension, made.content_type) == (pillow, ext, ctype)
    assert open_bytes(made.data).format == pillow
    assert made.sha256 == hashlib.sha256(made.data).hexdigest()
    assert made.size_bytes == len(made.data)
    assert made.spec == variant(f"v:200x200:fit:{fmt}:70").spec
    assert one(path, variant(f"v:200x200:fit:{fmt}:70")).data == made.data  # deterministic


def test_jpeg_quality_reaches_the_encoder(tmp_path: Path) -> None:
    path = save(photo((400, 300)), tmp_path / "in.png", "PNG")
    low, high = (one(path, variant(f"v:200x200:fit:jpeg:{q}")) for q in (20, 95))
    # Quantization tables scale with quality: the DC step of q=20 is coarser.
    assert open_bytes(low.data).quantization[0][0] > open_bytes(high.data).quantization[0][0]
    assert low.size_bytes < high.size_bytes
    default = one(path, variant("v:200x200:fit:jpeg"))
    assert default.data == one(path, variant("v:200x200:fit:jpeg:85")).data


def test_webp_quality_reaches_the_encoder(tmp_path: Path) -> None:
    path = save(photo((400, 300)), tmp_path / "in.png", "PNG")
    sizes = [one(path, variant(f"v:200x200:fit:webp:{q}")).size_bytes for q in (10, 50, 95)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[2]


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = save(Image.new("CMYK", (80, 60), (0, 255, 255, 0)), tmp_path / "c.jpg", "JPEG")
    for spec in ("v:40x40:fit:jpeg", "v:40x40:fit:webp", "v:40x40:fit:png"):
        image = open_bytes(one(path, variant(spec)).data)
        assert image.mode == "RGB" and near(image.getpixel((10, 10)), RED)


def test_progressive_jpeg(tmp_path: Path) -> None:
    path = save(photo((1024, 768)), tmp_path / "p.jpg", "JPEG", progressive=True)
    info, (made,) = validate_and_render(path, SETTINGS, [variant("t:320x320:fit:webp:80")])
    assert info.format == "JPEG" and (made.width, made.height) == (320, 240)


def test_truncated_original_fails_validation_and_makes_nothing(tmp_path: Path) -> None:
    data = (save(photo((512, 384)), tmp_path / "p.jpg", "JPEG")).read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DownloadError) as raised:
        validate_and_render(path, SETTINGS, [variant("t:320x320:fit:webp")])
    assert raised.value.code == "corrupt_image"


@pytest.mark.parametrize("source_format", ["PNG", "GIF"])
def test_palette_transparency_kept_for_webp_png_flattened_on_white_for_jpeg(
    tmp_path: Path, source_format: str
) -> None:
    path = save(transparent_palette(), tmp_path / "t.img", source_format, transparency=1)
    for fmt in ("png", "webp"):
        image = open_bytes(one(path, variant(f"v:40x40:fit:{fmt}:100")).data)
        assert image.mode == "RGBA"
        assert image.getpixel((30, 20))[3] == 0 and near(image.getpixel((5, 20)), (*RED, 255))
    jpeg = open_bytes(one(path, variant("v:40x40:fit:jpeg:95")).data)
    assert jpeg.mode == "RGB"
    assert near(jpeg.getpixel((30, 20)), WHITE) and near(jpeg.getpixel((5, 20)), RED)


def test_rgba_alpha_kept_and_opaque_rgba_drops_alpha(tmp_path: Path) -> None:
    half = Image.new("RGBA", (40, 40), (*GREEN, 255))
    half.paste((0, 0, 0, 0), (0, 0, 20, 40))
    image = open_bytes(one(save(half, tmp_path / "a.png", "PNG"), variant("v:40x40:fit:webp")).data)
    assert image.mode == "RGBA" and image.getpixel((5, 5))[3] == 0
    opaque = save(Image.new("RGBA", (40, 40), (*GREEN, 255)), tmp_path / "o.png", "PNG")
    assert open_bytes(one(opaque, variant("v:40x40:fit:png")).data).mode == "RGB"


def test_la_keeps_alpha_as_rgba(tmp_path: Path) -> None:
    la = Image.new("LA", (40, 40), (100, 255))
    la.paste((0, 0), (20, 0, 40, 40))
    path = save(la, tmp_path / "la.png", "PNG")
    image = open_bytes(one(path, variant("v:40x40:fit:png")).data)
    assert image.mode == "RGBA"
    assert image.getpixel((5, 5)) == (100, 100, 100, 255) and image.getpixel((30, 5))[3] == 0
    jpeg = open_bytes(one(path, variant("v:40x40:fit:jpeg:95")).data)
    assert near(jpeg.getpixel((30, 5)), WHITE) and near(jpeg.getpixel((5, 5)), (100,) * 3, 8)


@pytest.mark.parametrize("source_format", ["PNG", "TIFF"])
def test_16_bit_grey_is_scaled_not_clipped(tmp_path: Path, source_format: str) -> None:
    grey16 = Image.new("I;16", (40, 40), 40000)  # 40000 / 256 = 156.25
    path = save(grey16, tmp_path / "g.img", source_format)
    assert Image.open(path).mode == "I;16"
    image = open_bytes(one(path, variant("v:40x40:fit:png")).data)
    assert image.mode == "RGB" and image.getpixel((3, 3)) == (156, 156, 156)


def test_float_tiff_is_scaled(tmp_path: Path) -> None:
    path = save(Image.new("F", (20, 20), 0.5), tmp_path / "f.tif", "TIFF")
    image = open_bytes(one(path, variant("v:20x20:fit:png")).data)
    assert near(image.getpixel((3, 3)), (127.5,) * 3, 1)  # 0.5 of 0-1 → 127.5 of 0-255


def test_rgb_tiff(tmp_path: Path) -> None:
    path = save(photo((300, 200)), tmp_path / "p.tif", "TIFF", compression="tiff_lzw")
    info, (made,) = validate_and_render(path, SETTINGS, [variant("v:150x150:cover:jpeg")])
    assert info.format == "TIFF" and (made.width, made.height) == (150, 150)


@pytest.mark.parametrize("source_format", ["GIF", "WEBP"])
def test_animation_gives_its_first_frame(tmp_path: Path, source_format: str) -> None:
    first, *rest = frames([RED, BLUE, GREEN])
    path = tmp_path / "anim.img"
    first.save(path, source_format, save_all=True, append_images=rest, duration=100, loop=0)
    assert getattr(Image.open(path), "n_frames", 1) == 3
    image = open_bytes(one(path, variant("v:20x20:fit:png")).data)
    assert image.size == (20, 15) and near(image.getpixel((10, 7)), RED, 12)


def test_icc_profile_is_converted_to_srgb(tmp_path: Path) -> None:
    # Red pixels tagged with a profile whose red and green are swapped are green in sRGB.
    path = save(Image.new("RGB", (40, 40), RED), tmp_path / "icc.png", "PNG",
                icc_profile=swapped_primaries_profile())
    for fmt in ("png", "jpeg", "webp"):
        image = open_bytes(one(path, variant(f"v:20x20:fit:{fmt}:95")).data)
        assert near(image.getpixel((10, 10)), GREEN), fmt
        assert "icc_profile" not in image.info  # sRGB, untagged: the web's default


def test_icc_profile_keeps_alpha(tmp_path: Path) -> None:
    path = save(Image.new("RGBA", (40, 40), (*RED, 128)), tmp_path / "a.png", "PNG",
                icc_profile=swapped_primaries_profile())
    image = open_bytes(one(path, variant("v:20x20:fit:png")).data)
    assert image.mode == "RGBA" and near(image.getpixel((10, 10)), (*GREEN, 128), 2)


@pytest.mark.parametrize(("mode", "profile"), [("RGB", srgb_profile()), ("L", srgb_profile()),
                                               ("RGB", b"not a profile")])
def test_srgb_mismatched_or_broken_profiles_leave_pixels_alone(
    tmp_path: Path, mode: str, profile: bytes
) -> None:
    colour = RED if mode == "RGB" else 90
    path = save(Image.new(mode, (40, 40), colour), tmp_path / "p.png", "PNG", icc_profile=profile)
    image = open_bytes(one(path, variant("v:20x20:fit:png")).data)
    assert image.getpixel((10, 10)) == (RED if mode == "RGB" else (90, 90, 90))


def test_a_failing_variant_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(Encoder):
        name, pillow_format, extension, content_type = "broken", "X", ".x", "image/x"
        uses_quality, keeps_alpha = False, True

        def _save(self, image: Image.Image, buffer: io.BytesIO, quality: int) -> None:
            raise OSError("encoder exploded")

    monkeypatch.setitem(ENCODERS, "broken", Broken())
    path = save(photo((100, 80)), tmp_path / "p.png", "PNG")
    specs = [variant("a:50x50:fit:webp"), VariantSpec("b", 50, 50, "fit", "broken", 85),
             variant("c:50x50:cover:jpeg")]
    info, (a, b, c) = validate_and_render(path, SETTINGS, specs)
    assert isinstance(a, RenderedVariant) and isinstance(c, RenderedVariant)
    assert b == VariantFailure("b", "50x50:fit:broken", "encoder exploded", "processing_failed")


@pytest.mark.parametrize(("mode", "value", "rgb"), [
    ("LAB", (128, 128, 128), (119, 119, 119)), ("YCbCr", (128, 128, 128), (128, 128, 128)),
    ("CMYK", (0, 0, 0, 255), (0, 0, 0)), ("1", 1, (255, 255, 255)), ("I", 300, (1, 1, 1))])
def test_other_tiff_modes_become_rgb(tmp_path: Path, mode: str, value: object,
                                     rgb: tuple[int, int, int]) -> None:
    path = save(Image.new(mode, (20, 20), value), tmp_path / "m.tif", "TIFF")
    assert Image.open(path).mode == mode
    image = open_bytes(one(path, variant("v:10x10:fit:png")).data)
    assert image.mode == "RGB" and image.getpixel((5, 5)) == rgb


def test_when_the_original_cannot_be_converted_every_variant_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pillow 13 converts every mode our formats decode to; a mode it could not convert would
    # raise ValueError from working_image, as simulated here.
    def cannot(image: Image.Image) -> Image.Image:
        raise ValueError(f"conversion from {image.mode} to RGB not supported")

    monkeypatch.setattr(render, "working_image", cannot)
    path = save(photo((20, 20)), tmp_path / "p.png", "PNG")
    info, results = validate_and_render(path, SETTINGS, [variant("a:10x10:fit:webp"),
                                                         variant("b:10x10:fit:png")])
    assert info.format == "PNG"  # the image itself is still valid and downloaded
    assert [type(r) for r in results] == [VariantFailure, VariantFailure]
    assert all(r.code == "processing_failed" and "mode RGB" in r.message for r in results)


def test_render_from_a_stored_original_that_is_no_longer_an_image() -> None:
    results = render_variants(io.BytesIO(b"<html>"), SETTINGS, [variant("a:10x10:fit:webp")])
    assert [(r.name, r.code) for r in results] == [("a", "processing_failed")]
    assert "not_an_image" in results[0].message


@pytest.mark.parametrize("orientation", [0, 9, 65535])
def test_a_nonsensical_orientation_is_ignored(orientation: int) -> None:
    made = one(with_orientation(corners((64, 48)), orientation), AS_IS)
    colours = corner_colours(open_bytes(made.data))
    assert (made.width, made.height) == (64, 48)
    assert near(colours["tl"], RED) and near(colours["tr"], GREEN)
