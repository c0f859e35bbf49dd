"""Valid image files of every supported format and its common variants, as bytes.

Made with Pillow where it can write the variant, by hand where it cannot (interlaced PNG,
tiled TIFF, RLE BMP). Photo-like content, so compressed data is not trivially small and a cut
at 10 % of a file lands past its header. Each sample is made once (``lru_cache``).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from functools import cache

from PIL import Image, ImageCms, features


def photo(size: tuple[int, int] = (96, 64), mode: str = "RGB") -> Image.Image:
    """Noise over a gradient: compresses like a photo."""
    gradient = Image.linear_gradient("L").resize(size)
    noise = Image.effect_noise(size, 48)
    image = Image.merge("RGB", [gradient, noise, Image.blend(gradient, noise, 0.5)])
    if mode == "RGBA":
        image.putalpha(gradient)
    return image.convert(mode)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def animation(fmt: str, **options: object) -> bytes:
    frames = [photo(), photo().transpose(Image.Transpose.FLIP_LEFT_RIGHT), photo((96, 64), "L")]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=80, loop=0,
                  **options)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload)))


#: Adam7 passes: (x start, y start, x step, y step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))


def interlaced_png(size: tuple[int, int] = (37, 23)) -> bytes:
    """An Adam7-interlaced RGB PNG (Pillow reads them but does not write them)."""
    image = photo(size)
    width, height = size
    raw = bytearray()
    for x0, y0, dx, dy in _ADAM7:
        if x0 >= width or y0 >= height:
            continue
        for y in range(y0, height, dy):
            raw.append(0)  # filter type None
            for x in range(x0, width, dx):
                raw.extend(image.getpixel((x, y)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(bytes(raw))) + _png_chunk(b"IEND", b""))


def tiled_tiff(size: tuple[int, int] = (40, 24), tile_px: int = 16, order: str = "<") -> bytes:
    """An uncompressed RGB TIFF stored in 16×16 tiles (Pillow reads them, writes strips).

    ``order`` is the byte order, ``<`` (II) or ``>`` (MM: Pillow writes only II).
    """
    image = photo(size)
    width, height = size
    across, down = -(-width // tile_px), -(-height // tile_px)
    tiles = []
    for ty in range(down):
        for tx in range(across):
            box = (tx * tile_px, ty * tile_px, (tx + 1) * tile_px, (ty + 1) * tile_px)
            tiles.append(image.crop(box).tobytes())  # crop pads outside the image with black
    count = len(tiles)
    entries = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 3, None), (259, 3, 1, 1),
               (262, 3, 1, 2), (277, 3, 1, 3), (284, 3, 1, 1), (322, 3, 1, tile_px),
               (323, 3, 1, tile_px), (324, 4, count, None), (325, 4, count, None)]
    ifd_at = 8
    extra_at = ifd_at + 2 + 12 * len(entries) + 4
    bits_at, offsets_at = extra_at, extra_at + 6
    counts_at = offsets_at + 4 * count
    data_at = counts_at + 4 * count
    offsets = [data_at + i * len(tiles[0]) for i in range(count)]
    values = {258: bits_at, 324: offsets_at, 325: counts_at}
    ifd = struct.pack(order + "H", len(entries))
    for tag, kind, n, value in entries:
        packed = (struct.pack(order + "I", values[tag]) if value is None
                  else struct.pack(order + "HH", value, 0))  # a SHORT, left-justified
        ifd += struct.pack(order + "HHI", tag, kind, n) + packed
    ifd += struct.pack(order + "I", 0)
    header = {"<": b"II", ">": b"MM"}[order] + struct.pack(order + "HI", 42, ifd_at)
    return (header + ifd + struct.pack(order + "HHH", 8, 8, 8)
            + struct.pack(f"{order}{count}I", *offsets)
            + struct.pack(f"{order}{count}I", *(len(t) for t in tiles)) + b"".join(tiles))


def rle8_bmp() -> bytes:
    """An 8-bit RLE-compressed BMP: 4×2, runs of one colour per row."""
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    pixels = bytes((4, 10, 0, 0, 4, 200, 0, 1))  # run, run + end of line, …, end of bitmap
    offset = 14 + 40 + len(palette)
    header = struct.pack("<iiHHIIiiII", 4, 2, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    return (b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
            + struct.pack("<I", 40) + header + palette + pixels)


def _jpeg_with_exif_and_icc() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 1  # orientation
    exif[0x010F] = "Camera maker"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return encode(photo(), "JPEG", quality=85, exif=exif.tobytes(), icc_profile=icc)


#: name -> how to make it; every file here is valid and must pass both modes.
VALID: dict[str, Callable[[], bytes]] = {
    "jpeg-baseline": lambda: encode(photo(), "JPEG", quality=85),
    "jpeg-progressive": lambda: encode(photo(), "JPEG", quality=85, progressive=True),
    "jpeg-exif-icc": _jpeg_with_exif_and_icc,
    "jpeg-restart-markers": lambda: encode(photo(), "JPEG", restart_marker_rows=1),
    "jpeg-grayscale": lambda: encode(photo(mode="L"), "JPEG"),
    "jpeg-cmyk": lambda: encode(photo(mode="CMYK"), "JPEG"),
    "jpeg-1x1": lambda: encode(photo((1, 1)), "JPEG"),
    "png-rgb": lambda: encode(photo(), "PNG"),
    "png-rgba": lambda: encode(photo(mode="RGBA"), "PNG"),
    "png-interlaced": interlaced_png,
    "png-16bit-gray": lambda: encode(photo(mode="I").point(lambda v: v * 200).convert("I;16"),
                                     "PNG"),
    "png-grayscale": lambda: encode(photo(mode="L"), "PNG"),
    "png-palette": lambda: encode(photo(mode="P"), "PNG"),
    "png-animated": lambda: animation("PNG"),
    "png-1x1": lambda: encode(photo((1, 1)), "PNG"),
    "gif": lambda: encode(photo(), "GIF"),
    "gif-animated": lambda: animation("GIF"),
    "gif-grayscale": lambda: encode(photo(mode="L"), "GIF"),
    "gif-1x1": lambda: encode(photo((1, 1)), "GIF"),
    "webp-lossy": lambda: encode(photo(), "WEBP", quality=80),
    "webp-lossless": lambda: encode(photo(), "WEBP", lossless=True),
    "webp-lossy-alpha": lambda: encode(photo(mode="RGBA"), "WEBP", quality=80),
    "webp-lossless-alpha": lambda: encode(photo(mode="RGBA"), "WEBP", lossless=True),
    "webp-icc": lambda: encode(photo(), "WEBP", icc_profile=ImageCms.ImageCmsProfile(
        ImageCms.createProfile("sRGB")).tobytes()),
    "webp-animated": lambda: animation("WEBP", quality=80),
    "webp-1x1": lambda: encode(photo((1, 1)), "WEBP"),
    "bmp-rgb": lambda: encode(photo(), "BMP"),
    "bmp-rgba": lambda: encode(photo(mode="RGBA"), "BMP"),
    "bmp-palette": lambda: encode(photo(mode="P"), "BMP"),
    "bmp-1bit": lambda: encode(photo(mode="1"), "BMP"),
    "bmp-1x1": lambda: encode(photo((1, 1)), "BMP"),
    "bmp-rle8": rle8_bmp,
    "tiff-raw": lambda: encode(photo(), "TIFF"),
    "tiff-lzw": lambda: encode(photo(), "TIFF", compression="tiff_lzw"),
    "tiff-deflate": lambda: encode(photo(), "TIFF", compression="tiff_adobe_deflate"),
    "tiff-jpeg": lambda: encode(photo(), "TIFF", compression="jpeg"),
    "tiff-tiled": tiled_tiff,
    "tiff-bigtiff": lambda: encode(photo(), "TIFF", big_tiff=True),
    "tiff-tiled-big-endian": lambda: tiled_tiff(order=">"),
    # Pillow's multi-page writer leaves zero padding after the last page, referenced by
    # nothing: removing it is no truncation, so the sample ends with the last page's data.
    "tiff-multipage": lambda: animation("TIFF").rstrip(b"\0"),
    "tiff-1x1": lambda: encode(photo((1, 1)), "TIFF"),
}
if features.check("avif"):
    VALID["avif"] = lambda: encode(photo(), "AVIF", quality=60)


@cache
def sample(name: str) -> bytes:
    return VALID[name]()
