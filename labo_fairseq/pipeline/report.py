"""Aggregates evaluated runs into the LS-vs-LABO comparison table (Markdown + JSON).

Per pair: BLEU mean ± sample standard deviation over seeds for each method, LABO − LS, the
paper's numbers where the config knows them, chrF, sacreBLEU's paired bootstrap test of
LABO against LS, and the training cost (seconds per epoch from each run's ``train.log``). The bootstrap compares the two systems trained with the *first* seed both
methods share (one pair of systems, as the test assumes); concatenating seeds would treat
repeated test sentences as independent samples and overstate significance.

The BLEU reported per pair is the pair's own convention: tokenized BLEU where the config sets
``bleu.tokenized_bleu`` (IWSLT'14 papers), sacreBLEU otherwise.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Sequence

from labo_fairseq.pairs import METHODS, load_pair_config
from labo_fairseq.pipeline import archive, fairseq_log, layout, scoring


def load_results(root: Path, pair: str, method: str, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The test ``result.json`` records that exist for (pair, method) over ``seeds`` under
    ``root`` (a save root or an archive root: both use the run-directory layout)."""
    found = []
    for seed in seeds:
        path = layout.run_dir(root, pair, method, seed) / layout.RESULT_JSON
        if path.is_file():
            found.append(archive.load_result(path))
    return found


def present_runs(root: Path, pairs: Sequence[str]) -> tuple[list[str], list[int]]:
    """Methods (in :data:`METHODS` order) and seeds that have a test result under ``root``."""
    found = [p.parts[-4:-1] for pair in pairs for p in (root / pair).glob(f"*/seed*/{layout.RESULT_JSON}")]
    methods = {method for _, method, _ in found}
    seeds = {int(seed.removeprefix("seed")) for _, _, seed in found if seed.removeprefix("seed").isdigit()}
    return [m for m in METHODS if m in methods], sorted(seeds)


def primary_bleu(result: dict[str, Any]) -> float:
    """The BLEU the pair is reported with: tokenized BLEU if computed, else sacreBLEU."""
    return result["tokenized_bleu"]["bleu"] if result.get("tokenized_bleu") else result["bleu"]


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (None with fewer than two values)."""
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": round(statistics.fmean(values), 2), "std": None if std is None else round(std, 2),
            "n": len(values)}


def summarize_pair(root: Path, pair: str, methods: Sequence[str], seeds: Sequence[int],
                   n_bootstrap: int = 1000) -> dict[str, Any]:
    """One pair's row: per-method statistics, LABO − LS, paper numbers, bootstrap test."""
    cfg = load_pair_config(pair)
    results = {m: load_results(root, pair, m, seeds) for m in methods}
    row: dict[str, Any] = {
        "pair": pair,
        "metric": "tokenized BLEU" if cfg.bleu.tokenized_bleu else "sacreBLEU",
        "paper": {"ls": cfg.paper.ls, "labo": cfg.paper.labo},
        "methods": {m: {"bleu": mean_std([primary_bleu(r) for r in rs]),
                        "sacrebleu": mean_std([r["bleu"] for r in rs]),
                        "chrf": mean_std([r["chrf"] for r in rs]),
                        "epoch_seconds": mean_std(_epoch_seconds(root, pair, m, rs)),
                        "seeds": [r["seed"] for r in rs]}
                    for m, rs in results.items()},
        "signature": next((r["bleu_signature"] for rs in results.values() for r in rs), None),
        "difference": None, "bootstrap": None,
    }
    ls, labo = row["methods"].get("ls"), row["methods"].get("labo")
    if ls and labo and ls["bleu"]["n"] and labo["bleu"]["n"]:
        row["difference"] = round(labo["bleu"]["mean"] - ls["bleu"]["mean"], 2)
        row["bootstrap"] = _bootstrap(results["ls"], results["labo"], cfg.bleu.sacrebleu_tokenize,
                                      n_bootstrap)
    return row


def _bootstrap(ls: list[dict[str, Any]], labo: list[dict[str, Any]], tokenize: str,
               n_samples: int) -> dict[str, Any] | None:
    shared = sorted({r["seed"] for r in ls} & {r["seed"] for r in labo})
    if not shared:
        return None
    base = next(r for r in ls if r["seed"] == shared[0])
    system = next(r for r in labo if r["seed"] == shared[0])
    refs = Path(base["references"]).read_text().splitlines()
    test = scoring.paired_bootstrap(("ls", _lines(base["hypotheses"])), ("labo", _lines(system["hypotheses"])),
                                    refs, tokenize, n_samples)
    return {**test, "seed": shared[0]}


def _epoch_seconds(root: Path, pair: str, method: str, results: Sequence[dict[str, Any]]) -> list[float]:
    """Median training seconds per epoch of each run that has a train.log."""
    costs = []
    for r in results:
        log = layout.run_dir(root, pair, method, r["seed"]) / layout.TRAIN_LOG
        cost = fairseq_log.training_cost(log) if log.is_file() else None
        if cost is not None:
            costs.append(cost["median_epoch_train_wall_s"])
    return costs


def _lines(path: str) -> list[str]:
    return Path(path).read_text().splitlines()


def _fmt(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "–"
    return f"{stats['mean']:.2f}" if stats["std"] is None else f"{stats['mean']:.2f} ± {stats['std']:.2f}"


def _chrf_p(boot: dict[str, Any] | None) -> str:
    return "–" if boot is None or "chrf" not in boot else f"{boot['chrf']['p_value']:.4f}"


def _opt(value: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def markdown(suite: str, rows: Sequence[dict[str, Any]], methods: Sequence[str],
             seeds: Sequence[int], plots: Sequence[str]) -> str:
    """The suite's results as a Markdown document."""
    head = ["pair", "metric", *[f"{m.upper()}" for m in methods], "LABO − LS",
            "paper LS", "paper LABO", "bootstrap p (LABO vs LS)"]
    lines = [f"# Results: {suite}", "",
             f"BLEU mean ± sample std over seeds {', '.join(map(str, seeds))}; "
             "'–' = not run or not known. Paired bootstrap: sacreBLEU's, first shared seed; its "
             "p-value tests 'no difference' (two-sided, |ΔBLEU|), the sign of LABO − LS gives the "
             "direction.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        boot = row["bootstrap"]
        cells = [row["pair"], row["metric"], *[_fmt(row["methods"][m]["bleu"]) for m in methods],
                 _opt(row["difference"], "{:+.2f}"), _opt(row["paper"]["ls"], "{:.1f}"),
                 _opt(row["paper"]["labo"], "{:.1f}"),
                 "–" if boot is None else f"{boot['p_value']:.4f} (seed {boot['seed']})"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "chrF (sacreBLEU), with the paired bootstrap p-value of LABO vs LS on chrF (same resamples):",
              "", "| pair | " + " | ".join(m.upper() for m in methods) + " | bootstrap p (chrF) |",
              "|" + "---|" * (len(methods) + 2)]
    lines += ["| " + " | ".join([row["pair"], *[_fmt(row["methods"][m]["chrf"]) for m in methods],
                                 _chrf_p(row["bootstrap"])]) + " |"
              for row in rows]
    lines += ["", "Training cost: seconds per epoch in training steps (fairseq's per-epoch `train_wall`, "
              "median over epochs 2+, mean over seeds):", "",
              "| pair | " + " | ".join(m.upper() for m in methods) + " | LABO / LS |",
              "|" + "---|" * (len(methods) + 2)]
    for row in rows:
        secs = {m: row["methods"][m]["epoch_seconds"]["mean"] for m in methods}
        ratio = secs["labo"] / secs["ls"] if secs.get("labo") and secs.get("ls") else None
        lines.append("| " + " | ".join([row["pair"], *[_opt(secs[m], "{:.0f}") for m in methods],
                                        _opt(ratio)]) + " |")
    signatures = sorted({row["signature"] for row in rows if row["signature"]})
    if signatures:
        lines += ["", "sacreBLEU signatures: " + "; ".join(f"`{s}`" for s in signatures)]
    lines += ["", *[f"![{Path(p).stem}]({p})" for p in plots], ""]
    return "\n".join(lines)


def write_report(suite: str, rows: Sequence[dict[str, Any]], methods: Sequence[str],
                 seeds: Sequence[int], results_dir: Path, plots: Sequence[Path]) -> tuple[Path, Path]:
    """Write ``<results_dir>/<suite>.md`` and ``.json``; plot paths are made relative."""
    results_dir.mkdir(parents=True, exist_ok=True)
    rel_plots = [str(Path(p).relative_to(results_dir)) for p in plots]
    md = results_dir / f"{suite}.md"
    md.write_text(markdown(suite, rows, methods, seeds, rel_plots))
    js = results_dir / f"{suite}.json"
    js.write_text(json.dumps({"suite": suite, "methods": list(methods), "seeds": list(seeds),
                              "pairs": list(rows), "plots": rel_plots}, indent=2) + "\n")
    return md, js
