#!/usr/bin/env bash
# README command 1: install (pinned) and run the whole service locally (`images-service dev`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/images-service dev "$@"
