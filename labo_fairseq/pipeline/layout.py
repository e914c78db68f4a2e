"""Where the pipeline reads and writes files, in one place.

Training, evaluation and the reproduction driver must agree on the run-directory layout
(``<save_root>/<pair>/<method>/seed<S>/``) and on the prepared-data layout written by
``scripts/prepare.sh`` (``<data_root>/<pair>/{bin,spm,raw,tok}``); both are defined here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
USER_DIR = REPO_ROOT / "labo_fairseq"
DEFAULT_DATA_ROOT = REPO_ROOT / "data"
DEFAULT_SAVE_ROOT = REPO_ROOT / "checkpoints"
DEFAULT_RESULTS_DIR = REPO_ROOT / "results"

RUN_JSON = "run.json"
DONE = "DONE"
TRAIN_LOG = "train.log"
FAIRSEQ_LOG = "fairseq.log"
RESULT_JSON = "result.json"
SPLITS = ("test", "valid")


def result_json(split: str = "test") -> str:
    """Evaluation record of one split: ``result.json`` for test, ``result.<split>.json`` else."""
    return RESULT_JSON if split == "test" else f"result.{split}.json"


def hyp_file(split: str = "test") -> str:
    """Detokenised hypotheses of one split, in corpus order."""
    return f"hyp.{split}.txt"


def run_dir(save_root: Path, pair: str, method: str, seed: int) -> Path:
    """The directory holding one run's checkpoints, logs and results."""
    return Path(save_root) / pair / method / f"seed{seed}"


@dataclass(frozen=True)
class PairData:
    """Paths of one pair's prepared data (the output of ``scripts/prepare.sh``)."""

    root: Path
    target: str

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def spm_model(self) -> Path:
        return self.root / "spm" / "spm.model"

    @property
    def raw_test_ref(self) -> Path:
        return self.raw_ref("test")

    def raw_ref(self, split: str) -> Path:
        """Untouched references of ``split`` (test or valid)."""
        return self.root / "raw" / f"{split}.{self.target}"

    def tok_ref(self, split: str) -> Path:
        """Tokenized references for tokenized BLEU: ``tok/<split>.<tgt>`` where prepare wrote one,
        else ``raw/<split>.<tgt>`` (for moses-lower pairs the raw text is already tokenized)."""
        tok = self.root / "tok" / f"{split}.{self.target}"
        return tok if tok.is_file() else self.raw_ref(split)

    def is_prepared(self) -> bool:
        """True once prepare.sh has finished (``bin/`` is its last stage, renamed into place)."""
        return self.bin.is_dir() and self.spm_model.is_file() and self.raw_test_ref.is_file()


def pair_data(data_root: Path, pair: str, target: str) -> PairData:
    return PairData(Path(data_root) / pair, target)
