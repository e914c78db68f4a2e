"""The criterion inside real fairseq: train → resume → generate on a Multi30k slice.

Independent of the data-preparation scripts on purpose: it checks the plugin contract alone
(``--user-dir labo_fairseq --criterion labo_label_smoothed_cross_entropy``), with the corpus read
from the offline mirror ``../shared/corpora``.
"""
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MIRROR = REPO.parent / "shared" / "corpora" / "multi30k" / "raw"
USER_DIR = str(REPO / "labo_fairseq")
TINY_MODEL = [
    "--arch", "transformer", "--encoder-layers", "1", "--decoder-layers", "1",
    "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
    "--share-all-embeddings", "--optimizer", "adam", "--lr", "2e-3", "--max-tokens", "2000",
    "--cpu", "--num-workers", "0", "--seed", "1",
]
LABO = [
    "--criterion", "labo_label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--labo-budget", "0.5", "--report-accuracy",
]


def _run(module: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _read_slice(split: str, lang: str, lines: int) -> list:
    with gzip.open(MIRROR / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
        return [next(f).strip() for _ in range(lines)]


@pytest.fixture(scope="module")
def binarized(tmp_path_factory) -> Path:
    """400 training and 40 validation pairs of Multi30k en→de, sentencepiece'd and binarized,
    laid out like a prepared pair (``bin/``, ``spm/spm.model``)."""
    if not MIRROR.is_dir():
        pytest.skip(f"corpus mirror not found at {MIRROR}")
    import sentencepiece as spm

    work = tmp_path_factory.mktemp("m30k")
    for split, n in (("train", 400), ("val", 40)):
        for lang in ("en", "de"):
            (work / f"{split}.{lang}").write_text("\n".join(_read_slice(split, lang, n)) + "\n")
    (work / "spm").mkdir()
    spm.SentencePieceTrainer.train(
        input=f"{work}/train.en,{work}/train.de", model_prefix=str(work / "spm" / "spm"),
        vocab_size=300, character_coverage=1.0, minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(work / "spm" / "spm.model"))
    for split in ("train", "val"):
        for lang in ("en", "de"):
            lines = (work / f"{split}.{lang}").read_text().splitlines()
            encoded = [" ".join(sp.encode(line, out_type=str)) for line in lines]
            (work / f"{split}.sp.{lang}").write_text("\n".join(encoded) + "\n")
    _run(
        "fairseq_cli.preprocess", "--source-lang", "en", "--target-lang", "de",
        "--trainpref", f"{work}/train.sp", "--validpref", f"{work}/val.sp",
        "--testpref", f"{work}/val.sp", "--joined-dictionary", "--workers", "1",
        "--destdir", str(work / "bin"),
    )
    return work / "bin"


def _train(data: Path, save_dir: Path, max_epoch: int) -> list:
    out = _run(
        "fairseq_cli.train", str(data), "--user-dir", USER_DIR, *TINY_MODEL, *LABO,
        "--max-epoch", str(max_epoch), "--save-dir", str(save_dir),
        "--log-format", "json", "--log-interval", "1",
    )
    return [json.loads(line[line.index("{"):]) for line in out.splitlines() if "{" in line and '"epoch"' in line]


@pytest.fixture(scope="module")
def trained(binarized: Path, tmp_path_factory) -> tuple:
    """Two epochs of a tiny transformer with the LABO criterion: (save_dir, epoch records)."""
    save_dir = tmp_path_factory.mktemp("ckpt")
    records = [r for r in _train(binarized, save_dir, max_epoch=2) if "train_loss" in r]
    return save_dir, records


def test_train_logs_labo_metrics(trained: tuple) -> None:
    save_dir, train_epochs = trained
    assert len(train_epochs) == 2
    last = train_epochs[-1]
    for key in ("train_loss", "train_nll_loss", "train_ppl", "train_labo_bound", "train_labo_beta",
                "train_accuracy"):
        assert key in last, key
    assert 0.0 <= float(last["train_labo_bound"]) <= 1.0
    assert 0.0 < float(last["train_labo_beta"]) <= 1.0
    assert float(train_epochs[1]["train_loss"]) < float(train_epochs[0]["train_loss"])
    assert (save_dir / "checkpoint_last.pt").is_file()


def test_resume_then_generate(binarized: Path, trained: tuple) -> None:
    save_dir, train_epochs = trained
    resumed = [r for r in _train(binarized, save_dir, max_epoch=3) if "train_loss" in r]
    assert [int(r["epoch"]) for r in resumed] == [3], "resume must continue at epoch 3"
    assert int(resumed[0]["train_num_updates"]) > int(train_epochs[-1]["train_num_updates"])

    out = _run(
        "fairseq_cli.generate", str(binarized), "--user-dir", USER_DIR, "--cpu",
        "--path", str(save_dir / "checkpoint_last.pt"), "--beam", "2", "--batch-size", "40",
        "--max-len-b", "20",
    )
    hyps = [line for line in out.splitlines() if line.startswith("H-")]
    assert len(hyps) == 40
    assert "BLEU" in out


def test_checkpoint_loads_weights_only(trained: tuple) -> None:
    """torch >= 2.6 loads weights-only by default; the plugin allowlists fairseq's types."""
    import torch

    import labo_fairseq  # noqa: F401  (registers the allowlist)

    save_dir, _ = trained
    state = torch.load(save_dir / "checkpoint1.pt", weights_only=True)
    assert state["cfg"]["criterion"]["_name"] == "labo_label_smoothed_cross_entropy"
    assert state["cfg"]["criterion"]["labo_budget"] == 0.5


def test_inspector_figure_and_histogram(binarized: Path, trained: tuple, tmp_path: Path) -> None:
    """The Figure-1 inspector renders both PNGs from a real checkpoint and reports T."""
    save_dir, _ = trained
    data = binarized.parent
    common = ["--checkpoint", str(save_dir / "checkpoint1.pt"), "--data", str(data)]
    out = _run(
        "labo_fairseq.inspector", "targets", *common, "--out", str(tmp_path / "fig1.png"),
        "--source", "Two young men are outside.", "--target", "Zwei junge Männer sind draußen.",
        "--max-tokens", "4",
    )
    rows = [line for line in out.splitlines() if " T=" in line]
    assert len(rows) == 4
    assert (tmp_path / "fig1.png").stat().st_size > 10_000
    out = _run("labo_fairseq.inspector", "histogram", *common, "--out", str(tmp_path / "h.png"))
    summary = json.loads(out[out.index("{"): out.index("}") + 1])
    assert summary["tokens"] > 100
    assert 0.0 <= summary["bound_fraction"] <= 1.0
    assert summary["median_temperature"] >= 1.0
    assert (tmp_path / "h.png").is_file()
