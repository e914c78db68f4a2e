"""``data/<pair>/manifest.json`` and the atomic, resumable stage step built on it.

A stage builds one output folder (``raw``, ``spm``, ``bin``, ...) under ``<name>.tmp``, renames
it into place and only then stamps ``stages[<name>]`` in the manifest, which is itself rewritten
atomically. A stage is complete only when it is stamped *and* its folder exists; anything
else (a leftover ``.tmp``, an unstamped folder from a run killed between rename and stamp) is
rebuilt. Redoing a stage clears the stamps of the stages after it.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable


class Manifest:
    """In-memory view of ``manifest.json``; every change is written through atomically."""

    def __init__(self, pair_dir: Path, stage_order: tuple[str, ...]):
        self.pair_dir = pair_dir
        self.path = pair_dir / "manifest.json"
        self.stage_order = stage_order
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.data.setdefault("stages", {})

    def exists(self) -> bool:
        """Whether a manifest was already written for this pair folder."""
        return self.path.is_file()

    def update(self, **fields: Any) -> None:
        """Set top-level fields and write the manifest."""
        self.data.update(fields)
        self._write()

    def is_complete(self, stage: str) -> bool:
        """A stage counts as done when stamped and its output folder is present."""
        return stage in self.data["stages"] and (self.pair_dir / stage).is_dir()

    def run_stage(self, stage: str, build: Callable[[Path], None]) -> bool:
        """Run ``build(tmp_dir)`` unless ``stage`` is complete; return whether it ran."""
        if self.is_complete(stage):
            return False
        final = self.pair_dir / stage
        tmp = self.pair_dir / f"{stage}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            build(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._clear_from(stage)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        self.data["stages"][stage] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._write()
        return True

    def _clear_from(self, stage: str) -> None:
        later = self.stage_order[self.stage_order.index(stage):]
        self.data["stages"] = {k: v for k, v in self.data["stages"].items() if k not in later}
        self._write()

    def _write(self) -> None:
        self.pair_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name("manifest.json.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, self.path)
