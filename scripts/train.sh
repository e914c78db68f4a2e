#!/usr/bin/env bash
# Train one run: scripts/train.sh PAIR METHOD [--seed S] [--gpus N] [--data-dir DIR] [--save-root DIR] [-- fairseq args]
# Thin wrapper over labo_fairseq.pipeline.train (see docs/TRAINING.md). env: VENV (default .venv)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${VENV:-$ROOT/.venv}/bin/python"
[[ -x "$PY" ]] || PY=python3
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m labo_fairseq.pipeline.train "$@"
