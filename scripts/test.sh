#!/usr/bin/env bash
# Installs the pinned environment (scripts/install.sh) and runs the default test suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` for the opt-in slow tests.
set -euo pipefail
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  echo "usage: scripts/test.sh [pytest args]   (env: VENV=path, default .venv)"; exit 0
fi
cd "$(dirname "$0")/.."
bash scripts/install.sh
"${VENV:-.venv}/bin/python" -m pytest -q "$@"
