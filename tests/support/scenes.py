"""Photo-like test images for §18, made deterministically from a seed (no Pillow noise
effect: it is not seeded), and the edits a near-duplicate goes through."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from images_service.config.settings import Settings, load_settings

#: Pillow's format name -> file extension, for the six formats every test covers.
FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
           "TIFF": "tif"}


def settings(**env: str) -> Settings:
    return load_settings(env)


def _colour(rng: random.Random, low: int = 0, high: int = 255) -> tuple[int, int, int]:
    return (rng.randint(low, high), rng.randint(low, high), rng.randint(low, high))


def scene(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """Sky and ground, a few shapes, a line of text, slight blur and grain."""
    rng = random.Random(seed)
    width, height = size
    image = Image.new("RGB", size)
    sky = Image.linear_gradient("L").resize(size)
    image.paste(Image.composite(Image.new("RGB", size, _colour(rng, 0, 200)),
                                Image.new("RGB", size, _colour(rng, 60)), sky))
    horizon = int(height * rng.uniform(0.3, 0.7))
    image.paste(_colour(rng), (0, horizon, width, height))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(4, 9)):
        x, y = rng.uniform(-0.1, 0.9) * width, rng.uniform(-0.1, 0.9) * height
        w, h = rng.uniform(0.1, 0.5) * width, rng.uniform(0.1, 0.5) * height
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x, y, x + w, y + h), fill=_colour(rng))
    font = ImageFont.load_default(size=max(10, height // 12))
    draw.text((width * 0.1, height * rng.uniform(0.1, 0.8)), f"Room {seed}", font=font,
              fill=_colour(rng))
    image = image.filter(ImageFilter.GaussianBlur(0.8))
    return add_noise(image, 6.0, seed)


def blobs(seed: int, size: tuple[int, int]) -> Image.Image:
    """Soft colour blobs (random 16-pixel cells, bicubic): a picture with no sharp edge, whose
    low frequencies move with any shift of the geometry."""
    rng = numpy.random.default_rng(seed)
    cells = rng.integers(0, 256, (size[1] // 16 + 1, size[0] // 16 + 1, 3), dtype=numpy.uint8)
    return Image.fromarray(cells, "RGB").resize(size, Image.Resampling.BICUBIC)


def add_noise(image: Image.Image, sigma: float, seed: int) -> Image.Image:
    """``image`` (RGB) plus Gaussian grain of ``sigma`` grey levels, seeded."""
    pixels = numpy.asarray(image, dtype=numpy.float32)
    grain = numpy.random.default_rng(seed).normal(0.0, sigma, pixels.shape[:2])[..., None]
    return Image.fromarray(numpy.clip(pixels + grain, 0, 255).astype(numpy.uint8), "RGB")


def watermark(image: Image.Image) -> Image.Image:
    """A light watermark: a semi-transparent text line in the bottom right corner."""
    out = image.convert("RGBA")
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = ImageFont.load_default(size=max(10, out.width // 28))
    text = "© hotel-example.com"
    box = draw.textbbox((0, 0), text, font=font)
    margin = out.width // 40
    draw.text((out.width - box[2] - margin, out.height - box[3] - margin), text, font=font,
              fill=(255, 255, 255, 110))
    return Image.alpha_composite(out, layer).convert("RGB")


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    """``image`` in ``fmt``; GIF is quantised to a palette first, like any GIF writer."""
    out = io.BytesIO()
    if fmt == "GIF" and image.mode not in ("P", "L"):
        image = image.quantize(256)
    image.save(out, fmt, **options)
    return out.getvalue()


def write(folder: Path, name: str, image: Image.Image, fmt: str, **options: object) -> Path:
    path = folder / f"{name}.{FORMATS[fmt]}"
    path.write_bytes(encode(image, fmt, **options))
    return path
