"""Benchmark of derived images: validation alone vs validation + 1 or 2 variants.

Generates ``--n`` photo-like images (default 120: 70% 1024×768 JPEG, one in five of them
progressive and one in ten with EXIF orientation 6; 15% 1024×768 PNG; 15% WebP) in a
temporary folder, or reads every file of ``--corpus DIR`` (e.g. the shared benchmark's
``/tmp/bench-corpus/good``), then times, in this single process:

* ``validate``: ``validate_image`` (JPEG decoded at DCT 1/8), the download's work today;
* ``two opens``: ``validate_image`` then ``render_variants`` on the same file (validation
  unchanged, the renderer opens and decodes again at the scale it needs);
* ``one decode``: ``validate_and_render``: validation's decode is the variants' decode
  (JPEG decoded once, at the largest DCT scale that covers the variants).

Variants: ``thumb:320x320:fit:webp:80``, then also ``card:640x360:cover:jpeg:85``. The hash
is passed in as known (the fetcher computes it while streaming), so only Pillow work is
timed. Each row is the best of ``--repeat`` passes (the machine is shared); CPU ms is
process time per image.

    .venv/bin/python bench/processing_bench.py --n 120 --repeat 3
"""

from __future__ import annotations

import argparse
import gc
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageFilter

from images_service.config.settings import load_settings
from images_service.processing.render import render_variants, validate_and_render
from images_service.processing.specs import parse_variants
from images_service.validation import validate_image

SETTINGS = load_settings({})
ONE = parse_variants("thumb:320x320:fit:webp:80")
TWO = parse_variants("thumb:320x320:fit:webp:80,card:640x360:cover:jpeg:85")
SIZE_PX = (1024, 768)


def photo_like(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A smooth scene (gradient and blurred blobs), mid-frequency texture and pixel noise."""
    scene = Image.linear_gradient("L").rotate(rng.uniform(0, 360)).resize(size)
    tint = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    image = Image.composite(tint, Image.new("RGB", size, (rng.randrange(256),) * 3), scene)
    blobs = Image.new("RGB", (size[0] // 16, size[1] // 16))
    blobs.putdata([tuple(rng.randrange(256) for _ in range(3))
                   for _ in range(blobs.width * blobs.height)])
    image = Image.blend(image, blobs.resize(size, Image.Resampling.BICUBIC), 0.45)
    texture = Image.effect_noise(size, 60).filter(ImageFilter.GaussianBlur(1.5))
    image = Image.blend(image, Image.merge("RGB", [texture] * 3), 0.2)
    grain = Image.effect_noise(size, 24)
    return Image.blend(image, Image.merge("RGB", [grain] * 3), 0.08)


def make_corpus(folder: Path, n: int, seed: int = 20261128) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for i in range(n):
        image = photo_like(rng, SIZE_PX)
        roll = rng.random()
        if roll < 0.70:
            path, params = folder / f"{i:04d}.jpg", {"quality": 85}
            if i % 5 == 0:
                params["progressive"] = True
            if i % 10 == 3:
                exif = Image.Exif()
                exif[0x0112] = 6
                params["exif"] = exif.tobytes()
            image.save(path, "JPEG", **params)
        elif roll < 0.85:
            path = folder / f"{i:04d}.png"
            image.save(path, "PNG")
        else:
            path = folder / f"{i:04d}.webp"
            image.save(path, "WEBP", quality=80)
        paths.append(path)
    return paths


def timed(
    paths: list[Path], work: Callable[[Path], object], repeat: int
) -> tuple[float, float, dict[str, float]]:
    """Best images/s, CPU ms per image, and CPU ms per image of each file type."""
    best: tuple[float, float, dict[str, float]] = (0.0, float("inf"), {})
    for _ in range(repeat):
        gc.collect()
        cpu_by_type: dict[str, list[float]] = {}
        wall = time.perf_counter()
        for path in paths:
            cpu = time.process_time()
            work(path)
            cpu_by_type.setdefault(path.suffix, []).append(time.process_time() - cpu)
        wall = time.perf_counter() - wall
        cpu_ms = sum(map(sum, cpu_by_type.values())) * 1000 / len(paths)
        if cpu_ms < best[1]:
            per_type = {k: sum(v) * 1000 / len(v) for k, v in cpu_by_type.items()}
            best = (len(paths) / wall, cpu_ms, per_type)
    return best


def validate(path: Path) -> object:
    return validate_image(path, SETTINGS, sha256="-", size=path.stat().st_size)


def two_opens(variants: tuple) -> Callable[[Path], object]:
    def work(path: Path) -> object:
        validate(path)
        return render_variants(path, SETTINGS, variants)

    return work


def one_decode(variants: tuple) -> Callable[[Path], object]:
    def work(path: Path) -> object:
        return validate_and_render(path, SETTINGS, variants, sha256="-",
                                   size=path.stat().st_size)

    return work


def _describe(paths: list[Path], kind: str) -> str:
    mean_kib = sum(p.stat().st_size for p in paths) / 1024 / len(paths)
    return f"{len(paths)} {kind} (mean {mean_kib:.0f} KiB)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=120, help="images to generate")
    parser.add_argument("--repeat", type=int, default=3, help="passes per row (best kept)")
    parser.add_argument("--corpus", type=Path, help="use the files of this folder instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="processing-bench-") as tmp:
        if args.corpus:
            paths = sorted(p for p in args.corpus.iterdir() if p.is_file())
        else:
            paths = make_corpus(Path(tmp), args.n)
        kinds = sorted({p.suffix for p in paths})
        counts = ", ".join(_describe([p for p in paths if p.suffix == k], k) for k in kinds)
        print(f"{len(paths)} images: {counts}; best of {args.repeat}, one process")
        rows = [
            ("validate only", validate),
            ("+1 variant, two opens", two_opens(ONE)),
            ("+1 variant, one decode", one_decode(ONE)),
            ("+2 variants, two opens", two_opens(TWO)),
            ("+2 variants, one decode", one_decode(TWO)),
        ]
        by_type = "".join(f" {k + ' ms':>9} |" for k in kinds)
        print(f"| {'work':<24} | {'images/s':>8} | {'CPU ms/image':>12} |{by_type}")
        print(f"|{'-' * 26}|{'-' * 9}:|{'-' * 13}:|" + "----------:|" * len(kinds))
        for label, work in rows:
            rate, cpu_ms, per_type = timed(paths, work, args.repeat)
            cells = "".join(f" {per_type.get(k, 0):9.2f} |" for k in kinds)
            print(f"| {label:<24} | {rate:8.1f} | {cpu_ms:12.2f} |{cells}")

if __name__ == "__main__":
    main()
