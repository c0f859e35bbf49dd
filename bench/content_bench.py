"""Benchmark of what an image shows (contract §18): hash agreement, cost, duplicate accuracy.

Three measurements, all through the service's own code (``validate_image`` with
``IMAGE_VALIDATION=full``, the download's path without variants):

1. **Draft vs full decode.** A JPEG is hashed from its DCT-scaled decode (at least 32 px a
   side, 1/8 for anything of 256 px or more). For every file of ``--corpus`` (default: the
   shared benchmark's ``/tmp/bench-corpus/good``) and of the generated scenes below, the
   service's hash is compared with ``imagehash.phash`` of the file's full-size decode: the
   distribution of the distance, and the share within 2 bits. Other formats are decoded at
   full size, so their hash must be identical.
2. **Added CPU per image in full mode.** ``validate_image`` as it is, against the
   validation it replaces (the same open, pixel check and decode, JPEG at 1/8, without the
   hash), per format; best of ``--repeat`` passes, process time.
3. **Near-duplicate precision and recall** of the ``DUPLICATE_DISTANCE`` rule on generated
   photo-like scenes (``--sources``, default 300: sky and ground gradients, shapes, blur,
   text, grain; random sizes and aspect ratios, saved as JPEG q90). Each source gets one
   pair of each kind: ``resized`` (to 35-75 %), ``jpeg_q70``, ``webp`` (quality 80),
   ``watermark`` (a semi-transparent text line in a corner), ``crop_5pct`` (5 % off the
   width and the height), ``unrelated`` (another source). Every pair's two files are hashed
   by ``validate_image``; a pair is flagged when the distance is at most the threshold.
   Precision counts unrelated pairs flagged against all flagged pairs; the false-positive
   rate is also given over *every* pair of distinct sources (N·(N-1)/2), which says more
   about precision than a few hundred unrelated pairs can, and over every pair of the
   corpus's files (all distinct pictures).

    .venv/bin/python bench/content_bench.py [--corpus DIR] [--sources 300] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import io
import math
import random
import statistics
import string
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import imagehash
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from images_service.config.settings import load_settings
from images_service.content import phash as phash_module
from images_service.content.bits import distance, from_hex
from images_service.validation import core, validate_image

SETTINGS = load_settings({})
KINDS = ("resized", "jpeg_q70", "webp", "watermark", "crop_5pct", "unrelated")
#: Kinds whose recall the issue sets a goal for.
GOAL_KINDS = ("resized", "jpeg_q70", "webp", "watermark")


# --- generated photo-like scenes -------------------------------------------------------------

def _colour(rng: random.Random, low: int = 0, high: int = 255) -> tuple[int, int, int]:
    return tuple(rng.randint(low, high) for _ in range(3))  # type: ignore[return-value]


def _gradient(size: tuple[int, int], top: tuple[int, ...], bottom: tuple[int, ...],
              angle_deg: float) -> Image.Image:
    mask = Image.linear_gradient("L").rotate(angle_deg, resample=Image.Resampling.BILINEAR,
                                              expand=False).resize(size)
    return Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), mask)


def scene(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A photo-like scene: sky and ground, shapes (some blurred), text, then grain."""
    width, height = size
    horizon = int(height * rng.uniform(0.25, 0.75))
    image = _gradient(size, _colour(rng, 60, 255), _colour(rng, 0, 200), rng.uniform(-20, 20))
    ground = _gradient((width, height - horizon), _colour(rng), _colour(rng),
                       rng.uniform(-30, 30))
    image.paste(ground, (0, horizon))
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for _ in range(rng.randint(3, 12)):
        x, y = rng.uniform(-0.1, 1.0) * width, rng.uniform(-0.1, 1.0) * height
        w, h = rng.uniform(0.05, 0.5) * width, rng.uniform(0.05, 0.5) * height
        fill = (*_colour(rng), rng.randint(150, 255))
        shape = rng.random()
        if shape < 0.4:
            draw.ellipse((x, y, x + w, y + h), fill=fill)
        elif shape < 0.75:
            draw.rectangle((x, y, x + w, y + h), fill=fill)
        else:
            corners = rng.randint(3, 6)
            draw.polygon([(x + rng.uniform(0, w), y + rng.uniform(0, h))
                          for _ in range(corners)], fill=fill)
    if rng.random() < 0.5:
        layer = layer.filter(ImageFilter.GaussianBlur(rng.uniform(1, 6)))
    image.paste(layer, (0, 0), layer)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(0, 3)):
        font = ImageFont.load_default(size=max(10, int(height * rng.uniform(0.03, 0.1))))
        text = "".join(rng.choice(string.ascii_letters + "  ") for _ in range(rng.randint(4, 18)))
        draw.text((rng.uniform(0, 0.7) * width, rng.uniform(0, 0.9) * height), text,
                  fill=_colour(rng), font=font)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    grain = Image.effect_noise(size, rng.uniform(4, 20)).convert("RGB")
    return Image.blend(image, grain, rng.uniform(0.03, 0.1))


def watermark(image: Image.Image, rng: random.Random) -> Image.Image:
    """A light watermark: one semi-transparent text line in a corner, ~25 % of the width."""
    out = image.convert("RGBA")
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    text = "© " + rng.choice(["hotel-example.com", "Grand Palace", "photo: serpy", "TripPics"])
    font = ImageFont.load_default(size=max(10, out.width // 28))
    box = draw.textbbox((0, 0), text, font=font)
    margin = out.width // 40
    x = margin if rng.random() < 0.5 else out.width - (box[2] - box[0]) - margin
    y = margin if rng.random() < 0.3 else out.height - (box[3] - box[1]) - 2 * margin
    draw.text((x, y), text, font=font, fill=(255, 255, 255, rng.randint(90, 140)))
    return Image.alpha_composite(out, layer).convert("RGB")


def crop_5pct(image: Image.Image, rng: random.Random) -> Image.Image:
    """5 % of the width and of the height cut off, split at random between the two sides."""
    width, height = image.size
    cut_w, cut_h = round(width * 0.05), round(height * 0.05)
    left, top = rng.randint(0, cut_w), rng.randint(0, cut_h)
    return image.crop((left, top, width - (cut_w - left), height - (cut_h - top)))


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


Pair = tuple[str, Path, Path]  #: (kind, original, the other file)


def make_pairs(folder: Path, n_sources: int, seed: int) -> tuple[list[Path], list[Pair]]:
    """The sources (JPEG q90) and one pair of every kind per source."""
    rng = random.Random(seed)
    sources: list[tuple[Path, Image.Image]] = []
    for i in range(n_sources):
        width = rng.randint(480, 1280)
        height = int(width / rng.choice([4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3]))
        image = scene(rng, (width, height))
        path = folder / f"src_{i:04d}.jpg"
        path.write_bytes(encode(image, "JPEG", quality=90))
        sources.append((path, image))
    pairs: list[Pair] = []
    for i, (path, image) in enumerate(sources):
        scale = rng.uniform(0.35, 0.75)
        variants = {
            "resized": ("jpg", encode(image.resize((round(image.width * scale),
                                                     round(image.height * scale)),
                                                    Image.Resampling.BICUBIC), "JPEG", quality=85)),
            "jpeg_q70": ("jpg", encode(image, "JPEG", quality=70)),
            "webp": ("webp", encode(image, "WEBP", quality=80)),
            "watermark": ("jpg", encode(watermark(image, rng), "JPEG", quality=85)),
            "crop_5pct": ("jpg", encode(crop_5pct(image, rng), "JPEG", quality=85)),
        }
        for kind, (ext, data) in variants.items():
            variant = folder / f"{kind}_{i:04d}.{ext}"
            variant.write_bytes(data)
            pairs.append((kind, path, variant))
        other = sources[(i + rng.randint(1, n_sources - 1)) % n_sources][0]
        pairs.append(("unrelated", path, other))
    return [p for p, _ in sources], pairs


# --- measurements ----------------------------------------------------------------------------

def service_hash(path: Path) -> int:
    info = validate_image(path, SETTINGS, sha256="-", size=path.stat().st_size)
    assert info.phash is not None, path
    return from_hex(info.phash)


def full_decode_hash(path: Path) -> int:
    with Image.open(path) as image:
        return int(str(imagehash.phash(image.convert("L"))), 16)


def agreement(paths: list[Path], label: str) -> list[int]:
    """Prints the distance of the service's hash to the full decode's, per format; returns
    the service's hashes."""
    by_format: dict[str, Counter[int]] = defaultdict(Counter)
    hashes = []
    for path in paths:
        with Image.open(path) as image:
            fmt = image.format or "?"
        hashes.append(service_hash(path))
        by_format[fmt][distance(hashes[-1], full_decode_hash(path))] += 1
    for fmt, counts in sorted(by_format.items()):
        total = sum(counts.values())
        within2 = sum(c for d, c in counts.items() if d <= 2)
        dist = ", ".join(f"{d}: {c}" for d, c in sorted(counts.items()))
        print(f"  {label} {fmt:5} {total:5} files: within 2 bits {100 * within2 / total:5.1f} %, "
              f"max {max(counts)}, mean {sum(d * c for d, c in counts.items()) / total:.2f} "
              f"(distance: files {dist})")
    return hashes


def distinct_pairs(hashes: list[int], label: str, thresholds: tuple[int, ...]) -> None:
    """How close distinct images come: every pair of ``hashes`` (all different pictures)."""
    counts: Counter[int] = Counter()
    for i, value in enumerate(hashes):
        for other in hashes[i + 1:]:
            counts[distance(value, other)] += 1
    total = sum(counts.values())
    flagged = ", ".join(f"<= {t}: {sum(c for d, c in counts.items() if d <= t)}"
                        for t in thresholds)
    print(f"  {label}: {total} pairs of distinct images, min distance {min(counts)}; "
          f"pairs within {flagged}")


def _old_validation(path: Path) -> None:
    """The validation before §18: same steps, JPEG drafted to 1/8 whatever its size, no hash."""
    with core._open_header(path, SETTINGS, size=path.stat().st_size) as (image, fmt):
        if fmt == "JPEG":
            image.draft(None, (1, 1))
        core._decode(image)


def _new_validation(path: Path) -> None:
    validate_image(path, SETTINGS, sha256="-", size=path.stat().st_size)


def cpu_ms(paths: list[Path], work: Callable[[Path], None], repeat: int) -> dict[str, float]:
    """Best of ``repeat`` passes: CPU ms per image, by extension and ``all``."""
    best: dict[str, float] = {}
    for _ in range(repeat):
        gc.collect()
        spent: dict[str, list[float]] = defaultdict(list)
        for path in paths:
            started = time.process_time()
            work(path)
            spent[path.suffix].append(time.process_time() - started)
        row = {k: 1000 * sum(v) / len(v) for k, v in spent.items()}
        row["all"] = 1000 * sum(map(sum, spent.values())) / len(paths)
        if not best or row["all"] < best["all"]:
            best = row
    return best


def cost(paths: list[Path], repeat: int) -> None:
    old = cpu_ms(paths, _old_validation, repeat)
    new = cpu_ms(paths, _new_validation, repeat)
    facts = facts_cpu_ms(paths, repeat)
    print("| work | " + " | ".join(f"{k} ms" for k in sorted(old)) + " |")
    print("|---|" + "---:|" * len(old))
    for label, row in (("validation before §18", old), ("validation + hash (now)", new),
                       ("added", {k: new[k] - old[k] for k in old}),
                       ("content_facts alone", facts)):
        print(f"| {label} | " + " | ".join(f"{row[k]:.3f}" for k in sorted(old)) + " |")


def facts_cpu_ms(paths: list[Path], repeat: int) -> dict[str, float]:
    """The hash alone (``DecodedImage.facts``), on the frame validation decodes (not timed)."""
    best: dict[str, float] = {}
    for _ in range(repeat):
        gc.collect()
        spent: dict[str, list[float]] = defaultdict(list)
        for path in paths:
            with core.open_validated(path, SETTINGS, size=path.stat().st_size) as decoded:
                started = time.process_time()
                decoded.facts()
                spent[path.suffix].append(time.process_time() - started)
        row = {k: 1000 * sum(v) / len(v) for k, v in spent.items()}
        row["all"] = 1000 * sum(map(sum, spent.values())) / len(paths)
        if not best or row["all"] < best["all"]:
            best = row
    return best


def duplicates(pairs: list[Pair], sources: list[Path],
               thresholds: tuple[int, ...]) -> None:
    hashes: dict[Path, int] = {}
    for _kind, a, b in pairs:
        for path in (a, b):
            if path not in hashes:
                hashes[path] = service_hash(path)
    by_kind: dict[str, list[int]] = defaultdict(list)
    for kind, a, b in pairs:
        by_kind[kind].append(distance(hashes[a], hashes[b]))
    print("  distance by kind: median / p90 / max")
    for kind in KINDS:
        values = sorted(by_kind[kind])
        p90 = values[min(len(values) - 1, math.ceil(0.9 * len(values)) - 1)]
        print(f"    {kind:10} {len(values):4} pairs: {statistics.median(values):4.1f} / {p90:2} / "
              f"{values[-1]:2}  (min {values[0]})")
    source_hashes = [hashes[p] for p in sources]
    all_pairs = [distance(a, b) for i, a in enumerate(source_hashes) for b in source_hashes[i + 1:]]
    print(f"  {len(pairs)} pairs; every pair of distinct sources: {len(all_pairs)}, "
          f"min distance {min(all_pairs)}, 1st percentile "
          f"{sorted(all_pairs)[len(all_pairs) // 100]}")
    print("| DUPLICATE_DISTANCE | " + " | ".join(f"recall {k}" for k in KINDS[:-1])
          + " | precision (pairs) | false positives, all source pairs |")
    print("|---:|" + "---:|" * (len(KINDS) + 1))
    for threshold in thresholds:
        recalls = [sum(d <= threshold for d in by_kind[k]) / len(by_kind[k]) for k in KINDS[:-1]]
        true_flags = sum(sum(d <= threshold for d in by_kind[k]) for k in KINDS[:-1])
        false_flags = sum(d <= threshold for d in by_kind["unrelated"])
        precision = true_flags / (true_flags + false_flags) if true_flags + false_flags else 1.0
        fp_all = sum(d <= threshold for d in all_pairs)
        print(f"| {threshold} | " + " | ".join(f"{100 * r:.1f} %" for r in recalls)
              + f" | {100 * precision:.2f} % | {fp_all} / {len(all_pairs)} "
              f"({100 * fp_all / len(all_pairs):.3f} %) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/bench-corpus/good"),
                        help="folder of images (the shared benchmark's corpus); skipped if absent")
    parser.add_argument("--sources", type=int, default=300, help="generated scenes")
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--repeat", type=int, default=3, help="passes per cost row (best kept)")
    parser.add_argument("--min-decode-px", type=int, default=phash_module.MIN_DECODE_PX,
                        help="override MIN_DECODE_PX (JPEG draft size for the hash), to compare")
    parser.add_argument("--thresholds", default="2,4,6,8", help="distances to report")
    args = parser.parse_args()
    phash_module.MIN_DECODE_PX = args.min_decode_px
    corpus = sorted(p for p in args.corpus.iterdir() if p.is_file()) if args.corpus.is_dir() else []
    with tempfile.TemporaryDirectory(prefix="content-bench-") as tmp:
        started = time.perf_counter()
        sources, pairs = make_pairs(Path(tmp), args.sources, args.seed)
        print(f"generated {len(sources)} scenes and {len(pairs)} pairs in "
              f"{time.perf_counter() - started:.0f} s; MIN_DECODE_PX={args.min_decode_px}")
        thresholds = tuple(int(t) for t in args.thresholds.split(","))
        print("\n1. service hash vs imagehash on the full decode")
        if corpus:
            corpus_hashes = agreement(corpus, "corpus")
            distinct_pairs(corpus_hashes, "corpus", thresholds)
        agreement(sources, "scenes")
        print("\n2. CPU per image, full mode, one process")
        for label, paths in (("corpus", corpus), ("scenes", sources)):
            if paths:
                print(f"{label} ({len(paths)} files)")
                cost(paths, args.repeat)
        print("\n3. near-duplicates")
        duplicates(pairs, sources, thresholds)


if __name__ == "__main__":
    main()
