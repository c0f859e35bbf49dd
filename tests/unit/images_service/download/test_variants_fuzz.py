"""Fuzz of the direct layer: 2,000 hostile files through validation and rendering (§14).

Every file of the seeded corpus (``tests/support/fuzz_corpus.py``) goes through
``validate_image`` and ``download.variants.validate`` in both ``IMAGE_VALIDATION`` modes, with
``PROCESSED_VARIANTS`` set, and through ``render_variants`` as a stored original
(``tests/support/fuzz_direct.py``): each call validates (every variant made or recorded
``processing_failed``) or raises ``DownloadError`` with a §6 validation code, never anything
else. The worker layer is ``tests/integration/test_worker_fuzz.py``; the long run, with more
files and both layers' files per second, is ``bench/fuzz_bench.py``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import features

from images_service.validation import SUPPORTED_FORMATS
from tests.support.fuzz_corpus import LONG_RUN_FILES, corpus, fuzz_file, write_corpus
from tests.support.fuzz_direct import VALIDATION_CODES, Checker, Tally
from tests.support.fuzz_mutations import BY_FORMAT, GENERIC

REPO = Path(__file__).resolve().parents[4]

# Hostile files make Pillow warn (corrupt EXIF, tags past the end…): expected here.
pytestmark = pytest.mark.filterwarnings("ignore:::PIL.*")

#: The whole minimum corpus of the issue: ~6 s on an idle 2-core machine.
CI_FILES = LONG_RUN_FILES


def test_the_corpus_is_seeded_and_covers_every_format_and_mutation() -> None:
    files = list(corpus(CI_FILES))
    assert len(files) == CI_FILES
    again = [fuzz_file(i) for i in (0, 77, 500, CI_FILES - 1)]
    assert [hashlib.sha256(f.data).digest() for f in again] == [
        hashlib.sha256(files[f.index].data).digest() for f in again]
    assert fuzz_file(500, seed=18).data != files[500].data
    # Another process, later: the same bytes (no clock, pid or C rand() in any file).
    digest = "import hashlib; from tests.support.fuzz_corpus import corpus; print(" \
             "hashlib.sha256(b''.join(f.data for f in corpus(200))).hexdigest())"
    other = subprocess.run([sys.executable, "-c", digest], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.strip()
    assert other == hashlib.sha256(b"".join(f.data for f in files[:200])).hexdigest()
    formats = {f.format for f in files}
    assert formats == {f for f in SUPPORTED_FORMATS if f != "AVIF" or features.check("avif")}
    used = Counter(part for f in files for part in f.mutation.split("+"))
    expected = set(GENERIC) | {name for fmt in formats for name in BY_FORMAT[fmt]}
    assert expected - set(used) == set(), used
    assert used["none"] > 40 and used["issue17"] == 1


def test_every_file_validates_or_fails_with_a_contract_code(tmp_path: Path) -> None:
    checker, tally = Checker(), Tally()
    for item, path in write_corpus(tmp_path, CI_FILES):
        outcome = checker.check_file(item, path)
        tally.add(outcome)
        if item.mutation in ("none", "issue17"):  # valid files: every call makes everything
            assert set(outcome.answers.values()) == {"ok"}, (item.name, outcome.answers)
            assert outcome.variants_failed == 0, item.name

    assert tally.escapes == [], f"{len(tally.escapes)} escapes:\n" + "\n".join(tally.escapes[:5])
    codes = Counter(answer for (_call, answer), n in tally.answers.items() for _ in range(n))
    # The corpus reaches every validation outcome (a harness that refused nothing, or
    # everything, would prove nothing).
    assert set(codes) == VALIDATION_CODES | {"ok", "no variant"}, codes
    assert tally.variants_failed == 0  # no valid file lost a variant to its metadata
