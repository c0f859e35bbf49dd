#!/usr/bin/env python3
"""Summarise a ``py-spy record --format raw`` file (collapsed stacks) of the worker.

    .venv/bin/python bench/profile_top.py /tmp/service-bench-profile/worker.raw.txt [--top 25]

Prints, as shares of the non-idle samples (py-spy leaves idle threads out unless ``--idle``):
the top functions by self samples, the top functions by inclusive samples, and a breakdown by
category (first matching rule along each stack, leaf first): image decode, structural checks,
sha256, the HTTP fetch (urllib3/http.client/sockets), Redis, S3 (botocore/boto3),
metadata.json, Dramatiq, logging, file I/O.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

#: (category, regex on "function (file:line)"), tried leaf → root on every stack.
CATEGORIES = [
    ("image decode (Pillow load/decode)", r"\b(load|decode|_decode)\b \(.*PIL/|ImageFile\.py|_imaging"),
    ("Pillow open/header parse", r"PIL/"),
    ("structural checks (fast mode)", r"images_service/validation/(jpeg|png|gif|webp|bmp|tiff|reader|structure)\.py"),
    ("sha256 / hashing", r"hashlib|sha256|_hash"),
    ("S3 client (botocore/boto3/s3transfer)", r"botocore/|boto3/|s3transfer/"),
    ("Redis client", r"redis/"),
    ("MongoDB client", r"pymongo/|bson/"),
    ("HTTP fetch (urllib3/http.client/ssl/socket)", r"urllib3/|http/client\.py|socket\.py|ssl\.py|selectors\.py"),
    ("metadata.json (json/metadata)", r"json/|storage/metadata\.py"),
    ("logging", r"logging/|images_service/logs\.py"),
    ("Dramatiq (broker, middleware)", r"dramatiq/"),
    ("filesystem storage / files", r"storage/filesystem\.py|storage/files\.py|storage/process_temp\.py|shutil\.py|tempfile\.py|os\.py|pathlib"),
    ("SSRF guard / URLs", r"fetching/guard|images_service/download/urls\.py|ipaddress\.py"),
    ("threading / queues", r"threading\.py|queue\.py|concurrent/"),
]


def parse(path: str):
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.rstrip("\n")
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f]
        # --subprocesses prefixes each stack with "process PID:"cmdline"" and a thread frame
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        yield frames, int(count)


def short(frame: str) -> str:
    frame = re.sub(r"\(/.*?/(site-packages|lib/python3\.\d+)/", "(", frame)
    frame = re.sub(r"\(/work/[^/]+/", "(", frame)
    return frame


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("raw")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    total = 0
    self_n = collections.Counter()
    incl = collections.Counter()
    cats = collections.Counter()
    for frames, n in parse(a.raw):
        if not frames:
            continue
        total += n
        self_n[short(re.sub(r":\d+\)$", ")", frames[-1]))] += n
        for f in {short(re.sub(r":\d+\)$", ")", f)) for f in frames}:
            incl[f] += n
        for frame in reversed(frames):
            cat = next((c for c, rx in CATEGORIES if re.search(rx, frame)), None)
            if cat:
                cats[cat] += n
                break
        else:
            cats["other (interpreter, app code)"] += n
    if not total:
        print("no samples")
        return 1
    print(f"samples: {total} (non-idle)\n")
    print("## by category (leaf-first rule)\n")
    for c, n in cats.most_common():
        print(f"{100 * n / total:5.1f}%  {c}")
    print(f"\n## top {a.top} functions by self samples\n")
    for f, n in self_n.most_common(a.top):
        print(f"{100 * n / total:5.1f}%  {f}")
    print(f"\n## top {a.top} functions by inclusive samples\n")
    for f, n in incl.most_common(a.top):
        print(f"{100 * n / total:5.1f}%  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
