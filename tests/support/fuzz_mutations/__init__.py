"""Mutations of valid image files for the fuzz corpus: generic ones and one set per format.

A mutation is ``(rng, data) -> bytes``: it draws everything it changes from ``rng`` (a seeded
``random.Random``), so a seed gives the same file on every run. Generic mutations treat the
file as bytes (truncations, bit flips, lying integers, inserted, deleted or duplicated runs,
garbage after the end). Format mutations parse the file's own structure and lie inside it:
JPEG segments (garbage and oversized EXIF/ICC/XMP/MPF segments, SOF dimensions, zero-length
segments), PNG chunks (IHDR and APNG frame lies, wrong and fixed CRCs, zero-length, garbage
and bomb-sized text/ICC/EXIF chunks), GIF blocks (screen and frame offsets, LZW code size,
colour tables, huge comments), WebP RIFF chunks (RIFF and chunk length lies, canvas and
ANMF frame lies, garbage EXIF/ICCP/XMP), BMP headers and TIFF directories (every field of an
entry, orientation, ICC and EXIF pointers, loops). A format mutation that finds nothing to
change in a file falls back to a generic one, so every mutation returns changed bytes.
"""

from __future__ import annotations

from tests.support.fuzz_mutations import containers, jpeg, png
from tests.support.fuzz_mutations.generic import GENERIC, Mutation

#: format -> its own mutations, by name.
BY_FORMAT: dict[str, dict[str, Mutation]] = {
    "JPEG": {f.__name__: f for f in (jpeg.jpeg_exif_garbage, jpeg.jpeg_oversized_segments,
                                     jpeg.jpeg_metadata_garbage, jpeg.jpeg_frame_lie,
                                     jpeg.jpeg_segment_lie)},
    "PNG": {f.__name__: f for f in (png.png_header_lie, png.png_crc_and_length_lie,
                                    png.png_zero_and_extra_chunks, png.png_metadata_garbage,
                                    png.apng_frame_lie)},
    "GIF": {"gif_lie": containers.gif_lie},
    "WEBP": {"webp_lie": containers.webp_lie},
    "BMP": {"bmp_lie": containers.bmp_lie},
    "TIFF": {"tiff_lie": containers.tiff_lie,
             "tiff_orientation_icc_exif": containers.tiff_orientation_icc_exif},
    "AVIF": {"avif_box_lie": containers.avif_box_lie},
}

__all__ = ["BY_FORMAT", "GENERIC", "Mutation"]
