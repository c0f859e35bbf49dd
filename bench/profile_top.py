#!/usr/bin/env python3
"""Summarise a ``py-spy record --format raw`` file (collapsed stacks) of the worker.

    .venv/bin/python bench/profile_top.py /tmp/service-bench-profile/worker.raw.txt [--top 25]

Prints, as shares of the non-idle samples (py-spy leaves idle threads out unless ``--idle``):
the top functions by self samples, the top functions by inclusive samples, and a breakdown by
category (first matching rule along each stack, leaf first): image decode, structural checks,
sha256, the HTTP fetch (urllib3/http.client/sockets), Redis, S3 (botocore/boto3),
metadata.json, Dramatiq, logging, file I/O.

``--stages`` adds a breakdown by pipeline stage (:data:`STAGES`: the first rule, in that
order, that matches *any* frame of a stack, so a Redis call is charged to the step that made
it — slot, claim, folder lock, progress — and a Pillow call to the decode or to the hash).
With ``--cpu-s`` (the worker tree's CPU-seconds over the profiled run, from the bench's row)
and ``--images``, each share is also given as CPU-ms per image: without ``--idle`` py-spy
samples only threads the kernel has running or runnable (not those blocked on a socket, a
lock or the GIL) — but also runnable threads waiting for a core, so with more runnable
threads than cores (the worker's 2 × 35 threads on 2 cores) the steps after a wake-up (a
Redis reply) are over-counted: a share of samples is not a share of CPU then. With
``--rate`` (py-spy's, default 100) instead of ``--cpu-s``, each stage is given as
samples / rate per image: for a ``py-spy record --gil`` profile (only the thread holding
each process's GIL is sampled) that is the time the stage held the GIL, i.e. its CPU in
Python and in C code that keeps the GIL; C code that releases it (Pillow's decoders,
hashlib on large buffers, system calls) is not counted then.

    .venv/bin/python bench/profile_top.py worker.raw.txt --stages --rate 100 --images 4000
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


#: (stage, regex on "function (file:line)"), tried in this order against every frame of a stack;
#: the first rule any frame matches names the stack's stage (specific steps before the code
#: that calls them: the hash before the validation that calls it, the folder lock before the
#: metadata.json merge that takes it, progress before the finish step).
STAGES = [
    ("perceptual hash (content/phash, imagehash)", r"content/phash\.py|/imagehash/"),
    ("validation: header parse + decode (Pillow)",
     r"images_service/validation/|download/variants\.py"),
    ("HTTP fetch + stream to temp + sha256 (fetching/)", r"images_service/fetching/"),
    ("store original (temp → original/, rename)",
     r"\b(store_original|put_file|_move_into_place|move_into_place)\b"),
    ("folder lock (Redis)", r"download/folder_locks\.py"),
    ("job progress (Redis)", r"images_service/jobs/progress\.py"),
    ("URL index writer (MongoDB bulk) + claim release",
     r"download/index_writer\.py|download/url_index\.py"),
    ("fetch-once claim (Redis)", r"download/fetch_once\.py"),
    ("slots, host state, robots (Redis)", r"download/(caps|host_state|robots)\.py"),
    ("metadata.json open/merge/write (+ fsync)",
     r"download/folder\.py|storage/(metadata|folders|files)\.py"),
    ("job status read (MongoDB, cached)",
     r"\b(stopped|job_status)\b \(.*workers/pipeline/context\.py"),
    ("write-back + finish (MongoDB)", r"workers/pipeline/finish\.py|images_service/jobs/"),
    ("scan (plan, enqueue)", r"workers/pipeline/scan\.py|download/planning\.py"),
    ("timeline (should be off)", r"workers/timeline\.py"),
    ("metrics (prometheus_client)", r"prometheus_client/|images_service/metrics\.py"),
    ("logging", r"logging/|images_service/logs\.py"),
    ("actor/pipeline code (rest)", r"/workers/|images_service/"),
    ("Dramatiq (consumer, ack, middleware)", r"dramatiq/"),
    ("thread pool / queues", r"threading\.py|queue\.py|concurrent/"),
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
    ap.add_argument("--stages", action="store_true", help="also break down by pipeline stage")
    ap.add_argument("--cpu-s", type=float, default=None,
                    help="CPU-seconds of the profiled processes over the run: shares → CPU-ms")
    ap.add_argument("--images", type=int, default=None, help="images of the run (CPU-ms/image)")
    ap.add_argument("--rate", type=float, default=None,
                    help="py-spy's sampling rate: stages as samples / rate per image")
    a = ap.parse_args()
    stages = collections.Counter()
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
        if a.stages:
            stage = next((name for name, rx in STAGES if any(re.search(rx, f) for f in frames)),
                         "other (interpreter start, imports, idle loops)")
            stages[stage] += n
    if not total:
        print("no samples")
        return 1
    print(f"samples: {total} (non-idle)\n")
    print("## by category (leaf-first rule)\n")
    for c, n in cats.most_common():
        print(f"{100 * n / total:5.1f}%  {c}")
    if a.stages:
        print("\n## by pipeline stage (first STAGES rule matching any frame)\n")
        for c, n in stages.most_common():
            ms = ""
            if a.images and a.cpu_s is not None:
                ms = f"  {1000 * a.cpu_s * n / total / a.images:6.3f} CPU-ms/image"
            elif a.images and a.rate:
                ms = f"  {1000 * n / a.rate / a.images:6.3f} ms/image sampled"
            print(f"{100 * n / total:5.1f}%{ms}  {c}")
    print(f"\n## top {a.top} functions by self samples\n")
    for f, n in self_n.most_common(a.top):
        print(f"{100 * n / total:5.1f}%  {f}")
    print(f"\n## top {a.top} functions by inclusive samples\n")
    for f, n in incl.most_common(a.top):
        print(f"{100 * n / total:5.1f}%  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
