"""Trains one (pair, method, seed) run with fairseq-train, recorded and resumable.

Why a wrapper and not a raw fairseq-train call: the command is built from the pair config so
every method of a pair trains identically apart from its criterion flags; the run directory
records exactly what ran (``run.json``), keeps fairseq's JSON records as a JSON-lines
``train.log`` for reports and plots, marks success with ``DONE``, refuses to overwrite a
finished run, and resumes an interrupted one from ``checkpoint_last.pt`` (fairseq's default).

Usage: ``python -m labo_fairseq.pipeline.train PAIR METHOD [--seed S] [--gpus N]
[--data-dir DIR] [--save-root DIR] [-- extra fairseq-train args]`` (``scripts/train.sh``).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence, TextIO

import torch

from labo_fairseq.pairs import METHODS, PairConfig, load_pair_config
from labo_fairseq.pipeline import fairseq_log, layout
from labo_fairseq.pipeline.cli_args import drop_flags, flag_value, split_passthrough

# Flags the pipeline sets itself; a config or default value for them is dropped, not duplicated.
OWNED_FLAGS = ("--seed", "--save-dir", "--log-format", "--log-file", "--user-dir",
               "--distributed-world-size")
FAILURE_TAIL_LINES = 40


class RunError(RuntimeError):
    """A run cannot start as asked; the message says how to proceed."""


@dataclass(frozen=True)
class TrainSpec:
    """What to train and where."""

    pair: str
    method: str
    seed: int = 1
    gpus: int = 0
    data_root: Path = layout.DEFAULT_DATA_ROOT
    save_root: Path = layout.DEFAULT_SAVE_ROOT
    extra_args: tuple[str, ...] = ()


def default_gpus() -> int:
    """One GPU when CUDA is available, else 0 (CPU training)."""
    return 1 if torch.cuda.is_available() else 0


def build_command(cfg: PairConfig, spec: TrainSpec, save_dir: Path) -> list[str]:
    """The fairseq-train command for ``spec``: config args, then the pipeline's, then extras."""
    data = layout.pair_data(spec.data_root, cfg.pair, cfg.target)
    args = drop_flags(cfg.method_args(spec.method), with_value=OWNED_FLAGS)
    keep = cfg.evaluate.average_last
    if keep > 1:
        if "--no-epoch-checkpoints" in args:
            raise ValueError(f"{cfg.pair}: evaluate.average_last={keep} needs epoch checkpoints, "
                             "but train_args has --no-epoch-checkpoints")
        kept = flag_value(args, "--keep-last-epochs")
        if kept is None or 0 <= int(kept) < keep:
            args = drop_flags(args, with_value=("--keep-last-epochs",)) + ["--keep-last-epochs", str(keep)]
    if spec.gpus == 0:
        args = drop_flags(args, with_value=("--num-workers",)) + ["--cpu", "--num-workers", "0"]
    elif spec.gpus > 1:
        args += ["--distributed-world-size", str(spec.gpus)]
    return [
        sys.executable, "-m", "fairseq_cli.train", str(data.bin),
        "--user-dir", str(layout.USER_DIR),
        *args,
        "--seed", str(spec.seed),
        "--save-dir", str(save_dir),
        "--log-format", "json",
        *spec.extra_args,
    ]


def git_commit() -> dict[str, Any]:
    """HEAD of the project repository and whether the working tree had changes."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", str(layout.REPO_ROOT), *cmd], capture_output=True,
                              text=True, check=False).stdout.strip()
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain"))}


def check_can_start(run: Path, command: list[str]) -> dict[str, Any] | None:
    """Refuse finished runs and resumes with a different command; return the old run.json."""
    if (run / layout.DONE).exists():
        raise RunError(
            f"{run} holds a finished run (DONE exists); it is never overwritten. "
            "Train another seed (--seed), use another --save-root, or delete that directory yourself.")
    record_path = run / layout.RUN_JSON
    if not record_path.exists():
        return None
    previous = json.loads(record_path.read_text())
    if _fairseq_args(previous["command"]) != _fairseq_args(command):
        raise RunError(
            f"{run} holds an unfinished run started with a different command:\n"
            f"  was: {shlex.join(_fairseq_args(previous['command']))}\n"
            f"  now: {shlex.join(_fairseq_args(command))}\n"
            "Resume it with the same arguments, or use another --seed / --save-root, "
            "or delete that directory yourself.")
    return previous


def train(spec: TrainSpec, stream: TextIO = sys.stderr) -> Path:
    """Run (or resume) training; return the run directory. Raises RunError, ValueError."""
    cfg = load_pair_config(spec.pair)
    run = layout.run_dir(spec.save_root, cfg.pair, spec.method, spec.seed).resolve()
    command = build_command(cfg, spec, run)
    previous = check_can_start(run, command)
    data = layout.pair_data(spec.data_root, cfg.pair, cfg.target)
    if not data.bin.is_dir():
        raise RunError(f"no prepared data at {data.bin}; run scripts/prepare.sh {cfg.pair} "
                       f"--data-dir {spec.data_root} first")
    if spec.gpus > torch.cuda.device_count():
        raise RunError(f"--gpus {spec.gpus} asked, but {torch.cuda.device_count()} CUDA devices are visible")
    run.mkdir(parents=True, exist_ok=True)
    record = {
        "pair": cfg.pair, "method": spec.method, "seed": spec.seed, "gpus": spec.gpus,
        "config": _config_ref(spec.pair), "data_bin": str(data.bin),
        "command": command, "command_str": shlex.join(command),
        "git": git_commit(), "started": _now(), "ended": None, "status": "running",
        "resumed": (run / "checkpoint_last.pt").exists(),
        "previous_attempts": _attempts(previous),
    }
    _write_record(run, record)
    print(f"training {cfg.pair}/{spec.method}/seed{spec.seed} -> {run}\n  {record['command_str']}",
          file=stream, flush=True)
    try:
        rc = _run_logged(command, run, stream)
    except KeyboardInterrupt:
        _finish(run, record, "interrupted")
        raise
    _finish(run, record, "done" if rc == 0 else f"failed (exit {rc})")
    if rc != 0:
        raise RunError(f"fairseq-train failed with exit code {rc}; see {run / layout.FAIRSEQ_LOG}. "
                       "Rerun the same command to resume from checkpoint_last.pt.")
    (run / layout.DONE).write_text(record["ended"] + "\n")
    return run


def _run_logged(command: list[str], run: Path, stream: TextIO) -> int:
    """Run fairseq; full output to fairseq.log, JSON records to train.log.

    The terminal (``stream``) gets a one-line summary per record and fairseq's WARNING/ERROR
    lines; if fairseq fails, the tail of fairseq.log follows (tracebacks are not logged lines).
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(run / layout.FAIRSEQ_LOG, "a") as full, open(run / layout.TRAIN_LOG, "a") as records:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, env=env, cwd=layout.REPO_ROOT)
        assert proc.stdout is not None
        for line in proc.stdout:
            full.write(line)
            record = fairseq_log.parse_line(line)
            if record is None:
                if any(f"| {level} |" in line for level in ("WARNING", "ERROR", "CRITICAL")):
                    stream.write(line)
            else:
                records.write(json.dumps(record) + "\n")
                records.flush()
                print(fairseq_log.summary_line(record), file=stream, flush=True)
        rc = proc.wait()
    if rc != 0:
        tail = (run / layout.FAIRSEQ_LOG).read_text().splitlines()[-FAILURE_TAIL_LINES:]
        print("\n".join(["--- end of fairseq.log ---", *tail]), file=stream, flush=True)
    return rc


def _fairseq_args(command: Sequence[str]) -> list[str]:
    """The part of a command after the fairseq entry point (independent of the interpreter path)."""
    return list(command[list(command).index("fairseq_cli.train") + 1:])


def _config_ref(pair: str) -> str:
    """How evaluation finds the config again: the pair name, or an absolute YAML path."""
    return str(Path(pair).resolve()) if pair.endswith((".yaml", ".yml")) else pair


def _attempts(previous: dict[str, Any] | None) -> list[dict[str, Any]]:
    if previous is None:
        return []
    last = {k: previous[k] for k in ("started", "ended", "status", "git")}
    return [*previous.get("previous_attempts", []), last]


def _finish(run: Path, record: dict[str, Any], status: str) -> None:
    record.update(ended=_now(), status=status)
    _write_record(run, record)


def _write_record(run: Path, record: dict[str, Any]) -> None:
    tmp = run / (layout.RUN_JSON + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(run / layout.RUN_JSON)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def parse_args(argv: Sequence[str]) -> tuple[TrainSpec, bool]:
    ours, extra = split_passthrough(argv)
    parser = argparse.ArgumentParser(
        prog="scripts/train.sh", description=__doc__.split("\n\n")[0],
        epilog="Arguments after -- go to fairseq-train unchanged (they come last, so they win).")
    parser.add_argument("pair", help="pair name (configs/<pair>.yaml)")
    parser.add_argument("method", choices=METHODS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gpus", type=int, default=None,
                        help="0 = CPU; N > 1 = fairseq distributed data parallel on N GPUs "
                             "(default: 1 if CUDA is available, else 0)")
    parser.add_argument("--data-dir", type=Path, default=layout.DEFAULT_DATA_ROOT,
                        help="root of prepared data, holding <pair>/bin (default: data/)")
    parser.add_argument("--save-root", type=Path, default=layout.DEFAULT_SAVE_ROOT,
                        help="runs go to <save-root>/<pair>/<method>/seed<S>/ (default: checkpoints/)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the fairseq-train arguments (shell-quoted) and exit; for torchrun/SLURM")
    ns = parser.parse_args(ours)
    gpus = default_gpus() if ns.gpus is None else ns.gpus
    return TrainSpec(ns.pair, ns.method, ns.seed, gpus, ns.data_dir.resolve(),
                     ns.save_root.resolve(), tuple(extra)), ns.dry_run


def main(argv: Sequence[str] | None = None) -> int:
    spec, dry_run = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if dry_run:
            run = layout.run_dir(spec.save_root, spec.pair, spec.method, spec.seed).resolve()
            print(shlex.join(_fairseq_args(build_command(load_pair_config(spec.pair), spec, run))))
            return 0
        train(spec)
    except (RunError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
