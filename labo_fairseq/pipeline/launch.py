"""torchrun entry point for fairseq-train, on GPUs and on CPU (gloo).

fairseq 0.12 reads torchrun's environment itself only on GPUs: its rank inference computes
``rank % torch.cuda.device_count()`` and fails without CUDA, and its default DDP wrapper
passes ``device_ids`` that torch rejects for CPU modules. This entry turns torchrun's
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` into explicit fairseq flags (``env://`` init, no
spawning) and, on CPU, selects the gloo backend and fairseq's ``legacy_ddp`` wrapper (unless
``--ddp-backend`` is given), then runs fairseq-train in-process.

Usage: ``torchrun --nproc_per_node N [--nnodes M ...] -m labo_fairseq.pipeline.launch
<fairseq-train args>`` (see docs/TRAINING.md).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Mapping, Sequence

import torch


def distributed_args(argv: Sequence[str], env: Mapping[str, str], cuda: bool) -> list[str]:
    """fairseq-train arguments for this torchrun worker: ``argv`` plus explicit distributed flags."""
    missing = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in env]
    if missing:
        raise RuntimeError(f"not started by torchrun (missing {', '.join(missing)} in the environment)")
    args = [*argv, "--distributed-world-size", env["WORLD_SIZE"], "--distributed-rank", env["RANK"],
            "--distributed-init-method", "env://", "--distributed-no-spawn"]
    if cuda and "--cpu" not in argv:
        return [*args, "--device-id", env["LOCAL_RANK"]]
    args += ["--distributed-backend", "gloo"]
    if "--cpu" not in argv:
        args.append("--cpu")
    if not any(a == "--ddp-backend" or a.startswith("--ddp-backend=") for a in argv):
        args += ["--ddp-backend", "legacy_ddp"]
    return args


def main() -> None:
    sys.argv = ["fairseq-train", *distributed_args(sys.argv[1:], os.environ, torch.cuda.is_available())]
    from fairseq_cli.train import cli_main

    # fairseq_cli.train's own logging.basicConfig is a no-op here: importing this package
    # (and so fairseq) already configured the root logger. Use fairseq-train's format.
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S", level=logging.INFO, stream=sys.stdout, force=True)
    cli_main()


if __name__ == "__main__":
    main()
