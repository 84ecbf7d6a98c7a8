#!/usr/bin/env bash
# The README's main job: a real failover drill on the embedded default cluster (installs what is missing first).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/callpark drill "$@"
