"""Fuzz of the worker: corpus files served over loopback HTTP to a real worker (contract §14).

A seeded sample of the fuzz corpus (``tests/support/fuzz_corpus.py``; always the issue 17
JPEG), in documents of four corpus files and one good image, as one collection job, in each
``IMAGE_VALIDATION`` mode with ``PROCESSED_VARIANTS`` set (and in ``fast`` without, where the
structural rules run instead of a decode, then again with variants: made from the stored
originals): a real ``images-service worker``
subprocess, Redis, nx-27017 and the loopback image server. The job completes; every image is
downloaded or failed with a §6 code, the same answer the direct layer gives the file
(``tests/support/fuzz_direct.py``); the good image of every document is downloaded with every
variant; the tree holds exactly the files the ``metadata.json`` files name, each with its
recorded sha256; the worker's log holds no traceback (``tests/support/fuzz_worker.py``). The
long run over the whole corpus is ``bench/fuzz_bench.py``.
"""

from __future__ import annotations

import random

import pytest

from images_service.validation import validate_image
from tests.support.fuzz_corpus import LONG_RUN_FILES, fuzz_file, issue17_jpeg
from tests.support.fuzz_direct import Checker, fuzz_env
from tests.support.fuzz_worker import documents, outcome_of, run

#: Corpus files per case: 75 documents, a job of ~3 s on a 2-core machine.
SAMPLE_FILES = 300
PER_DOC = 4


def sample(name: str) -> list:
    """The issue's JPEG and a seeded sample of the corpus (a different one per case)."""
    issue = next(i for i in range(LONG_RUN_FILES) if fuzz_file(i).mutation == "issue17")
    rng = random.Random(f"worker-fuzz/{name}")
    others = rng.sample([i for i in range(LONG_RUN_FILES) if i != issue], SAMPLE_FILES - 1)
    items = [fuzz_file(i) for i in [issue, *others]]
    assert items[0].data == issue17_jpeg()
    return items


@pytest.mark.filterwarnings("ignore:::PIL.*")
@pytest.mark.parametrize(("mode", "with_variants"), [("full", True), ("fast", True),
                                                     ("fast", False)],
                         ids=["full", "fast", "fast-then-variants"])
def test_a_worker_fails_only_the_hostile_images(mode, with_variants, make_settings, start_worker,
                                                image_server, tmp_path):
    # With variants, both modes decode (derived images need the pixels, contract §8); fast
    # mode's structural rules run in the worker only without variants: the third case, which
    # then makes the variants of what it stored (undecoded) with a second worker.
    items = sample(f"{mode}-{with_variants}")
    checker = Checker()  # what the service's validation answers in process, same settings
    answers = {}
    tiny = set()  # stored as tiny placeholders by fast mode: never given variants (§18)
    for item in items:
        path = tmp_path / f"{item.name}{item.extension}"
        path.write_bytes(item.data)
        answers[item.index] = checker.check_file(item, path).answers
        if answers[item.index]["fast/validate_image"] == "ok" and validate_image(
                path, checker.plain["fast"]).placeholder == "tiny":
            tiny.add(item.index)
    call = f"{mode}/variants.validate" if with_variants else f"{mode}/validate_image"
    env = {"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
           "MAX_RETRIES": "1", "RETRY_BACKOFF_MIN_MS": "50", "RETRY_BACKOFF_MAX_MS": "200"}
    settings = make_settings({**fuzz_env(mode, with_variants=with_variants), **env})
    worker = start_worker(settings, threads=4)
    docs = documents(image_server, items, per_doc=PER_DOC, prefix=mode)

    expected = {index: outcome_of(a[call]) for index, a in answers.items()}
    result = run(settings, docs, f"fuzz_{mode}", worker.log, expected=expected, timeout_s=120)

    assert result.problems == [], "\n".join(result.problems[:10])
    assert result.files == SAMPLE_FILES
    # The sample reaches both answers: files downloaded (with variants) and files refused.
    assert result.outcomes["downloaded"] > 50 and result.outcomes["corrupt_image"] > 50, (
        result.outcomes)
    assert (result.variants["made"] > 100) is with_variants
    if with_variants:
        return

    # Variants configured: a stored image is skipped and its variants made from the stored
    # original, which fast mode stored without decoding it; a failed one is fetched again.
    worker.stop()
    settings = make_settings({**fuzz_env(mode), **env})
    worker = start_worker(settings, threads=4, name="with-variants")
    expected = {index: "skipped" if a[call] == "ok" else outcome_of(a["fast/variants.validate"])
                for index, a in answers.items()}
    undecodable = sum(a[call] == "ok" and a["stored/render_variants"] != "ok"
                      and index not in tiny for index, a in answers.items())

    again = run(settings, docs, f"fuzz_{mode}", worker.log, expected=expected, timeout_s=120)

    assert again.problems == [], "\n".join(again.problems[:10])
    assert again.outcomes["skipped"] == result.outcomes["downloaded"]
    assert again.variants["processing_failed"] == 3 * undecodable > 0, again.variants
