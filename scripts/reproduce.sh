#!/usr/bin/env bash
# Reproduce a suite: scripts/reproduce.sh SUITE [--seeds 1,2] [--pairs ...] [--methods ls,labo] [...]
# Thin wrapper over labo_fairseq.pipeline.reproduce (see docs/TRAINING.md). env: VENV (default .venv)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${VENV:-$ROOT/.venv}/bin/python"
[[ -x "$PY" ]] || PY=python3
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m labo_fairseq.pipeline.reproduce "$@"
