"""Data-parallel training without GPUs: two torchrun CPU workers over gloo.

Two workers with ``--max-tokens B`` each must train exactly like one worker with the same
``B`` and ``--update-freq 2`` (fairseq shards batch i to worker i mod 2, and update-freq groups
batches (2k, 2k+1), so both see the same batches per update). We compare every logged
per-update statistic — including LABO's ``labo_temp`` / ``labo_bound``, which fairseq gathers
from all workers before the criterion reduces them — and the final parameters.
"""
from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from labo_fairseq.pipeline import fairseq_log, launch, layout

CORPORA = layout.REPO_ROOT.parent / "shared" / "corpora"
N_LINES = 240
TINY = ["--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1",
        "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
        "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
        "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
        "--share-all-embeddings", "--dropout", "0", "--optimizer", "adam", "--lr", "5e-4",
        "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "10", "--max-tokens", "512",
        "--max-update", "4", "--log-format", "json", "--log-interval", "1", "--seed", "1",
        "--num-workers", "0", "--cpu", "--disable-validation", "--no-epoch-checkpoints"]
CRITERIA = {
    "ls": ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1"],
    "labo": ["--criterion", "labo_label_smoothed_cross_entropy", "--label-smoothing", "0.1",
             "--labo-budget", "1.0"],
}
LOGGED = ("loss", "nll_loss", "wpb", "bsz", "gnorm", "labo_temp", "labo_bound")


@pytest.fixture(scope="module")
def data_bin(tmp_path_factory) -> Path:
    """A tiny binarized Multi30k en-de training set (train split only)."""
    if not (CORPORA / "multi30k").is_dir():
        pytest.skip(f"no corpus mirror at {CORPORA}")
    root = tmp_path_factory.mktemp("dist_data")
    for lang in ("en", "de"):
        with gzip.open(CORPORA / "multi30k" / "raw" / f"train.{lang}.gz", "rt", encoding="utf-8") as f:
            (root / f"raw.{lang}").write_text("".join(next(f) for _ in range(N_LINES)))
    spm.SentencePieceTrainer.train(input=f"{root}/raw.en,{root}/raw.de", model_prefix=str(root / "spm"),
                                   vocab_size=200, minloglevel=2, num_threads=1)
    model = spm.SentencePieceProcessor(model_file=str(root / "spm.model"))
    for lang in ("en", "de"):
        lines = (root / f"raw.{lang}").read_text().splitlines()
        (root / f"train.{lang}").write_text("".join(" ".join(p) + "\n" for p in model.encode(lines, out_type=str)))
    subprocess.run([sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", "en",
                    "--target-lang", "de", "--trainpref", str(root / "train"), "--destdir",
                    str(root / "bin"), "--joined-dictionary", "--workers", "1"],
                   check=True, capture_output=True)
    return root / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(command: list[str]) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(layout.REPO_ROOT)}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=layout.REPO_ROOT)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return [r for line in output.splitlines() if (r := fairseq_log.parse_line(line)) and r["tag"] == "train_inner"]


def _params(save_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(save_dir / "checkpoint_last.pt", map_location="cpu", weights_only=True)["model"]


def _criterion_available(name: str) -> bool:
    from fairseq.criterions import CRITERION_REGISTRY

    return name in CRITERION_REGISTRY


@pytest.mark.parametrize("method", sorted(CRITERIA))
def test_two_cpu_workers_match_update_freq_2(method, data_bin, tmp_path):
    criterion = CRITERIA[method]
    if not _criterion_available(criterion[1]):
        pytest.skip(f"criterion {criterion[1]} is not registered")
    common = [str(data_bin), "--user-dir", str(layout.USER_DIR), *TINY, *criterion]
    distributed = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                        "-m", "labo_fairseq.pipeline.launch", *common, "--save-dir", str(tmp_path / "dist")])
    single = _run([sys.executable, "-m", "fairseq_cli.train", *common, "--update-freq", "2",
                   "--save-dir", str(tmp_path / "single")])

    assert [r["num_updates"] for r in distributed] == [r["num_updates"] for r in single] == [1, 2, 3, 4]
    keys = [k for k in LOGGED if k in single[0]]
    if method == "labo":
        assert {"labo_temp", "labo_bound"} <= set(keys)
    for d, s in zip(distributed, single):
        for key in keys:
            assert d[key] == pytest.approx(s[key], abs=2e-3), (key, d, s)

    dist_params, single_params = _params(tmp_path / "dist"), _params(tmp_path / "single")
    assert dist_params.keys() == single_params.keys()
    for name, value in single_params.items():
        torch.testing.assert_close(dist_params[name], value, atol=1e-5, rtol=1e-4, msg=name)


def test_launcher_cpu_flags():
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    args = launch.distributed_args(["bin", "--arch", "transformer"], env, cuda=False)
    assert args[:3] == ["bin", "--arch", "transformer"]
    for flag, value in (("--distributed-rank", "1"), ("--distributed-world-size", "2"),
                        ("--distributed-init-method", "env://"), ("--distributed-backend", "gloo"),
                        ("--ddp-backend", "legacy_ddp")):
        assert args[args.index(flag) + 1] == value
    assert "--cpu" in args and "--distributed-no-spawn" in args
    kept = launch.distributed_args(["bin", "--ddp-backend", "no_c10d"], env, cuda=False)
    assert kept.count("--ddp-backend") == 1
    gpu = launch.distributed_args(["bin"], env, cuda=True)
    assert gpu[gpu.index("--device-id") + 1] == "1" and "--cpu" not in gpu


def test_launcher_refuses_without_torchrun():
    with pytest.raises(RuntimeError, match="torchrun"):
        launch.distributed_args(["bin"], {}, cuda=False)
