#!/usr/bin/env bash
# The README's main job: install, then LS vs LABO on Multi30k en→de from the offline mirror on a
# short schedule (about 15 minutes on 2 CPU cores), ending with the BLEU table and plot paths.
# Finished runs are kept and skipped on a rerun (scripts/reproduce.sh); results go to results/demo/.
set -euo pipefail
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  echo "usage: scripts/demo.sh [--mirror DIR]   (env: VENV=path, DEMO_EPOCHS=N, default 2)"; exit 0
fi
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/reproduce.sh multi30k-en-de --methods ls,labo --seeds 1 \
  --save-root checkpoints/demo --results-dir results/demo "$@" \
  -- --max-epoch "${DEMO_EPOCHS:-2}"
cat results/demo/multi30k-en-de.md
echo "plots: results/demo/multi30k-en-de/   runs: checkpoints/demo/multi30k-en-de/"
