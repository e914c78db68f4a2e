"""What LABO does to the training targets of a real model: the paper's "Figure 1" view.

``targets``: for one source/target sentence pair and a checkpoint, teacher-force the model and
show, for each gold token, the label-smoothing target beside the LABO target (the top-k classes
with their probabilities) and the temperature LABO chose, as a PNG.
``histogram``: the distribution of per-token temperatures over a binarized split (validation by
default), as a PNG plus summary figures on stdout.

    python -m labo_fairseq.inspector targets --checkpoint RUN/checkpoint_best.pt \\
        --data data/multi30k-en-de --source "A man rides a bike." --target "Ein Mann fährt Rad." \\
        --out figure1.png
    python -m labo_fairseq.inspector histogram --checkpoint RUN/checkpoint_best.pt \\
        --data data/multi30k-en-de --out temperatures.png
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from labo_fairseq.loss import DEFAULT_BUDGET
from labo_fairseq.solver import distribution_from_solution, solve


@dataclass
class LoadedModel:
    """A fairseq model in eval mode with its task (dictionaries) and sentencepiece processor."""

    model: torch.nn.Module
    task: object
    spm: object


def load(checkpoint: Path, data: Path) -> LoadedModel:
    """Loads ``checkpoint`` with the prepared data dir ``data`` (its ``bin/`` and ``spm/``)."""
    import sentencepiece

    import labo_fairseq  # noqa: F401  (criterion registry, weights-only allowlist)
    from fairseq import checkpoint_utils

    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} not found: pass a run's checkpoint_*.pt")
    bin_dir, spm_model = Path(data) / "bin", Path(data) / "spm" / "spm.model"
    for needed in (bin_dir, spm_model):
        if not needed.exists():
            raise FileNotFoundError(f"{needed} missing: run scripts/prepare.sh for this pair first")
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides={"data": str(bin_dir)}
    )
    model = models[0].eval()
    return LoadedModel(model, task, sentencepiece.SentencePieceProcessor(model_file=str(spm_model)))


def _encode(loaded: LoadedModel, text: str, dictionary) -> Tensor:
    pieces = " ".join(loaded.spm.encode(text, out_type=str))
    return dictionary.encode_line(pieces, add_if_not_exist=False, append_eos=True).long()


@torch.no_grad()
def teacher_forced_logits(loaded: LoadedModel, src_tokens: Tensor, tgt_tokens: Tensor) -> Tensor:
    """Logits [T, V] of the model for each position of ``tgt_tokens`` (ending with eos)."""
    eos = loaded.task.target_dictionary.eos()
    prev = torch.cat([torch.tensor([eos]), tgt_tokens[:-1]]).unsqueeze(0)
    net_out = loaded.model(
        src_tokens.unsqueeze(0), torch.tensor([src_tokens.numel()]), prev
    )
    return net_out[0][0].float()


@dataclass
class TokenTargets:
    """Both soft targets for one gold token."""

    gold: str
    temperature: float
    ls_top: List[tuple]
    labo_top: List[tuple]


def soft_targets(
    logits: Tensor, target: Tensor, symbols: Sequence[str], alpha: float, budget: float, k: int
) -> List[TokenTargets]:
    """Top-k classes of q_LS = (1−α)e_y + α·ū and q_LABO = (1−α)e_y + α·u* per position."""
    solution = solve(logits, target, budget)
    u, beta = distribution_from_solution(logits, target, solution), solution.beta
    vocab = logits.size(1)
    rows = []
    for i, y in enumerate(target.tolist()):
        q_labo = alpha * u[i].double()
        q_labo[y] += 1.0 - alpha
        top = torch.topk(q_labo, k)
        others = [j for j in top.indices.tolist() if j != y][: k - 1]
        ls_other = alpha / (vocab - 1)
        rows.append(
            TokenTargets(
                gold=symbols[y],
                temperature=math.inf if beta[i] == 0 else float(1.0 / beta[i]),
                ls_top=[(symbols[y], 1.0 - alpha)] + [(symbols[j], ls_other) for j in others],
                labo_top=[(symbols[j], float(q_labo[j])) for j in top.indices.tolist()],
            )
        )
    return rows


def plot_targets(rows: List[TokenTargets], out: Path, title: str) -> None:
    """One row of panels per gold token: LS target (left) and LABO target (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 1.6 * len(rows) + 0.6), squeeze=False)
    for (ax_ls, ax_labo), row in zip(axes, rows):
        for ax, top, name in ((ax_ls, row.ls_top, "LS"), (ax_labo, row.labo_top, "LABO")):
            labels = [s for s, _ in top]
            probs = [p for _, p in top]
            colors = ["tab:green" if s == row.gold else "tab:blue" for s in labels]
            ax.bar(range(len(top)), probs, color=colors)
            ax.set_yscale("log")
            ax.set_ylim(1e-5, 1.0)
            ax.set_xticks(range(len(top)), labels, fontsize=7, rotation=30)
            extra = "" if name == "LS" else f"  T={row.temperature:.2f}"
            ax.set_title(f"{name} target for '{row.gold}'{extra}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


@torch.no_grad()
def split_temperatures(
    loaded: LoadedModel, split: str, budget: float, max_sentences: Optional[int]
) -> Tensor:
    """Per-token temperatures T = 1/β (∞ where u* = ū) over a binarized split."""
    loaded.task.load_dataset(split)
    dataset = loaded.task.dataset(split)
    pad = loaded.task.target_dictionary.pad()
    temps = []
    count = len(dataset) if max_sentences is None else min(max_sentences, len(dataset))
    for start in range(0, count, 64):
        batch = dataset.collater([dataset[i] for i in range(start, min(start + 64, count))])
        net_out = loaded.model(**batch["net_input"])
        logits = net_out[0].float().reshape(-1, net_out[0].size(-1))
        target = batch["target"].reshape(-1)
        keep = target != pad
        beta = solve(logits[keep], target[keep], budget).beta
        temps.append(torch.where(beta > 0, beta.clamp_min(1e-30).reciprocal(), math.inf))
    return torch.cat(temps)


def plot_histogram(temps: Tensor, out: Path, title: str) -> dict:
    """Histogram of log10 T over finite temperatures; returns summary figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = temps[torch.isfinite(temps)]
    summary = {
        "tokens": int(temps.numel()),
        "bound_fraction": float((temps > 1.0 + 1e-6).float().mean()) if temps.numel() else 0.0,
        "uniform_fraction": float((~torch.isfinite(temps)).float().mean()) if temps.numel() else 0.0,
        "median_temperature": float(finite.median()) if finite.numel() else math.nan,
        "mean_temperature": float(finite.mean()) if finite.numel() else math.nan,
    }
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(finite.log10().numpy(), bins=60, color="tab:blue")
    ax.set_xlabel("log10 temperature T (T = 1: budget not binding)")
    ax.set_ylabel("target tokens")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labo_fairseq.inspector", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("targets", "histogram"):
        p = sub.add_parser(name)
        p.add_argument("--checkpoint", type=Path, required=True)
        p.add_argument("--data", type=Path, required=True, help="prepared data dir data/<pair>")
        p.add_argument("--budget", type=float, default=None,
                       help="δ in nats (default: the checkpoint's --labo-budget, else the criterion's default)")
        p.add_argument("--out", type=Path, required=True, help="PNG to write")
    sub.choices["targets"].add_argument("--source", required=True)
    sub.choices["targets"].add_argument("--target", required=True)
    sub.choices["targets"].add_argument("--alpha", type=float, default=0.1)
    sub.choices["targets"].add_argument("--top-k", type=int, default=5)
    sub.choices["targets"].add_argument("--max-tokens", type=int, default=8,
                                        help="gold tokens shown (from the start)")
    sub.choices["histogram"].add_argument("--split", default="valid")
    sub.choices["histogram"].add_argument("--max-sentences", type=int, default=None)
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.INFO)  # importing fairseq leaves the root at DEBUG
    if args.budget is not None and not (args.budget >= 0 and math.isfinite(args.budget)):
        parser.error(f"--budget must be a finite number >= 0, got {args.budget}")

    loaded = load(args.checkpoint, args.data)
    budget = args.budget if args.budget is not None else _checkpoint_budget(args.checkpoint)
    if args.command == "targets":
        src = _encode(loaded, args.source, loaded.task.source_dictionary)
        tgt = _encode(loaded, args.target, loaded.task.target_dictionary)
        logits = teacher_forced_logits(loaded, src, tgt)
        symbols = loaded.task.target_dictionary.symbols
        rows = soft_targets(logits, tgt, symbols, args.alpha, budget, args.top_k)[: args.max_tokens]
        plot_targets(rows, args.out, f"{args.checkpoint}  δ={budget} α={args.alpha}")
        for row in rows:
            print(f"{row.gold:>12}  T={row.temperature:7.3f}  LABO top: "
                  + ", ".join(f"{s}:{p:.4f}" for s, p in row.labo_top))
    else:
        temps = split_temperatures(loaded, args.split, budget, args.max_sentences)
        summary = plot_histogram(temps, args.out, f"{args.checkpoint} {args.split} δ={budget}")
        print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")


def _checkpoint_budget(checkpoint: Path) -> float:
    """The ``--labo-budget`` the checkpoint was trained with (the default for non-LABO ones)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    criterion = (state.get("cfg") or {}).get("criterion") or {}
    return float(criterion.get("labo_budget", DEFAULT_BUDGET))


if __name__ == "__main__":
    main()
