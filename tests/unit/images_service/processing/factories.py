"""Small image factories for the processing tests: real files written with Pillow."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageCms, ImageDraw

from images_service.config.settings import Settings, load_settings
from images_service.processing.specs import VariantSpec, parse_variant

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def settings(**env: str) -> Settings:
    return load_settings(env)


def variant(text: str) -> VariantSpec:
    """``thumb:320x320:fit:webp:80`` → its VariantSpec."""
    return parse_variant(text)


def photo(size: tuple[int, int]) -> Image.Image:
    """RGB noise over a gradient: compresses like a photo, not like a flat colour."""
    gradient = Image.linear_gradient("L").resize(size)
    noise = Image.effect_noise(size, 48)
    return Image.merge("RGB", [gradient, noise, Image.blend(gradient, noise, 0.5)])


def corners(size: tuple[int, int], block_px: int = 16) -> Image.Image:
    """Blue image with a red block top-left and a green block top-right (stored pixels)."""
    image = Image.new("RGB", size, BLUE)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, block_px - 1, block_px - 1), fill=RED)
    draw.rectangle((size[0] - block_px, 0, size[0] - 1, block_px - 1), fill=GREEN)
    return image


def save(image: Image.Image, path: Path, image_format: str, **params: object) -> Path:
    image.save(path, image_format, **params)
    return path


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    """``image`` as a JPEG whose EXIF says ``orientation`` (the pixels are not rotated)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def transparent_palette() -> Image.Image:
    """40×40 palette image: left half red, right half transparent (save it with
    ``transparency=1``)."""
    image = Image.new("P", (40, 40), 0)
    image.putpalette([*RED, *BLUE] + [0] * 762)
    image.paste(1, (20, 0, 40, 40))  # right half palette index 1 (blue) …
    image.info["transparency"] = 1  # … which is transparent
    return image


def frames(colours: list[tuple[int, int, int]], size: tuple[int, int] = (40, 30)) -> list:
    return [Image.new("RGB", size, colour) for colour in colours]


def swapped_primaries_profile() -> bytes:
    """An RGB ICC profile whose red and green colorants are swapped (and not named sRGB).

    Pure red pixels tagged with it are, colour-managed, green: a test can tell whether the
    profile was applied. Built from littlecms's sRGB by swapping two tag-table offsets.
    """
    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    count = int.from_bytes(data[128:132], "big")
    entries = {bytes(data[132 + 12 * i:136 + 12 * i]): 132 + 12 * i for i in range(count)}
    red, green = entries[b"rXYZ"], entries[b"gXYZ"]
    data[red + 4:red + 12], data[green + 4:green + 12] = (
        data[green + 4:green + 12], data[red + 4:red + 12])
    renamed = bytes(data).replace("sRGB".encode("utf-16-be"), "SWAP".encode("utf-16-be"))
    assert renamed != bytes(data), "the profile's description was not renamed"
    return renamed


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def open_bytes(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def near(pixel: tuple[int, ...], colour: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))
