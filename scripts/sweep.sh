#!/usr/bin/env bash
# Choose the LABO budget on validation BLEU: scripts/sweep.sh PAIR [--budgets 0.25,0.5,1,2,4] [--seed S] [...]
# Thin wrapper over labo_fairseq.pipeline.sweep (see docs/TRAINING.md). env: VENV (default .venv)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${VENV:-$ROOT/.venv}/bin/python"
[[ -x "$PY" ]] || PY=python3
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m labo_fairseq.pipeline.sweep "$@"
