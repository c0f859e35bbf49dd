#!/usr/bin/env bash
# Create .venv (if missing) and install the service with pinned dependencies (constraints.txt),
# with the [dev] extra (embedded MongoDB-compatible server for `images-service dev`) and [test].
# Idempotent and quick when nothing changed: the install is skipped while the stamp is fresh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(cat constraints.txt setup.cfg pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,test]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
