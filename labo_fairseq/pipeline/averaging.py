"""Averages the parameters of a run's last K epoch checkpoints (fairseq's averaging recipe).

fairseq ships ``scripts/average_checkpoints.py`` in its source tree but not in the installed
package, so the same logic lives here: sum every model tensor across checkpoints, divide by K
(integer tensors floor-divide), keep the newest checkpoint's other state. Checkpoints load with
torch's weights-only unpickler; ``import labo_fairseq`` allowlists the config types they hold.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import torch

import labo_fairseq  # noqa: F401  (allowlists fairseq's checkpoint types for weights-only loading)

_EPOCH_CHECKPOINT = re.compile(r"checkpoint(\d+)\.pt$")


def last_epoch_checkpoints(run_dir: Path, k: int) -> list[Path]:
    """The ``k`` newest ``checkpoint<epoch>.pt`` files, oldest first (fewer if fewer exist)."""
    found = sorted(((int(m[1]), p) for p in Path(run_dir).iterdir()
                    if (m := _EPOCH_CHECKPOINT.match(p.name))), key=lambda t: t[0])
    return [p for _, p in found[-k:]] if k > 0 else []


def average_checkpoints(paths: list[Path]) -> dict:
    """A checkpoint state whose model parameters are the mean of those in ``paths``."""
    if not paths:
        raise ValueError("no checkpoints to average")
    summed: OrderedDict[str, torch.Tensor] = OrderedDict()
    state: dict = {}
    for path in paths:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = state["model"]
        if summed and list(model) != list(summed):
            raise ValueError(f"{path} has different parameters than {paths[0]}")
        for name, tensor in model.items():
            value = tensor.float() if tensor.dtype == torch.half else tensor.clone()
            summed[name] = summed[name] + value if name in summed else value
    for name, total in summed.items():
        summed[name] = total / len(paths) if total.is_floating_point() else total // len(paths)
    state["model"] = summed
    return state


def write_average(run_dir: Path, k: int) -> tuple[Path, list[Path]]:
    """Average the last ``k`` epoch checkpoints of ``run_dir`` into ``checkpoint.avg<n>.pt``.

    Returns (checkpoint to decode with, checkpoints it comes from). With one epoch checkpoint
    (or ``k`` <= 1) that checkpoint is used as is; with none, ``checkpoint_last.pt``. ``n`` is
    the number actually averaged (fewer than ``k`` if fewer epochs were kept).
    """
    paths = last_epoch_checkpoints(run_dir, max(k, 1))
    if not paths:
        last = Path(run_dir) / "checkpoint_last.pt"
        if not last.is_file():
            raise FileNotFoundError(f"{run_dir} has no checkpoints")
        return last, [last]
    if len(paths) == 1:
        return paths[0], paths
    out = Path(run_dir) / f"checkpoint.avg{len(paths)}.pt"
    torch.save(average_checkpoints(paths), out)
    return out, paths
