"""PNG plots for a suite: validation loss per epoch per pair, and BLEU per method.

Validation curves come from each run's ``train.log`` (fairseq's ``valid`` records). Both the
criterion's loss and the NLL are drawn: the smoothed losses of CE, LS and LABO differ by
construction, while the NLL is comparable across methods.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from labo_fairseq.pipeline import fairseq_log, layout  # noqa: E402


def valid_curve(run_dir: Path, key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of ``valid_<key>`` in a run's train.log; empty if it has none."""
    log = Path(run_dir) / layout.TRAIN_LOG
    if not log.is_file():
        return [], []
    points = {r["epoch"]: r[f"valid_{key}"] for r in fairseq_log.read_records(log, "valid")
              if f"valid_{key}" in r}
    epochs = sorted(points)
    return epochs, [points[e] for e in epochs]


def plot_valid_loss(pair: str, runs: Mapping[str, Sequence[Path]], out: Path) -> Path | None:
    """One figure per pair: valid loss and valid NLL per epoch, one line per (method, seed)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    drawn = False
    for color, (method, run_dirs) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], runs.items()):
        for i, run_dir in enumerate(run_dirs):
            for ax, key in zip(axes, ("loss", "nll_loss")):
                epochs, values = valid_curve(run_dir, key)
                if epochs:
                    drawn = True
                    ax.plot(epochs, values, marker="o", color=color, alpha=0.9 - 0.2 * min(i, 3),
                            label=f"{method} {Path(run_dir).name}")
    if not drawn:
        plt.close(fig)
        return None
    for ax, title in zip(axes, ("validation loss (criterion)", "validation NLL (base 2)")):
        ax.set(title=f"{pair}: {title}", xlabel="epoch")
        ax.legend(fontsize="small")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_bleu(rows: Sequence[dict[str, Any]], methods: Sequence[str], out: Path) -> Path | None:
    """Grouped bars: BLEU mean (± std where several seeds) per pair and method."""
    rows = [r for r in rows if any(r["methods"][m]["bleu"]["mean"] is not None for m in methods)]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(5, 1.5 * len(rows) * len(methods)), 4))
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        stats = [r["methods"][method]["bleu"] for r in rows]
        ax.bar([i + j * width for i in range(len(rows))], [s["mean"] or 0 for s in stats], width,
               yerr=[s["std"] or 0 for s in stats], label=method, capsize=3)
    ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(rows))],
                  [r["pair"] for r in rows], rotation=20, ha="right")
    ax.set(ylabel="BLEU", title="test BLEU per method")
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
