"""Turns fairseq's ``--log-format json`` output into JSON-lines records and reads them back.

fairseq 0.12 prints its JSON progress records through the logging module, one per line, as
``<time> | INFO | <tag> | {...}`` where the tag is ``train_inner``, ``train`` or ``valid``,
mixed with free-text messages. ``train.log`` keeps only the records, with their tag, so plots
and reports can read them without re-parsing fairseq's text output.
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any, Iterator

_RECORD = re.compile(r"\|\s*INFO\s*\|\s*(?P<tag>[\w.]+)\s*\|\s*(?P<body>\{.*\})\s*$")
TAGS = ("train_inner", "train", "valid")


def parse_line(line: str) -> dict[str, Any] | None:
    """The record in one fairseq log line, as ``{"tag": ..., **stats}``; None for other lines.

    fairseq formats numbers as strings ("9.557"); they are converted back to numbers.
    """
    match = _RECORD.search(line)
    if match is None or match["tag"] not in TAGS:
        return None
    try:
        stats = json.loads(match["body"])
    except json.JSONDecodeError:
        return None
    return {"tag": match["tag"], **{k: _number(v) for k, v in stats.items()}}


def read_records(path: Path, tag: str | None = None) -> Iterator[dict[str, Any]]:
    """Records of a ``train.log`` file, optionally only those with ``tag``."""
    with open(path) as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                if tag is None or record["tag"] == tag:
                    yield record


def training_cost(path: Path) -> dict[str, Any] | None:
    """Wall time per epoch of a run from its ``train.log`` (None if it has no epoch records).

    ``epoch_train_wall_s`` is fairseq's per-epoch ``train_wall`` (time in training steps, so
    validation and checkpoint saving are left out). The median skips epoch 1 when there are
    more, because epoch 1 also pays one-off costs (torch.compile, first-touch allocations).
    """
    epochs = list(read_records(path, "train"))
    if not epochs:
        return None
    walls = [r["train_train_wall"] for r in epochs]
    wps = [r["train_wps"] for r in epochs]
    steady = slice(1 if len(epochs) > 1 else 0, None)
    return {"epochs": len(epochs), "epoch_train_wall_s": walls,
            "median_epoch_train_wall_s": statistics.median(walls[steady]),
            "median_wps": statistics.median(wps[steady]), "total_wall_s": epochs[-1]["train_wall"]}


def summary_line(record: dict[str, Any]) -> str:
    """A short human-readable rendering of a record, for the terminal progress display."""
    tag = record["tag"]
    prefix = "" if tag == "train_inner" else f"{tag}_"
    keys = ("loss", "nll_loss", "ppl", "labo_temp", "labo_bound", "lr", "wps")
    fields = [f"epoch {record.get('epoch')}"]
    updates = record.get("num_updates", record.get(f"{prefix}num_updates"))
    if updates is not None:
        fields.append(f"updates {updates}")
    fields += [f"{k} {record[prefix + k]}" for k in keys if prefix + k in record]
    return f"[{tag}] " + " | ".join(fields)


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value
