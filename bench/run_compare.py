#!/usr/bin/env python3
"""Run the shared bench's harness with the engine registered as a peer.

``../shared/bench`` is read-only, so instead of editing its ``run_bench.py`` this script
imports it, adds the engine configurations to its ``CONFIGS`` and calls its ``main()``: same
measurements (``/usr/bin/time -v``, process-tree RSS, nginx CPU, loopback guard on
``PYTHONPATH``, interleaved runs, verification with layout ``scan``).

Usage (server started with ``../shared/bench/server.sh start``, corpus and URLs made):

    /tmp/bench-venv-base/bin/python bench/run_compare.py --runs 3 \\
        --only naive,engine-p1t16,engine-p2t16,engine-p2t16-doc4

The engine configs run with this repo's ``.venv`` Python.
"""

from __future__ import annotations

import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED_BENCH = os.environ.get(
    "BENCH_SHARED_DIR", os.path.join(os.path.dirname(REPO), "shared", "bench")
)
ENGINE_PY = os.environ.get("ENGINE_PYTHON", os.path.join(REPO, ".venv", "bin", "python"))


def _load_run_bench():
    spec = importlib.util.spec_from_file_location(
        "run_bench", os.path.join(SHARED_BENCH, "run_bench.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def main() -> int:
    run_bench = _load_run_bench()
    script = os.path.join(HERE, "engine_peer.py")
    for name, args in {
        "engine-p1t16": ["--processes", "1", "--threads", "16"],
        "engine-p1t32": ["--processes", "1", "--threads", "32"],
        "engine-p2t16": ["--processes", "2", "--threads", "16"],
        "engine-p2t16-doc4": ["--processes", "2", "--threads", "16", "--per-doc", "4"],
    }.items():
        run_bench.CONFIGS[name] = {
            "py": ENGINE_PY, "script": script, "args": args, "layout": "scan",
            "out": "/tmp/bench-out-engine",
        }
    return run_bench.main()


if __name__ == "__main__":
    sys.exit(main())
