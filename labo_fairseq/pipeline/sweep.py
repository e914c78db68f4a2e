"""Chooses the LABO budget δ on validation BLEU: one LABO run per δ beside the LS baseline.

The budget is LABO's one new hyper-parameter, so it is tuned the way a user would have to:
on the validation set only, never on test. Every candidate trains with the pair config's
recipe and seed, changing nothing but ``--labo-budget``; each run is decoded on the valid
split with the config's beam and scored with sacreBLEU; the highest validation BLEU wins
(ties go to the smaller δ, the one closer to label smoothing).

Runs: the LS baseline is the ordinary run ``<save-root>/<pair>/ls/seed<S>`` (shared with
``scripts/reproduce.sh``), each candidate ``<save-root>/sweep/d<δ>/<pair>/labo/seed<S>``.
Finished runs are reused and archived under ``<results-dir>/sweep-<pair>/<label>/seed<S>/``
(see :mod:`labo_fairseq.pipeline.archive`); the table goes to ``<results-dir>/sweep-<pair>.md``
and ``.json``. An archived candidate is not retrained, so the sweep resumes across machines.

Usage: ``python -m labo_fairseq.pipeline.sweep PAIR [--budgets 0.25,0.5,1,2,4] [--seed S]
[...] [-- extra fairseq-train args]`` (``scripts/sweep.sh``).
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from labo_fairseq.pairs import load_pair_config
from labo_fairseq.pipeline import archive, fairseq_log, layout
from labo_fairseq.pipeline.cli_args import split_passthrough
from labo_fairseq.pipeline.evaluate import EvaluationError
from labo_fairseq.pipeline.reproduce import complete_run
from labo_fairseq.pipeline.train import RunError, TrainSpec, default_gpus

DEFAULT_BUDGETS = (0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class Candidate:
    """One point of the sweep: the LS baseline (budget None) or LABO with budget δ."""

    budget: float | None

    @property
    def label(self) -> str:
        return "ls" if self.budget is None else f"labo-d{self.budget:g}"

    @property
    def method(self) -> str:
        return "ls" if self.budget is None else "labo"

    def save_root(self, save_root: Path) -> Path:
        return save_root if self.budget is None else save_root / "sweep" / f"d{self.budget:g}"

    def train_args(self, extra: Sequence[str]) -> tuple[str, ...]:
        return tuple(extra) if self.budget is None else ("--labo-budget", f"{self.budget:g}", *extra)


@dataclass(frozen=True)
class SweepPlan:
    pair: str
    budgets: tuple[float, ...]
    seed: int
    gpus: int
    data_root: Path
    save_root: Path
    results_dir: Path
    train_args: tuple[str, ...]
    generate_args: tuple[str, ...]

    @property
    def archive_root(self) -> Path:
        return self.results_dir / f"sweep-{self.pair}"

    def candidates(self) -> list[Candidate]:
        return [Candidate(None), *(Candidate(b) for b in self.budgets)]

    def kept(self, cand: Candidate) -> Path:
        """Where ``cand``'s run is archived."""
        return self.archive_root / cand.label / f"seed{self.seed}"


def run_candidate(cand: Candidate, plan: SweepPlan) -> str:
    """Train (if needed), evaluate on valid and archive one candidate; returns what was done."""
    spec = TrainSpec(plan.pair, cand.method, plan.seed, plan.gpus, plan.data_root,
                     cand.save_root(plan.save_root), cand.train_args(plan.train_args))
    return complete_run(spec, plan.kept(cand), "valid", None, plan.generate_args)


def summarize(plan: SweepPlan) -> dict[str, Any]:
    """The sweep's rows (archived candidates only) and the chosen budget."""
    rows = []
    for cand in plan.candidates():
        kept = plan.kept(cand)
        result_path = kept / layout.result_json("valid")
        if not result_path.is_file():
            continue
        result = archive.load_result(result_path)
        valid = list(fairseq_log.read_records(kept / layout.TRAIN_LOG, "valid"))
        epochs = list(fairseq_log.read_records(kept / layout.TRAIN_LOG, "train"))
        rows.append({
            "label": cand.label, "method": cand.method, "budget": cand.budget,
            "valid_bleu": result["bleu"], "valid_chrf": result["chrf"],
            "valid_nll_loss": valid[-1]["valid_nll_loss"] if valid else None,
            "valid_labo_temp": valid[-1].get("valid_labo_temp") if valid else None,
            "train_labo_bound": epochs[-1].get("train_labo_bound") if epochs else None,
            "cost": fairseq_log.training_cost(kept / layout.TRAIN_LOG),
            "signature": result["bleu_signature"], "run_dir": str(kept),
        })
    labo = [r for r in rows if r["budget"] is not None]
    best = max(labo, key=lambda r: (r["valid_bleu"], -r["budget"]), default=None)
    return {"pair": plan.pair, "seed": plan.seed, "split": "valid", "budgets": list(plan.budgets),
            "rows": rows, "chosen_budget": None if best is None else best["budget"],
            "complete": len(labo) == len(plan.budgets)}


def markdown(summary: dict[str, Any]) -> str:
    """The sweep as a Markdown table, best budget in bold."""
    def opt(v: Any, fmt: str) -> str:
        return "–" if v is None else fmt.format(v)

    lines = [f"# LABO budget sweep: {summary['pair']} (seed {summary['seed']}, validation set)", "",
             "Chosen on validation BLEU only; test scores are not looked at here. "
             + ("All budgets ran." if summary["complete"] else "**Incomplete: not every budget has run.**"), "",
             "| run | δ (nats) | valid BLEU | valid chrF | valid nll (last epoch) | valid mean T "
             "| train bound fraction | s/epoch |", "|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        chosen = r["budget"] is not None and r["budget"] == summary["chosen_budget"]
        bleu = f"**{r['valid_bleu']:.2f}**" if chosen else f"{r['valid_bleu']:.2f}"
        cost = r["cost"]["median_epoch_train_wall_s"] if r["cost"] else None
        lines.append(f"| {r['label']} | {opt(r['budget'], '{:g}')} | {bleu} | {r['valid_chrf']:.2f} "
                     f"| {opt(r['valid_nll_loss'], '{:.3f}')} | {opt(r['valid_labo_temp'], '{:.2f}')} "
                     f"| {opt(r['train_labo_bound'], '{:.2f}')} | {opt(cost, '{:.0f}')} |")
    signatures = sorted({r["signature"] for r in summary["rows"]})
    lines += ["", f"Chosen budget: δ = {opt(summary['chosen_budget'], '{:g}')}",
              "", *[f"sacreBLEU signature: `{s}`" for s in signatures], ""]
    return "\n".join(lines)


def sweep(plan: SweepPlan, stream: Any = sys.stderr) -> tuple[dict[str, Any], list[str]]:
    """Run every candidate (one failure does not stop the others) and write the report."""
    failures = []
    for cand in plan.candidates():
        try:
            status = run_candidate(cand, plan)
        except (RunError, EvaluationError, ValueError, FileNotFoundError) as err:
            failures.append(f"{cand.label}: {err}")
            status = "FAILED"
        print(f"[sweep] {plan.pair}/{cand.label}/seed{plan.seed}: {status}", file=stream, flush=True)
    summary = summarize(plan)
    plan.results_dir.mkdir(parents=True, exist_ok=True)
    (plan.results_dir / f"sweep-{plan.pair}.md").write_text(markdown(summary))
    (plan.results_dir / f"sweep-{plan.pair}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary, failures


def parse_args(argv: Sequence[str]) -> SweepPlan:
    ours, extra = split_passthrough(argv)
    parser = argparse.ArgumentParser(
        prog="scripts/sweep.sh", description=__doc__.split("\n\n")[0],
        epilog="Arguments after -- go to every fairseq-train call.")
    parser.add_argument("pair", help="pair name (configs/<pair>.yaml)")
    parser.add_argument("--budgets", default=",".join(f"{b:g}" for b in DEFAULT_BUDGETS),
                        help="comma list of δ in nats (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gpus", type=int, default=None, help="per run, as for train.sh")
    parser.add_argument("--data-dir", type=Path, default=layout.DEFAULT_DATA_ROOT)
    parser.add_argument("--save-root", type=Path, default=layout.DEFAULT_SAVE_ROOT)
    parser.add_argument("--results-dir", type=Path, default=layout.DEFAULT_RESULTS_DIR)
    parser.add_argument("--generate-args", default="",
                        help="extra fairseq-generate arguments, one quoted string (smoke tests)")
    ns = parser.parse_args(ours)
    try:
        budgets = tuple(float(b) for b in ns.budgets.split(",") if b)
    except ValueError:
        parser.error(f"--budgets must be a comma list of numbers, got {ns.budgets!r}")
    if not budgets or any(not (b >= 0) or b == float("inf") for b in budgets):
        parser.error(f"--budgets must be finite numbers >= 0 (nats), got {ns.budgets!r}")
    load_pair_config(ns.pair)  # unknown pair: ValueError naming the known ones
    return SweepPlan(ns.pair, tuple(sorted(set(budgets))), ns.seed,
                     default_gpus() if ns.gpus is None else ns.gpus, ns.data_dir.resolve(),
                     ns.save_root.resolve(), ns.results_dir.resolve(), tuple(extra),
                     tuple(shlex.split(ns.generate_args)))


def main(argv: Sequence[str] | None = None) -> int:
    logging.getLogger().setLevel(logging.INFO)  # importing fairseq leaves the root logger at DEBUG
    try:
        plan = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    summary, failures = sweep(plan)
    print(markdown(summary))
    if failures:
        print("[sweep] failures:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
