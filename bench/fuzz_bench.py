"""The long fuzz run (issue 17): the whole corpus through the direct layer and a real worker.

The CI runs a part of this (``tests/unit/images_service/download/test_variants_fuzz.py``: the
first 2,000 files, direct layer; ``tests/integration/test_worker_fuzz.py``: 300 files per
case through a worker). Here every one of ``--files`` corpus files (default 2,000; file ``i``
is the same file in every run of a seed, so a larger run extends a smaller one) goes

1. through the direct layer (``tests/support/fuzz_direct.py``, in this process):
   ``validate_image`` and ``download.variants.validate`` in ``full`` and ``fast``, and
   ``render_variants`` on the file as a stored original;
2. through a real ``images-service worker`` (``--processes`` × ``--threads``) as one REST
   collection job per case, ``--per-doc`` corpus files and one good image per document,
   served by the loopback image server (``tests/support/fuzz_worker.py``): ``full`` and
   ``fast`` with ``PROCESSED_VARIANTS``, and ``fast`` without (where the structural rules
   run), then again with (variants made from the stored originals, as on any re-run).

``MAX_IMAGE_PIXELS`` is 4,194,304 (``--max-pixels``): a lying header below the limit is
decoded, and a frame at the default limit (89 MP) costs up to 358 MB per thread, which is the
decode budget's concern (issue 17), not this run's. It starts its own nx-27017 (temporary
directory) and claims a Redis DB like the tests do (the machine's Redis on 6379, or a private
redis-server), flushed at the end. The image host is one loopback address, so
``MAX_CONCURRENT_PER_DOMAIN`` is raised to the worker's thread count.

Printed: files and formats; per direct call and per worker case, the answers (``ok`` or
``downloaded``, and each error code) with counts and the files per second; every escape or
contract problem (then the exit status is 1).

    .venv/bin/python bench/fuzz_bench.py                 # 2,000 files, ~1 min
    .venv/bin/python bench/fuzz_bench.py --files 10000 --seed 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' support modules (run as a script from anywhere)

import redis  # noqa: E402

from images_service.config.settings import load_settings  # noqa: E402
from images_service.dev.embedded import port_open, start_embedded_mongo, start_redis  # noqa: E402
from tests.support.backends import _claim_db  # noqa: E402
from tests.support.fuzz_corpus import DEFAULT_SEED, LONG_RUN_FILES, write_corpus  # noqa: E402
from tests.support.fuzz_direct import MAX_PIXELS, Checker, Tally, fuzz_env  # noqa: E402
from tests.support.fuzz_worker import documents, outcome_of, run  # noqa: E402
from tests.support.image_server import ImageServer  # noqa: E402
from tests.support.pipeline import KEY, WorkerProcess  # noqa: E402

#: Worker cases: name -> (IMAGE_VALIDATION, with variants, the direct call it must agree with).
#: ``fast-then-variants`` runs twice: without variants, then with (made from the originals
#: fast mode stored without decoding them; failed images fetched again).
CASES = {"full": ("full", True, "full/variants.validate"),
         "fast": ("fast", True, "fast/variants.validate"),
         "fast-then-variants": ("fast", False, "fast/validate_image")}


def direct_layer(files: list, show: int, max_pixels: int
                 ) -> tuple[Tally, dict[int, dict[str, str]], float]:
    checker, tally = Checker(MAX_IMAGE_PIXELS=str(max_pixels)), Tally()
    answers: dict[int, dict[str, str]] = {}
    started_s = time.monotonic()
    for item, path in files:
        outcome = checker.check_file(item, path)
        tally.add(outcome)
        answers[item.index] = outcome.answers
    seconds = time.monotonic() - started_s
    calls = sorted({call for call, _ in tally.answers})
    print(f"\ndirect layer: {tally.files} files in {seconds:.1f} s "
          f"({tally.files / seconds:.0f} files/s for all five calls)")
    for call in calls:
        counts = {answer: n for (c, answer), n in sorted(tally.answers.items()) if c == call}
        print(f"  {call:26} {tally.files / tally.call_seconds[call]:7.0f} files/s   {counts}")
    print(f"  variants lost by valid files: {tally.variants_failed}")
    report("escapes", tally.escapes, show)
    return tally, answers, seconds


def worker_layer(args: argparse.Namespace, files: list, answers: dict, work: Path,
                 mongo_uri: str, redis_url: str, show: int) -> list[str]:
    problems: list[str] = []
    items = [item for item, _path in files]
    with ImageServer("127.0.0.1") as server:
        for name in args.cases.split(","):
            mode, with_variants, call = CASES[name]
            docs = documents(server, items, per_doc=args.per_doc, prefix=name)
            expected = {index: outcome_of(calls[call]) for index, calls in answers.items()}
            passes = [(with_variants, expected)]
            if not with_variants:  # again with variants, over the same tree
                passes.append((True, {
                    index: "skipped" if calls[call] == "ok"
                    else outcome_of(calls[f"{mode}/variants.validate"])
                    for index, calls in answers.items()}))
            for number, (variants_on, expected) in enumerate(passes):
                settings = load_settings({
                    **fuzz_env(mode, with_variants=variants_on, max_pixels=args.max_pixels),
                    "MONGODB_URI": mongo_uri, "REDIS_URL": redis_url,
                    "STORAGE_PATH": str(work / name / "images"),
                    "JOBS_DATABASE": f"fuzz_jobs_{name.replace('-', '_')}", "API_KEY": KEY,
                    "ENVIRONMENT": "production", "ALLOW_PRIVATE_NETWORKS": "true",
                    "API_RATE_LIMIT": "1000000/minute", "MAX_RETRIES": "1",
                    "RETRY_BACKOFF_MIN_MS": "50", "RETRY_BACKOFF_MAX_MS": "200",
                    "MAX_CONCURRENT_PER_DOMAIN": str(args.processes * args.threads),
                    "MAX_CONCURRENT_DOWNLOADS": str(args.processes * args.threads)})
                (work / name).mkdir(parents=True, exist_ok=True)
                worker = WorkerProcess(settings, work / name / f"worker-{number}.log",
                                       args.processes, args.threads).wait_ready()
                try:
                    result = run(settings, docs, f"fuzz_{name.replace('-', '_')}", worker.log,
                                 expected=expected, timeout_s=args.timeout)
                finally:
                    worker.stop()
                    worker.kill()
                print(f"\nworker, {name}{' (second pass)' if number else ''} ({mode}, "
                      f"variants {'on' if variants_on else 'off'}, "
                      f"{args.processes}x{args.threads}): {result.files} files in "
                      f"{result.documents} documents, {result.seconds:.1f} s, "
                      f"{result.files_per_s:.0f} files/s")
                print(f"  images: {dict(sorted(result.outcomes.items()))}")
                print(f"  variants: {dict(result.variants)}")
                report("problems", result.problems, show)
                problems.extend(result.problems)
    return problems


def report(what: str, lines: list[str], show: int) -> None:
    print(f"  {what}: {len(lines)}")
    for line in lines[:show]:
        print("    " + line.replace("\n", "\n    "))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=LONG_RUN_FILES)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--layers", default="direct,worker")
    parser.add_argument("--cases", default=",".join(CASES), help="worker cases")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--per-doc", type=int, default=4, help="corpus files per document")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per worker job")
    parser.add_argument("--show", type=int, default=5, help="escapes/problems printed")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help="MAX_IMAGE_PIXELS (lying headers below it are decoded: memory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fuzz-bench-") as tmp:
        work = Path(tmp)
        started_s = time.monotonic()
        files = write_corpus(work / "corpus", args.files, args.seed)
        formats = Counter(item.format for item, _ in files)
        mutations = Counter(item.mutation.split("+")[0] for item, _ in files)
        print(f"corpus: {len(files)} files (seed {args.seed}) written in "
              f"{time.monotonic() - started_s:.1f} s, "
              f"{sum(p.stat().st_size for _, p in files) / 2**20:.1f} MiB")
        print(f"  formats: {dict(sorted(formats.items()))}")
        print(f"  first mutation: {dict(sorted(mutations.items()))}")
        tally, answers, _ = direct_layer(files, args.show, args.max_pixels)
        failures = list(tally.escapes)
        if "worker" in args.layers:
            mongo = start_embedded_mongo(work / "mongo")
            own_redis = None if port_open("127.0.0.1", 6379) else start_redis(work / "redis")
            base = (f"redis://127.0.0.1:{own_redis.port}" if own_redis
                    else "redis://127.0.0.1:6379")
            db, _token = _claim_db(base)
            redis_url = f"{base}/{db}"
            try:
                failures += worker_layer(
                    args, files, answers, work / "worker",
                    f"mongodb://127.0.0.1:{mongo.port}/?directConnection=true", redis_url,
                    args.show)
            finally:
                redis.Redis.from_url(redis_url).flushdb()  # only the claimed DB
                mongo.stop()
                if own_redis:
                    own_redis.stop()
    print(f"\n{'FAILED' if failures else 'OK'}: {len(failures)} escapes or problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
