#!/usr/bin/env bash
# The README's test command: installs what is missing, lints, type-checks, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
echo "== ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check --quiet . || { echo "ruff format: files need formatting (run .venv/bin/ruff format .)" >&2; exit 1; }
echo "== mypy" >&2
.venv/bin/mypy
echo "== pytest" >&2
exec .venv/bin/pytest "$@"
