"""Loads the per-pair experiment configs in ``configs/<pair>.yaml`` into typed, frozen objects.

One YAML file per translation pair says where its data comes from (corpus, split names,
preprocessing convention, sentencepiece vocabulary), how to train it (fairseq-train arguments
shared by all methods plus the per-method criterion arguments), how to decode and score it, and
what the paper reported. Data preparation, training and evaluation all read it through
:func:`load_pair_config`, so the YAML schema is checked in one place.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
CORPORA = ("multi30k", "tatoeba-deu-eng", "iwslt14", "iwslt17", "wmt14")
PREPROCESSING = ("raw", "moses-lower")
METHODS = ("ce", "ls", "labo")
_KEYS = (
    "pair", "corpus", "source", "target", "splits", "preprocessing", "bpe", "train_args",
    "methods", "generate", "bleu", "evaluate", "paper",
)


@dataclass(frozen=True)
class Splits:
    """Corpus-specific names of the train, valid and test splits."""

    train: str
    valid: str
    test: str


@dataclass(frozen=True)
class BpeConfig:
    """Joint sentencepiece model over source+target training text."""

    vocab_size: int


@dataclass(frozen=True)
class GenerateConfig:
    """fairseq-generate decoding settings."""

    beam: int
    lenpen: float


@dataclass(frozen=True)
class BleuConfig:
    """BLEU convention: sacreBLEU tokenizer, or tokenized BLEU on tokenized lowercased text."""

    sacrebleu_tokenize: str
    tokenized_bleu: bool


@dataclass(frozen=True)
class EvaluateConfig:
    """Evaluation settings: how many last epoch checkpoints to average (0 or 1: no averaging)."""

    average_last: int


@dataclass(frozen=True)
class PaperConfig:
    """Published test BLEU per method, ``None`` where no exact number is known."""

    ls: float | None
    labo: float | None


@dataclass(frozen=True)
class PairConfig:
    """Everything needed to prepare, train and evaluate one translation direction."""

    pair: str
    corpus: str
    source: str
    target: str
    splits: Splits
    preprocessing: str
    bpe: BpeConfig
    train_args: tuple[str, ...]
    methods: Mapping[str, tuple[str, ...]]
    generate: GenerateConfig
    bleu: BleuConfig
    evaluate: EvaluateConfig
    paper: PaperConfig

    def method_args(self, method: str) -> list[str]:
        """fairseq-train arguments for ``method``: the shared ``train_args`` then its own."""
        if method not in self.methods:
            raise ValueError(f"{self.pair}: unknown method {method!r}; known: {sorted(self.methods)}")
        return [*self.train_args, *self.methods[method]]


def list_pairs(config_dir: Path = CONFIG_DIR) -> list[str]:
    """Names of all pairs with a config file, sorted."""
    return sorted(p.stem for p in config_dir.glob("*.yaml"))


def load_pair_config(name_or_path: str | Path, config_dir: Path = CONFIG_DIR) -> PairConfig:
    """Load ``configs/<name>.yaml`` (or a YAML file path) and validate it.

    Raises ValueError for an unknown pair (listing the known ones) or a malformed config.
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = config_dir / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ValueError(
                f"unknown pair {str(name_or_path)!r}; known pairs: {', '.join(list_pairs(config_dir))}"
            )
    elif not path.is_file():
        raise ValueError(f"pair config file not found: {path}")
    return _parse(yaml.safe_load(path.read_text()), path)


def _parse(raw: Any, path: Path) -> PairConfig:
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a YAML mapping")
    missing = [k for k in _KEYS if k not in raw]
    extra = [k for k in raw if k not in _KEYS]
    if missing or extra:
        raise ValueError(f"{path}: missing keys {missing}, unexpected keys {extra}")
    if raw["corpus"] not in CORPORA:
        raise ValueError(f"{path}: corpus {raw['corpus']!r} not one of {CORPORA}")
    if raw["preprocessing"] not in PREPROCESSING:
        raise ValueError(f"{path}: preprocessing {raw['preprocessing']!r} not one of {PREPROCESSING}")
    if set(raw["methods"]) != set(METHODS):
        raise ValueError(f"{path}: methods must be exactly {METHODS}, got {sorted(raw['methods'])}")
    try:
        return PairConfig(
            pair=str(raw["pair"]),
            corpus=str(raw["corpus"]),
            source=str(raw["source"]),
            target=str(raw["target"]),
            splits=Splits(**raw["splits"]),
            preprocessing=str(raw["preprocessing"]),
            bpe=BpeConfig(vocab_size=int(raw["bpe"]["vocab_size"])),
            train_args=tuple(str(a) for a in raw["train_args"]),
            methods={m: tuple(str(a) for a in args) for m, args in raw["methods"].items()},
            generate=GenerateConfig(beam=int(raw["generate"]["beam"]),
                                    lenpen=float(raw["generate"]["lenpen"])),
            bleu=BleuConfig(sacrebleu_tokenize=str(raw["bleu"]["sacrebleu_tokenize"]),
                            tokenized_bleu=bool(raw["bleu"]["tokenized_bleu"])),
            evaluate=EvaluateConfig(average_last=int(raw["evaluate"]["average_last"])),
            paper=PaperConfig(ls=_opt_float(raw["paper"]["ls"]), labo=_opt_float(raw["paper"]["labo"])),
        )
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: malformed config ({err})") from err


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
