#!/usr/bin/env bash
# README command 2: install (pinned) and run the whole test suite.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh || exit 1
bash scripts/ensure_chromium.sh || exit 1
# Test files are spread over TEST_WORKERS processes (default 4: most tests wait on servers,
# not on the 2 cores); each process claims its own Redis DB and starts its own nx-27017.
# TEST_WORKERS=0 runs everything in this one process.
workers="${TEST_WORKERS:-4}"
if [ "$workers" = "0" ]; then
  .venv/bin/python -m pytest "$@"
else
  .venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
fi
code=$?
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$code"
