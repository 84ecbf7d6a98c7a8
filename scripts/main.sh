#!/usr/bin/env bash
# The README's main job on the embedded default: installs what is missing, then runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/callpark demo "$@"
