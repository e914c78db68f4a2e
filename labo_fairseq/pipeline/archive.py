"""Keeps what every reported number needs, without the checkpoints, under ``results/``.

Checkpoints are large and are never committed, so a results table built from
``checkpoints/`` could not be recomputed on another machine. After a run is evaluated its
small files (``run.json``, the JSON-lines ``train.log``, ``result*.json`` and ``hyp.*.txt``)
are copied to ``<archive root>/<pair>/<method>/seed<S>/``, the same layout as the run
directories, and reports read from there. In the archived ``result*.json`` the hypotheses are
named relative to the record itself and references relative to the repository, so a clone
that has re-run ``scripts/prepare.sh`` can recompute every score and bootstrap test.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from labo_fairseq.pipeline import layout

_KEPT = (layout.RUN_JSON, layout.TRAIN_LOG, *(layout.result_json(s) for s in layout.SPLITS),
         *(layout.hyp_file(s) for s in layout.SPLITS))


def store(run_dir: Path, dest: Path) -> Path:
    """Copy ``run_dir``'s small files to ``dest`` (atomically per file); returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in _KEPT:
        src = run_dir / name
        if not src.is_file():
            continue
        tmp = dest / (name + ".tmp")
        if name.startswith("result"):
            tmp.write_text(json.dumps(_portable(json.loads(src.read_text())), indent=2) + "\n")
        else:
            shutil.copyfile(src, tmp)
        tmp.replace(dest / name)
    return dest


def load_result(path: Path) -> dict[str, Any]:
    """A ``result*.json`` record with its file paths made absolute again.

    Works for run directories (absolute paths) and archives (relative paths).
    """
    record = json.loads(path.read_text())
    for key, base in (("hypotheses", path.parent), ("references", layout.REPO_ROOT),
                      ("tokenized_references", layout.REPO_ROOT)):
        if record.get(key) and not Path(record[key]).is_absolute():
            record[key] = str(base / record[key])
    return record


def _portable(record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    out["hypotheses"] = Path(record["hypotheses"]).name
    for key in ("references", "tokenized_references"):
        if out.get(key):
            path = Path(out[key])
            if path.is_relative_to(layout.REPO_ROOT):
                out[key] = str(path.relative_to(layout.REPO_ROOT))
    return out
