"""The valid images the fuzz corpus mutates: every accepted format, in its common variants.

Small (most 48×32, one larger file per common format so cuts also land deep in the image
data) and deterministic: the pixels come from a seeded ``random.Random``, never from
Pillow's noise generator (C ``rand()``), so a seed gives the same bytes on every run with
the same Pillow. Made with Pillow where it writes the variant (several modes: RGB, RGBA, L,
LA, P, 1, CMYK, I;16, F; animated GIF, WebP and APNG; MPO; EXIF, ICC, XMP, comments and
text chunks), by hand where it does not (interlaced and 16-bit RGB PNG, tiled TIFF, RLE BMP).
AVIF only when this Pillow writes it (``features.check("avif")``).
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from functools import cache

from PIL import Image, ImageCms, PngImagePlugin, features

SIZE_PX = (48, 32)
LARGE_PX = (160, 120)
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
       b'22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
       b'tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>')


def photo(size: tuple[int, int] = SIZE_PX, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A gradient with seeded noise (compresses like a photo), in ``mode``."""
    width, height = size
    rng = random.Random(f"photo/{size}/{seed}")
    gradient = Image.linear_gradient("L").resize(size)
    noise = Image.frombytes("L", size, rng.randbytes(width * height))
    image = Image.merge("RGB", [gradient, Image.blend(gradient, noise, 0.3),
                                Image.blend(gradient, noise, 0.6).transpose(
                                    Image.Transpose.FLIP_LEFT_RIGHT)])
    if mode in ("RGBA", "LA"):
        image.putalpha(gradient.transpose(Image.Transpose.FLIP_TOP_BOTTOM))
    if mode == "I;16":
        return image.convert("L").convert("I").point(lambda v: v * 257).convert("I;16")
    if mode == "F":
        return image.convert("L").convert("F").point(lambda v: v / 255)
    if mode == "P":
        return image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return image.convert(mode)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def animation(fmt: str, **options: object) -> bytes:
    """Three frames that differ in part, so writers store sub-rectangles with offsets."""
    first = photo(seed=1)
    second = first.copy()
    second.paste(photo((20, 12), seed=2), (14, 9))
    third = second.copy()
    third.paste(photo((8, 30), seed=3), (40, 1))
    return encode(first, fmt, save_all=True, append_images=[second, third],
                  duration=[80, 120, 40], loop=0, **options)


def exif(orientation: int = 6) -> bytes:
    data = Image.Exif()
    data[0x0112] = orientation
    data[0x010F] = "Fuzz camera"
    data[0x0131] = "fuzz_bases"
    return data.tobytes()


@cache
def srgb_icc() -> bytes:
    """littlecms's sRGB profile, its creation time (header bytes 24-35) fixed: the same bytes
    on every run."""
    data = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return data[:24] + bytes((7, 234, 0, 1, 0, 1)) + bytes(6) + data[36:]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(
        ">I", zlib.crc32(kind + payload))


def raw_png(size: tuple[int, int], *, bit_depth: int, colour_type: int, channels: int,
            interlace: bool = False) -> bytes:
    """A PNG written by hand: Pillow writes neither interlaced nor 16-bit RGB files."""
    width, height = size
    rng = random.Random(f"raw_png/{size}/{bit_depth}/{colour_type}")
    sample_bytes = bit_depth // 8
    passes = ([(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
               (1, 0, 2, 2), (0, 1, 1, 2)] if interlace else [(0, 0, 1, 1)])
    raw = bytearray()
    for x0, y0, dx, dy in passes:
        columns = len(range(x0, width, dx))
        if not columns:
            continue
        for _y in range(y0, height, dy):
            raw.append(rng.randrange(5))  # every filter type
            raw.extend(rng.randbytes(columns * channels * sample_bytes))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, int(interlace))
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(bytes(raw))) + _png_chunk(b"IEND", b""))


def _png_with_text() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "fuzz corpus")
    info.add_text("Description", "compressed text " * 20, zip=True)
    info.add_itxt("XML:com.adobe.xmp", XMP.decode(), lang="en", tkey="XMP")
    return encode(photo(mode="RGBA"), "PNG", pnginfo=info, icc_profile=srgb_icc(),
                  exif=exif(8), dpi=(144, 144))


def tiled_tiff(size: tuple[int, int] = SIZE_PX, tile_px: int = 16, order: str = "<") -> bytes:
    """An uncompressed RGB TIFF in 16×16 tiles (Pillow reads tiles, writes strips)."""
    image = photo(size)
    width, height = size
    tiles = [image.crop((tx, ty, tx + tile_px, ty + tile_px)).tobytes()
             for ty in range(0, height, tile_px) for tx in range(0, width, tile_px)]
    count = len(tiles)
    entries = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 3, None), (259, 3, 1, 1),
               (262, 3, 1, 2), (274, 3, 1, 1), (277, 3, 1, 3), (284, 3, 1, 1),
               (322, 3, 1, tile_px), (323, 3, 1, tile_px), (324, 4, count, None),
               (325, 4, count, None)]
    extra_at = 8 + 2 + 12 * len(entries) + 4
    bits_at, offsets_at = extra_at, extra_at + 6
    counts_at = offsets_at + 4 * count
    data_at = counts_at + 4 * count
    values = {258: bits_at, 324: offsets_at, 325: counts_at}
    ifd = struct.pack(order + "H", len(entries))
    for tag, kind, n, value in entries:
        packed = (struct.pack(order + "I", values[tag]) if value is None
                  else struct.pack(order + "HH", value, 0))
        ifd += struct.pack(order + "HHI", tag, kind, n) + packed
    ifd += struct.pack(order + "I", 0)
    header = {"<": b"II", ">": b"MM"}[order] + struct.pack(order + "HI", 42, 8)
    return (header + ifd + struct.pack(order + "HHH", 8, 8, 8)
            + struct.pack(f"{order}{count}I", *(data_at + i * len(tiles[0]) for i in range(count)))
            + struct.pack(f"{order}{count}I", *(len(t) for t in tiles)) + b"".join(tiles))


def rle8_bmp(size: tuple[int, int] = (16, 8)) -> bytes:
    """An 8-bit RLE BMP: runs and literals on every row, then end of bitmap."""
    width, height = size
    rng = random.Random("rle8")
    palette = b"".join(bytes((i, 255 - i, i // 2, 0)) for i in range(256))
    pixels = bytearray()
    for _row in range(height):
        pixels += bytes((width // 2, rng.randrange(256)))  # a run
        pixels += bytes((0, width // 2)) + rng.randbytes(width // 2)  # a literal (even)
        pixels += b"\x00\x00"  # end of line
    pixels[-1] = 1  # the last end of line is the end of bitmap
    offset = 14 + 40 + len(palette)
    header = struct.pack("<iiHHIIiiII", width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    return (b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
            + struct.pack("<I", 40) + header + palette + bytes(pixels))


def _mpo() -> bytes:
    return encode(photo(seed=4), "MPO", save_all=True, append_images=[photo(seed=5)])


def _jpeg_exif_icc() -> bytes:
    return encode(photo(), "JPEG", quality=85, exif=exif(6), icc_profile=srgb_icc(),
                  dpi=(300, 300))


#: name -> (format the service must report, how to make it).
BASES: dict[str, tuple[str, object]] = {
    "jpeg-rgb": ("JPEG", lambda: encode(photo(), "JPEG", quality=85)),
    "jpeg-large": ("JPEG", lambda: encode(photo(LARGE_PX), "JPEG", quality=90)),
    "jpeg-progressive": ("JPEG", lambda: encode(photo(LARGE_PX), "JPEG", progressive=True)),
    "jpeg-gray": ("JPEG", lambda: encode(photo(mode="L"), "JPEG")),
    "jpeg-cmyk": ("JPEG", lambda: encode(photo(mode="CMYK"), "JPEG")),
    "jpeg-exif-icc-dpi": ("JPEG", _jpeg_exif_icc),
    "jpeg-jfif-dpi": ("JPEG", lambda: encode(photo(), "JPEG", dpi=(72, 72))),
    "jpeg-restart": ("JPEG", lambda: encode(photo(), "JPEG", restart_marker_rows=1)),
    "jpeg-444-xmp-comment": ("JPEG", lambda: encode(photo(), "JPEG", subsampling=0, xmp=XMP,
                                                    comment=b"fuzz comment")),
    "jpeg-mpo": ("JPEG", _mpo),
    "png-rgb": ("PNG", lambda: encode(photo(), "PNG")),
    "png-large": ("PNG", lambda: encode(photo(LARGE_PX), "PNG")),
    "png-rgba-text-icc-exif": ("PNG", _png_with_text),
    "png-gray": ("PNG", lambda: encode(photo(mode="L"), "PNG")),
    "png-gray-alpha": ("PNG", lambda: encode(photo(mode="LA"), "PNG")),
    "png-palette-trns": ("PNG", lambda: encode(photo(mode="P"), "PNG", transparency=3)),
    "png-1bit": ("PNG", lambda: encode(photo(mode="1"), "PNG")),
    "png-gray16": ("PNG", lambda: encode(photo(mode="I;16"), "PNG")),
    "png-rgb16": ("PNG", lambda: raw_png(SIZE_PX, bit_depth=16, colour_type=2, channels=3)),
    "png-interlaced": ("PNG", lambda: raw_png((37, 23), bit_depth=8, colour_type=6,
                                              channels=4, interlace=True)),
    "png-apng": ("PNG", lambda: animation("PNG")),
    "webp-lossy": ("WEBP", lambda: encode(photo(LARGE_PX), "WEBP", quality=80)),
    "webp-lossless": ("WEBP", lambda: encode(photo(), "WEBP", lossless=True)),
    "webp-alpha": ("WEBP", lambda: encode(photo(mode="RGBA"), "WEBP", quality=80)),
    "webp-animated": ("WEBP", lambda: animation("WEBP", quality=80)),
    "webp-meta": ("WEBP", lambda: encode(photo(), "WEBP", quality=80, icc_profile=srgb_icc(),
                                         exif=exif(6), xmp=XMP)),
    "gif": ("GIF", lambda: encode(photo(), "GIF")),
    "gif-animated": ("GIF", lambda: animation("GIF")),
    "gif-trns-comment": ("GIF", lambda: encode(photo(mode="P"), "GIF", transparency=5,
                                               comment=b"fuzz " * 60)),
    "gif-gray": ("GIF", lambda: encode(photo(mode="L"), "GIF")),
    "bmp-rgb": ("BMP", lambda: encode(photo(), "BMP")),
    "bmp-rgba": ("BMP", lambda: encode(photo(mode="RGBA"), "BMP")),
    "bmp-palette": ("BMP", lambda: encode(photo(mode="P"), "BMP")),
    "bmp-1bit": ("BMP", lambda: encode(photo(mode="1"), "BMP")),
    "bmp-rle8": ("BMP", rle8_bmp),
    "tiff-raw": ("TIFF", lambda: encode(photo(), "TIFF")),
    "tiff-lzw-exif-icc": ("TIFF", lambda: encode(photo(), "TIFF", compression="tiff_lzw",
                                                 exif=exif(3), icc_profile=srgb_icc())),
    "tiff-deflate-rgba": ("TIFF", lambda: encode(photo(mode="RGBA"), "TIFF",
                                                 compression="tiff_adobe_deflate")),
    "tiff-jpeg": ("TIFF", lambda: encode(photo(), "TIFF", compression="jpeg")),
    "tiff-packbits-cmyk": ("TIFF", lambda: encode(photo(mode="CMYK"), "TIFF",
                                                  compression="packbits")),
    "tiff-gray16": ("TIFF", lambda: encode(photo(mode="I;16"), "TIFF")),
    "tiff-float": ("TIFF", lambda: encode(photo(mode="F"), "TIFF")),
    "tiff-group4": ("TIFF", lambda: encode(photo(mode="1"), "TIFF", compression="group4")),
    "tiff-tiled-mm": ("TIFF", lambda: tiled_tiff(order=">")),
    "tiff-bigtiff": ("TIFF", lambda: encode(photo(), "TIFF", big_tiff=True)),
    "tiff-multipage": ("TIFF", lambda: animation("TIFF")),
}
if features.check("avif"):
    BASES.update({
        "avif-rgb": ("AVIF", lambda: encode(photo(), "AVIF", quality=60)),
        "avif-rgba-exif": ("AVIF", lambda: encode(photo(mode="RGBA"), "AVIF", quality=60,
                                                  exif=exif(6))),
    })


@cache
def base(name: str) -> bytes:
    """The bytes of base image ``name`` (made once per process)."""
    return BASES[name][1]()  # type: ignore[operator]


def base_format(name: str) -> str:
    return BASES[name][0]
