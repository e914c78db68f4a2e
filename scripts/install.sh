#!/usr/bin/env bash
# Creates .venv (or uses $VENV) with the pinned dependency set and installs labo_fairseq editable.
# fairseq-fixed builds C++ extensions from its sdist against the torch already installed, so torch
# goes first and fairseq is built without build isolation (an isolated build would pull a CUDA torch).
set -euo pipefail
if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  echo "usage: scripts/install.sh   (env: VENV=path, default .venv; PYTHON=python3.11)"; exit 0
fi
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip wheel setuptools
"${PIP[@]}" install torch==2.13.0 numpy==1.26.4 Cython==3.3.1
# pip caches the built fairseq wheel (~/.cache/pip), so only the first install compiles (~4 min).
"${PIP[@]}" install --no-build-isolation fairseq-fixed==0.12.3.1
"${PIP[@]}" install --no-build-isolation -e .
echo "installed into $VENV"
