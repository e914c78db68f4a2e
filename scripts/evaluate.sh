#!/usr/bin/env bash
# Evaluate one run: scripts/evaluate.sh RUN_DIR [--k K] [-- fairseq-generate args]
# Thin wrapper over labo_fairseq.pipeline.evaluate (see docs/TRAINING.md). env: VENV (default .venv)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${VENV:-$ROOT/.venv}/bin/python"
[[ -x "$PY" ]] || PY=python3
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m labo_fairseq.pipeline.evaluate "$@"
