"""Runs a whole suite: prepare → train → evaluate for pairs × methods × seeds, then reports.

A suite is resumable and idempotent: data already prepared is reused, runs whose result is
archived under ``<results-dir>/<suite>/runs/`` are skipped (so a fresh clone with the committed
results does not retrain them), a trained but unevaluated run is only evaluated, and an
interrupted run resumes from its last checkpoint. One failing run does not stop the others;
failures are listed at the end and make the exit status non-zero.

The report always covers the whole suite and every method and seed archived for it, so
several invocations restricted with ``--pairs`` / ``--methods`` (e.g. one per CPU core) build
one table together.

Usage: ``python -m labo_fairseq.pipeline.reproduce SUITE [--seeds 1,2] [--pairs ...]
[--methods ls,labo] [...] [-- extra fairseq-train args]`` (``scripts/reproduce.sh``).
"""
from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from labo_fairseq.pairs import METHODS, list_pairs, load_pair_config
from labo_fairseq.pipeline import archive, layout, plots, report
from labo_fairseq.pipeline.cli_args import split_passthrough
from labo_fairseq.pipeline.evaluate import EvaluationError, evaluate
from labo_fairseq.pipeline.train import RunError, TrainSpec, default_gpus, train

SUITES = {
    "offline": ("multi30k-en-de", "multi30k-de-en", "multi30k-en-fr", "multi30k-fr-en",
                "multi30k-en-cs", "multi30k-cs-en", "tatoeba-de-en"),
    "paper": ("iwslt14-de-en", "iwslt14-en-de", "iwslt17-de-en", "iwslt17-en-fr", "iwslt17-fr-en",
              "wmt14-en-de", "wmt14-de-en"),
}
PREPARE_SH = layout.REPO_ROOT / "scripts" / "prepare.sh"


@dataclass(frozen=True)
class Plan:
    """What a reproduce invocation covers and where it reads and writes."""

    name: str
    suite_pairs: tuple[str, ...]  # what the report covers
    pairs: tuple[str, ...]  # what this invocation runs
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    gpus: int
    data_root: Path
    save_root: Path
    results_dir: Path
    prepare_args: tuple[str, ...]
    train_args: tuple[str, ...]
    generate_args: tuple[str, ...]
    k: int | None
    n_bootstrap: int


def resolve_pairs(suite: str, only: Sequence[str] | None) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(report name, all pairs, pairs to run) of a suite name or comma list of pairs; the pairs
    to run are restricted to ``only``."""
    pairs = SUITES[suite] if suite in SUITES else tuple(suite.split(","))
    name = suite if suite in SUITES else "_".join(pairs)
    known = set(list_pairs())
    unknown = [p for p in (*pairs, *(only or ())) if p not in known]
    if unknown:
        raise ValueError(f"unknown pair(s) {', '.join(unknown)}; suites: {', '.join(SUITES)}; "
                         f"known pairs: {', '.join(sorted(known))}")
    if not only:
        return name, pairs, pairs
    outside = [p for p in only if p not in pairs]
    if outside:
        raise ValueError(f"--pairs {', '.join(outside)} not in suite {suite!r} ({', '.join(pairs)})")
    return name, pairs, tuple(p for p in pairs if p in only)


def ensure_prepared(pair: str, plan: Plan) -> None:
    """Run scripts/prepare.sh for ``pair`` unless its data is already there."""
    cfg = load_pair_config(pair)
    if layout.pair_data(plan.data_root, pair, cfg.target).is_prepared():
        return
    command = [str(PREPARE_SH), pair, "--data-dir", str(plan.data_root), *plan.prepare_args]
    print(f"[reproduce] preparing {pair}: {' '.join(command)}", file=sys.stderr, flush=True)
    if subprocess.run(command).returncode != 0:
        raise RunError(f"scripts/prepare.sh {pair} failed")


def archive_root(plan: Plan) -> Path:
    """Where the suite's runs are archived (see :mod:`labo_fairseq.pipeline.archive`)."""
    return plan.results_dir / plan.name / "runs"


def complete_run(spec: TrainSpec, kept: Path, split: str = "test", k: int | None = None,
                 generate_args: Sequence[str] = ()) -> str:
    """Train (or resume), evaluate on ``split`` and archive to ``kept`` one run, each step only
    if still needed; returns what was done. Shared by reproduce (test) and sweep (valid)."""
    result = layout.result_json(split)
    verb = "evaluated" if split == "test" else "validated"
    if (kept / result).exists():
        return f"skipped (result archived in {kept})"
    run = layout.run_dir(spec.save_root, spec.pair, spec.method, spec.seed)
    if not (run / layout.DONE).exists():
        train(spec)
        evaluate(run, k, generate_args, split=split)
        did = f"trained, {verb} and archived"
    elif not (run / result).exists():
        evaluate(run, k, generate_args, split=split)
        did = f"{verb} and archived"
    else:
        did = f"archived (already {verb})"
    archive.store(run, kept)
    return did


def run_one(pair: str, method: str, seed: int, plan: Plan) -> str:
    """Train, evaluate and archive one run of the plan as needed; returns what was done."""
    spec = TrainSpec(pair, method, seed, plan.gpus, plan.data_root, plan.save_root, plan.train_args)
    return complete_run(spec, layout.run_dir(archive_root(plan), pair, method, seed), "test",
                        plan.k, plan.generate_args)


def reproduce(plan: Plan) -> list[str]:
    """Run the plan and write the report; returns the failures (empty on full success)."""
    failures = []
    for pair in plan.pairs:
        try:
            ensure_prepared(pair, plan)
        except (RunError, ValueError) as err:
            failures.append(f"{pair}: {err}")
            continue
        for method in plan.methods:
            for seed in plan.seeds:
                try:
                    status = run_one(pair, method, seed, plan)
                except (RunError, EvaluationError, ValueError, FileNotFoundError) as err:
                    failures.append(f"{pair}/{method}/seed{seed}: {err}")
                    status = "FAILED"
                print(f"[reproduce] {pair}/{method}/seed{seed}: {status}", file=sys.stderr, flush=True)
    write_suite_report(plan)
    return failures


def write_suite_report(plan: Plan) -> tuple[Path, Path]:
    """Summaries, plots and the Markdown/JSON report of every archived result of the suite."""
    root = archive_root(plan)
    found_methods, found_seeds = report.present_runs(root, plan.suite_pairs)
    methods = [m for m in METHODS if m in plan.methods or m in found_methods]
    seeds = sorted({*plan.seeds, *found_seeds})
    rows = [report.summarize_pair(root, pair, methods, seeds, plan.n_bootstrap)
            for pair in plan.suite_pairs]
    plot_dir = plan.results_dir / plan.name
    made = [plots.plot_valid_loss(
        pair, {m: [layout.run_dir(root, pair, m, s) for s in seeds] for m in methods},
        plot_dir / f"{pair}_valid_loss.png") for pair in plan.suite_pairs]
    made.append(plots.plot_bleu(rows, methods, plot_dir / "bleu.png"))
    return report.write_report(plan.name, rows, methods, seeds, plan.results_dir,
                               [p for p in made if p is not None])


def _csv(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def parse_args(argv: Sequence[str]) -> Plan:
    ours, extra = split_passthrough(argv)
    parser = argparse.ArgumentParser(
        prog="scripts/reproduce.sh", description=__doc__.split("\n\n")[0],
        epilog="Arguments after -- go to every fairseq-train call (e.g. a smaller model for a smoke test).")
    parser.add_argument("suite", help=f"{' | '.join(SUITES)} | a comma list of pairs")
    parser.add_argument("--seeds", default="1", help="comma list (default: 1)")
    parser.add_argument("--pairs", default=None, help="comma list: only these pairs of the suite")
    parser.add_argument("--methods", default="ls,labo", help=f"comma list of {', '.join(METHODS)}")
    parser.add_argument("--gpus", type=int, default=None, help="per run, as for train.sh")
    parser.add_argument("--k", type=int, default=None, help="checkpoints to average (default: config)")
    parser.add_argument("--data-dir", type=Path, default=layout.DEFAULT_DATA_ROOT)
    parser.add_argument("--save-root", type=Path, default=layout.DEFAULT_SAVE_ROOT)
    parser.add_argument("--results-dir", type=Path, default=layout.DEFAULT_RESULTS_DIR)
    parser.add_argument("--mirror", type=Path, default=None, help="passed to prepare.sh")
    parser.add_argument("--max-train-lines", type=int, default=None, help="passed to prepare.sh")
    parser.add_argument("--vocab-size", type=int, default=None, help="passed to prepare.sh")
    parser.add_argument("--generate-args", default="",
                        help="extra fairseq-generate arguments, one quoted string (smoke tests)")
    parser.add_argument("--bootstrap-samples", type=int, default=1000)
    ns = parser.parse_args(ours)
    methods = _csv(ns.methods)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        parser.error(f"unknown method(s) {bad}; choose from {METHODS}")
    name, suite_pairs, pairs = resolve_pairs(ns.suite, _csv(ns.pairs) if ns.pairs else None)
    prepare_args = [*(["--mirror", str(ns.mirror.resolve())] if ns.mirror else []),
                    *(["--max-train-lines", str(ns.max_train_lines)] if ns.max_train_lines else []),
                    *(["--vocab-size", str(ns.vocab_size)] if ns.vocab_size else [])]
    return Plan(name, suite_pairs, pairs, tuple(methods), tuple(int(s) for s in _csv(ns.seeds)),
                default_gpus() if ns.gpus is None else ns.gpus, ns.data_dir.resolve(),
                ns.save_root.resolve(), ns.results_dir.resolve(), tuple(prepare_args), tuple(extra),
                tuple(shlex.split(ns.generate_args)), ns.k, ns.bootstrap_samples)


def main(argv: Sequence[str] | None = None) -> int:
    logging.getLogger().setLevel(logging.INFO)  # importing fairseq leaves the root logger at DEBUG
    try:
        plan = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    failures = reproduce(plan)
    md = plan.results_dir / f"{plan.name}.md"
    print(f"[reproduce] report: {md}", file=sys.stderr)
    if failures:
        print("[reproduce] failures:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
