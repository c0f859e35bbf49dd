"""Benchmark of IMAGE_VALIDATION: one decode (``full``) vs structural checks (``fast``).

Generates ``--n`` photo-like 1024×768 images of each kind (baseline JPEG q85, progressive
JPEG q85, PNG, lossy WebP q80, GIF with an adaptive palette) in a temporary folder, then
times ``validate_image`` on every file in both modes, in this single process. The hash is
passed in as known (the fetcher computes it while streaming), so only validation is timed.
Each figure is the best of ``--repeat`` passes (the machine is shared); CPU ms is process
time per image.

    .venv/bin/python bench/validation_bench.py --n 20 --repeat 5
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

from PIL import Image

# Run as a script: bench/ is on sys.path, and the photo generator and timer are shared.
from processing_bench import photo_like, timed

from images_service.config.settings import load_settings
from images_service.validation import validate_image

SIZE_PX = (1024, 768)
#: kind -> (suffix, how to save it)
KINDS = {
    "JPEG": (".jpg", lambda image, path: image.save(path, "JPEG", quality=85)),
    "JPEG progressive": (".pjpg", lambda image, path: image.save(path, "JPEG", quality=85,
                                                                 progressive=True)),
    "PNG": (".png", lambda image, path: image.save(path, "PNG")),
    "WebP": (".webp", lambda image, path: image.save(path, "WEBP", quality=80)),
    "GIF": (".gif", lambda image, path: image.convert("P", palette=Image.Palette.ADAPTIVE)
            .save(path, "GIF")),
}


def make_corpus(folder: Path, n: int, seed: int = 20261129) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for i in range(n):
        image = photo_like(rng, SIZE_PX)
        for suffix, save in KINDS.values():
            path = folder / f"{i:04d}{suffix}"
            save(image, path)
            paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20, help="images of each kind")
    parser.add_argument("--repeat", type=int, default=5, help="passes per mode (best kept)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="validation-bench-") as tmp:
        paths = make_corpus(Path(tmp), args.n)
        results = {}
        for mode in ("full", "fast"):
            settings = load_settings({"IMAGE_VALIDATION": mode})

            def work(path: Path, settings=settings) -> object:  # settings bound per mode
                return validate_image(path, settings, sha256="-", size=path.stat().st_size)

            results[mode] = timed(paths, work, args.repeat)
        print(f"{args.n} images of each kind, {SIZE_PX[0]}x{SIZE_PX[1]}, CPU ms per image, "
              f"best of {args.repeat}")
        print(f"{'kind':18} {'mean KiB':>9} {'full':>8} {'fast':>8} {'ratio':>7}")
        for kind, (suffix, _) in KINDS.items():
            kib = sum(p.stat().st_size for p in paths if p.suffix == suffix) / 1024 / args.n
            full, fast = results["full"][2][suffix], results["fast"][2][suffix]
            print(f"{kind:18} {kib:9.0f} {full:8.2f} {fast:8.2f} {full / fast:6.0f}x")
        full_all, fast_all = results["full"][1], results["fast"][1]
        print(f"{'all':18} {'':9} {full_all:8.2f} {fast_all:8.2f} {full_all / fast_all:6.0f}x")


if __name__ == "__main__":
    main()
