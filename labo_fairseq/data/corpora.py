"""Per-corpus knowledge: which source files a pair needs and how they become split texts.

:func:`corpus_sources` names the files (so they can be fetched and verified before anything is
written); :func:`read_corpus` turns the verified files into normalised parallel lines for the
train/valid/test splits, checking line counts against what the corpus is known to contain.
"""
from __future__ import annotations

from pathlib import Path

from labo_fairseq.data import sources
from labo_fairseq.data.iwslt import read_iwslt14, read_iwslt17
from labo_fairseq.data.sources import DataError, SourceFile
from labo_fairseq.data.wmt import read_wmt14
from labo_fairseq.data.splits import split_pairs, subsample
from labo_fairseq.data.text import read_gzip_lines, read_tatoeba_pairs
from labo_fairseq.pairs import PairConfig

SPLIT_KEYS = ("train", "valid", "test")
Parallel = tuple[list[str], list[str]]


def corpus_sources(cfg: PairConfig) -> dict[str, SourceFile]:
    """Source files of ``cfg``'s corpus, keyed by a short role name."""
    if cfg.corpus == "multi30k":
        return {
            f"{key}.{lang}": sources.multi30k_file(getattr(cfg.splits, key), lang)
            for key in SPLIT_KEYS for lang in (cfg.source, cfg.target)
        }
    if cfg.corpus == "tatoeba-deu-eng":
        return {"pairs": sources.tatoeba_file()}
    return {f.mirror_path: f for f in sources.paper_files(cfg.corpus, cfg.source, cfg.target)}


def read_corpus(cfg: PairConfig, paths: dict[str, Path]) -> dict[str, Parallel]:
    """(source lines, target lines) per split key, from the verified files in ``paths``."""
    if cfg.corpus == "multi30k":
        return {key: _read_multi30k(cfg, key, paths) for key in SPLIT_KEYS}
    if cfg.corpus == "tatoeba-deu-eng":
        return _read_tatoeba(cfg, paths["pairs"])
    if cfg.corpus == "iwslt14":
        (archive,) = paths.values()
        return _checked(cfg, read_iwslt14(archive, cfg.source, cfg.target), {"test": 6750})
    if cfg.corpus == "iwslt17":
        (archive,) = paths.values()
        return _checked(cfg, read_iwslt17(archive, cfg.source, cfg.target, cfg.splits.valid,
                                          cfg.splits.test), {})
    archives = {Path(role).name: path for role, path in paths.items()}
    return _checked(cfg, read_wmt14(archives, cfg.source, cfg.target), {"valid": 3000, "test": 3003})


def _checked(cfg: PairConfig, splits: dict[str, Parallel], expected: dict[str, int]) -> dict[str, Parallel]:
    """Fail unless every split has as many source as target lines (and ``expected`` where given)."""
    for key, (src, tgt) in splits.items():
        if len(src) != len(tgt) or not src or len(src) != expected.get(key, len(src)):
            raise DataError(f"{cfg.pair} {key}: {len(src)} {cfg.source} and {len(tgt)} {cfg.target} "
                            f"lines (expected {expected.get(key, 'equal, non-zero')}); the archive "
                            "looks incomplete, delete it and download it again.")
    return splits


def _read_multi30k(cfg: PairConfig, key: str, paths: dict[str, Path]) -> Parallel:
    split = getattr(cfg.splits, key)
    src = read_gzip_lines(paths[f"{key}.{cfg.source}"])
    tgt = read_gzip_lines(paths[f"{key}.{cfg.target}"])
    expected = sources.MULTI30K_LINES[split]
    if not len(src) == len(tgt) == expected:
        raise DataError(
            f"Multi30k {split}: {len(src)} {cfg.source} lines and {len(tgt)} {cfg.target} lines, "
            f"expected {expected} each; replace {paths[f'{key}.{cfg.source}']} and "
            f"{paths[f'{key}.{cfg.target}']} with fresh copies."
        )
    return src, tgt


def _read_tatoeba(cfg: PairConfig, path: Path) -> dict[str, Parallel]:
    pairs = read_tatoeba_pairs(path)
    if len(pairs) != sources.TATOEBA_PAIRS:
        raise DataError(f"{path}: {len(pairs)} non-empty pairs, expected {sources.TATOEBA_PAIRS}; "
                        "replace it with the pinned 2018-05-13 copy.")
    english_first = (cfg.source, cfg.target) == ("en", "de")
    splits = split_pairs(pairs)
    result = {}
    for key in SPLIT_KEYS:
        split = _tatoeba_split(splits, getattr(cfg.splits, key))
        english = [en for en, _ in split]
        german = [de for _, de in split]
        result[key] = (english, german) if english_first else (german, english)
    return result


def _tatoeba_split(splits: dict[str, list[tuple[str, str]]], name: str) -> list[tuple[str, str]]:
    """A split by name: ``train``, ``valid``, ``test``, or ``<split>-<N>`` (fixed N-pair subset)."""
    base, _, size = name.partition("-")
    if base not in splits or (size and not size.isdigit()):
        raise DataError(f"unknown Tatoeba split {name!r}; use train, valid, test or e.g. train-50000")
    return subsample(splits[base], int(size)) if size else splits[base]
