#!/usr/bin/env bash
# Prepare one pair's data into data/<pair>/ (thin wrapper over labo_fairseq.data.prepare).
set -euo pipefail
if [[ $# -eq 0 || "$1" == "--help" || "$1" == "-h" ]]; then
  cat <<'USAGE'
usage: scripts/prepare.sh PAIR [--mirror DIR | --download] [--data-dir DIR]
                               [--max-train-lines N] [--vocab-size V]
  PAIR   a configs/<PAIR>.yaml, e.g. multi30k-en-de, tatoeba-de-en
  Reads ../shared/corpora (if present) or downloads, verifies sha256 checksums, writes
  data/<PAIR>/{raw,spm,spm_enc,bin,manifest.json}. Resumable; see docs/DATA.md.
  env: VENV (default .venv)
USAGE
  exit 0
fi
cd "$(dirname "$0")/.."
exec "${VENV:-.venv}/bin/python" -m labo_fairseq.data.prepare "$@"
