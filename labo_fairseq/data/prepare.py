"""Prepare one translation pair from corpus files to fairseq binarized data.

``python -m labo_fairseq.data.prepare PAIR`` (or ``scripts/prepare.sh PAIR``) fills
``<data-dir>/<pair>/``:

* ``raw/{train,valid,test}.{src,tgt}``  normalised text; ``raw/test.<tgt>`` is the BLEU reference
* ``spm/spm.model``, ``spm/spm.vocab``   joint sentencepiece model over source+target train text
* ``spm_enc/``                           sentencepiece pieces, one sentence per line
* ``bin/``                               ``fairseq-preprocess --joined-dictionary`` output
* ``manifest.json``                      sources with sha256, options, line counts, spm params
  and a completion stamp per stage

All source files are fetched and checksum-verified before anything is written. Each stage is
atomic and resumable (see :mod:`labo_fairseq.data.manifest`); a folder prepared with other
options (``--max-train-lines``, ``--vocab-size``, or a config with other splits or
preprocessing) is refused rather than mixed.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import sentencepiece as spm

from labo_fairseq.data.corpora import SPLIT_KEYS, corpus_sources, read_corpus
from labo_fairseq.data.manifest import Manifest
from labo_fairseq.data.sources import DataError, fetch
from labo_fairseq.pairs import PairConfig, list_pairs, load_pair_config

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MIRROR = REPO_ROOT.parent / "shared" / "corpora"
DEFAULT_DATA_DIR = REPO_ROOT / "data"
STAGES = ("raw", "spm", "spm_enc", "bin")


def spm_params(vocab_size: int) -> dict[str, object]:
    """Sentencepiece trainer settings; all input lines, one thread, so training is deterministic."""
    return {
        "model_type": "unigram", "vocab_size": vocab_size, "character_coverage": 1.0,
        "input_sentence_size": 0, "shuffle_input_sentence": False, "num_threads": 1,
        "hard_vocab_limit": False,
    }


def prepare(
    pair: str, data_dir: Path = DEFAULT_DATA_DIR, mirror: Path | None = DEFAULT_MIRROR,
    max_train_lines: int | None = None, vocab_size: int | None = None,
) -> Path:
    """Prepare ``pair`` into ``data_dir/<pair>`` (``mirror=None``: download); return that folder."""
    cfg = load_pair_config(pair)
    if mirror is not None and not mirror.is_dir():
        raise DataError(f"mirror directory {mirror} does not exist; pass --mirror DIR pointing at "
                        "a copy of the corpora (e.g. ../shared/corpora), or --download.")
    options = {
        "max_train_lines": max_train_lines, "vocab_size": vocab_size or cfg.bpe.vocab_size,
        "splits": asdict(cfg.splits), "preprocessing": cfg.preprocessing,
    }
    pair_dir = data_dir / cfg.pair
    manifest = Manifest(pair_dir, STAGES)
    if manifest.exists() and manifest.data.get("options") != options:
        raise DataError(
            f"{pair_dir} was prepared with options {manifest.data.get('options')}, this run asks "
            f"for {options}; use another --data-dir or delete {pair_dir} first."
        )
    files = corpus_sources(cfg)
    fetched, problems = {}, []
    for role, src in files.items():
        try:
            fetched[role] = fetch(src, mirror, data_dir / "downloads")
        except DataError as err:
            problems.append(str(err))
    if problems:
        raise DataError("\n".join(problems))
    record = {
        "pair": cfg.pair, "corpus": cfg.corpus, "source": cfg.source, "target": cfg.target,
        "options": options,
        "sources": [{"role": role, "file": str(path), "url": files[role].url, "sha256": digest}
                    for role, (path, digest) in fetched.items()],
    }
    paths = {role: path for role, (path, _) in fetched.items()}
    _stage(manifest, "raw", lambda out: _write_raw(cfg, paths, max_train_lines, out, manifest, record))
    params = spm_params(options["vocab_size"])
    _stage(manifest, "spm", lambda out: _train_spm(cfg, pair_dir / "raw", params, out, manifest))
    _stage(manifest, "spm_enc", lambda out: _encode(cfg, pair_dir, out))
    _stage(manifest, "bin", lambda out: _binarize(cfg, pair_dir / "spm_enc", out))
    return pair_dir


def _stage(manifest: Manifest, name: str, build: Callable[[Path], None]) -> None:
    start = time.time()
    ran = manifest.run_stage(name, build)
    status = f"done in {time.time() - start:.1f}s" if ran else "already complete, reused"
    print(f"[prepare {manifest.pair_dir.name}] {name}: {status}", file=sys.stderr)


def _write_raw(cfg: PairConfig, paths: dict[str, Path], max_train_lines: int | None,
               out: Path, manifest: Manifest, record: dict[str, object]) -> None:
    splits = read_corpus(cfg, paths)
    if max_train_lines is not None:
        src, tgt = splits["train"]
        splits["train"] = (src[:max_train_lines], tgt[:max_train_lines])
    for key, (src, tgt) in splits.items():
        for lang, lines in ((cfg.source, src), (cfg.target, tgt)):
            (out / f"{key}.{lang}").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    manifest.update(**record, line_counts={key: len(splits[key][0]) for key in SPLIT_KEYS})


def _train_spm(cfg: PairConfig, raw: Path, params: dict[str, object], out: Path,
               manifest: Manifest) -> None:
    inputs = ",".join(str(raw / f"train.{lang}") for lang in (cfg.source, cfg.target))
    spm.SentencePieceTrainer.train(input=inputs, model_prefix=str(out / "spm"), minloglevel=2,
                                   **params)
    manifest.update(spm=params)


def _encode(cfg: PairConfig, pair_dir: Path, out: Path) -> None:
    model = spm.SentencePieceProcessor(model_file=str(pair_dir / "spm" / "spm.model"))
    for key in SPLIT_KEYS:
        for lang in (cfg.source, cfg.target):
            lines = (pair_dir / "raw" / f"{key}.{lang}").read_text(encoding="utf-8").split("\n")[:-1]
            pieces = model.encode(lines, out_type=str)
            (out / f"{key}.{lang}").write_text("".join(" ".join(p) + "\n" for p in pieces),
                                               encoding="utf-8")


def _binarize(cfg: PairConfig, enc: Path, out: Path) -> None:
    command = [
        sys.executable, "-m", "fairseq_cli.preprocess", "--source-lang", cfg.source,
        "--target-lang", cfg.target, "--trainpref", str(enc / "train"),
        "--validpref", str(enc / "valid"), "--testpref", str(enc / "test"),
        "--destdir", str(out), "--joined-dictionary", "--workers", "1",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise DataError(f"fairseq-preprocess failed ({result.returncode}):\n{result.stderr[-3000:]}")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="labo-prepare", description=__doc__.split("\n\n")[0],
        epilog=f"pairs: {', '.join(list_pairs())}",
    )
    parser.add_argument("pair", help="pair name, i.e. a configs/<pair>.yaml")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--mirror", type=Path, default=None,
                       help=f"local copy of the corpus files (default {DEFAULT_MIRROR} if it exists)")
    where.add_argument("--download", action="store_true",
                       help="download from upstream into <data-dir>/downloads instead of a mirror")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help=f"where <pair>/ is written (default {DEFAULT_DATA_DIR})")
    parser.add_argument("--max-train-lines", type=int, default=None,
                        help="keep only the first N training pairs (test slices); also limits spm")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help="override the config's sentencepiece vocab size (small slices)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 0 on success, 2 with a one-paragraph error otherwise."""
    args = _parse_args(argv)
    mirror = args.mirror
    if mirror is None and not args.download and DEFAULT_MIRROR.is_dir():
        mirror = DEFAULT_MIRROR
    try:
        pair_dir = prepare(args.pair, args.data_dir, mirror, args.max_train_lines, args.vocab_size)
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(pair_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
