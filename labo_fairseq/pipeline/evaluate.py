"""Evaluates a finished run: checkpoint averaging, fairseq-generate, detokenisation, sacreBLEU.

Every number in the results tables comes from here, so the whole chain is fixed in one place:
average the last K epoch checkpoints, decode the test set with the pair config's beam and
length penalty, put hypotheses back in corpus order, decode sentencepiece, and score against
the untouched references with sacreBLEU (BLEU + chrF, with signatures) plus tokenized BLEU
where the pair's convention asks for it. Writes ``result.json`` and ``hyp.test.txt`` in the
run directory; ``--split valid`` scores the validation set instead (``result.valid.json``,
``hyp.valid.txt``), which is what hyper-parameters such as the LABO budget are chosen on.

Usage: ``python -m labo_fairseq.pipeline.evaluate RUN_DIR [--k K] [--split test|valid]
[-- extra fairseq-generate args]`` (``scripts/evaluate.sh``). Extra arguments come last, so they override the config
(e.g. ``--beam 1 --max-len-b 20`` for a smoke test); result.json records the full command.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence, TextIO

import sentencepiece as spm
import torch

from labo_fairseq.pairs import load_pair_config
from labo_fairseq.pipeline import layout, scoring
from labo_fairseq.pipeline.averaging import write_average
from labo_fairseq.pipeline.cli_args import split_passthrough

_HYPOTHESIS = re.compile(r"^H-(\d+)\t[^\t]*\t(.*)$")


class EvaluationError(RuntimeError):
    """The run cannot be evaluated; the message says why."""


def generate_output(split: str = "test") -> str:
    """File name of fairseq-generate's raw output for ``split`` in the run directory."""
    return f"generate.{split}.txt"


def generate_command(data_bin: Path, checkpoint: Path, beam: int, lenpen: float,
                     extra_args: Sequence[str] = (), batch_size: int = 64,
                     split: str = "test") -> list[str]:
    """fairseq-generate on ``split``, printing sentencepiece pieces (no post-processing).

    ``--required-batch-size-multiple 1``: with fairseq's default of 8, ``batch_by_size`` drops
    a last batch whose size is not a multiple of 8, i.e. silently skips test sentences
    (fairseq issue #5036).
    """
    device = [] if torch.cuda.is_available() else ["--cpu"]
    return [sys.executable, "-m", "fairseq_cli.generate", str(data_bin),
            "--user-dir", str(layout.USER_DIR), "--path", str(checkpoint),
            "--gen-subset", split, "--beam", str(beam), "--lenpen", str(lenpen),
            "--batch-size", str(batch_size), "--required-batch-size-multiple", "1",
            "--num-workers", "0", *device, *extra_args]


def hypotheses_in_order(text: str) -> list[str]:
    """The ``H-<id>`` lines of fairseq-generate output, sorted back into corpus order."""
    found = {int(m[1]): m[2] for line in text.splitlines() if (m := _HYPOTHESIS.match(line))}
    if sorted(found) != list(range(len(found))):
        raise EvaluationError("fairseq-generate output is missing hypotheses")
    return [found[i] for i in range(len(found))]


def detokenize(pieces: Sequence[str], spm_model: Path) -> list[str]:
    """Join sentencepiece pieces back into text."""
    processor = spm.SentencePieceProcessor(model_file=str(spm_model))
    return [processor.decode_pieces(line.split()) for line in pieces]


def evaluate(run_dir: Path, k: int | None = None, extra_args: Sequence[str] = (),
             stream: TextIO = sys.stderr, split: str = "test") -> dict[str, Any]:
    """Evaluate ``run_dir`` on ``split``; returns (and writes) the result record."""
    if split not in layout.SPLITS:
        raise EvaluationError(f"cannot evaluate split {split!r}; choose one of {', '.join(layout.SPLITS)}")
    run_dir = Path(run_dir).resolve()
    if not (run_dir / layout.DONE).exists():
        raise EvaluationError(f"{run_dir} has no finished training run (no {layout.DONE}); "
                              "finish or resume training first (scripts/train.sh)")
    run = json.loads((run_dir / layout.RUN_JSON).read_text())
    cfg = load_pair_config(run["config"])
    data_bin = Path(run["data_bin"])
    data = layout.PairData(data_bin.parent, cfg.target)
    k = cfg.evaluate.average_last if k is None else k
    checkpoint, averaged = write_average(run_dir, k)
    print(f"evaluating {run_dir} on {split} with {checkpoint.name} (from {[p.name for p in averaged]})",
          file=stream, flush=True)

    command = generate_command(data_bin, checkpoint, cfg.generate.beam, cfg.generate.lenpen,
                               extra_args, split=split)
    proc = subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    (run_dir / generate_output(split)).write_text(proc.stdout)
    if proc.returncode != 0:
        raise EvaluationError(f"fairseq-generate failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    hyps = detokenize(hypotheses_in_order(proc.stdout), data.spm_model)
    hyp_path = run_dir / layout.hyp_file(split)
    hyp_path.write_text("".join(h + "\n" for h in hyps))

    refs = data.raw_ref(split).read_text().splitlines()
    result: dict[str, Any] = {
        "pair": cfg.pair, "method": run["method"], "seed": run["seed"], "split": split,
        "run_dir": str(run_dir),
        "checkpoint": str(checkpoint), "checkpoints_averaged": [str(p) for p in averaged],
        "k": k, "beam": cfg.generate.beam, "lenpen": cfg.generate.lenpen,
        "hypotheses": str(hyp_path), "references": str(data.raw_ref(split)), "n_sentences": len(hyps),
        "tokenized_references": str(data.tok_ref(split)) if cfg.bleu.tokenized_bleu else None,
        **scoring.sacrebleu_scores(hyps, refs, cfg.bleu.sacrebleu_tokenize),
        "tokenized_bleu": None, "generate_command": command,
        "evaluated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if cfg.bleu.tokenized_bleu:
        tok_refs = data.tok_ref(split).read_text().splitlines()
        result["tokenized_bleu"] = scoring.tokenized_bleu(hyps, tok_refs)
    (run_dir / layout.result_json(split)).write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ours, extra = split_passthrough(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="scripts/evaluate.sh", description=__doc__.split("\n\n")[0],
        epilog="Arguments after -- go to fairseq-generate (they come last, so they win).")
    parser.add_argument("run_dir", type=Path, help="a finished run: <save-root>/<pair>/<method>/seed<S>")
    parser.add_argument("--k", type=int, default=None,
                        help="average the last K epoch checkpoints (default: the config's evaluate.average_last)")
    parser.add_argument("--split", choices=layout.SPLITS, default="test",
                        help="test (default) or valid: choose hyper-parameters on valid only")
    ns = parser.parse_args(ours)
    try:
        result = evaluate(ns.run_dir, ns.k, extra, split=ns.split)
    except (EvaluationError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{result['pair']} {result['method']} seed{result['seed']} {ns.split}: {result['bleu_detail']}\n"
          f"  BLEU signature: {result['bleu_signature']}\n"
          f"  chrF2 = {result['chrf']}  signature: {result['chrf_signature']}")
    if result["tokenized_bleu"]:
        print(f"  tokenized {result['tokenized_bleu']['detail']}")
    print(f"  -> {Path(result['run_dir']) / layout.result_json(ns.split)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
