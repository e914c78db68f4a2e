"""Extract the WMT'14 English-German archives of fairseq's prepare-wmt14en2de.sh.

Training data is Europarl v7 + Common Crawl + News Commentary v12 (the same archives fairseq
downloads), kept cased and untokenized for sentencepiece: lines are normalised, and pairs are
cleaned like ``clean-corpus-n.perl -ratio 1.5 ... 1 250`` on whitespace tokens. Unlike fairseq
(which holds out every 100th training pair), valid is newstest2013 (``dev.tgz``) and test is
the full newstest2014 (``test-full.tgz``, 3,003 segments), as the config's ``splits`` say.
"""
from __future__ import annotations

import re
from pathlib import Path

from labo_fairseq.data.sources import DataError
from labo_fairseq.data.text import clean_pairs, normalise, read_tar_members

Parallel = tuple[list[str], list[str]]
TRAIN_MEMBERS = {
    "training-parallel-europarl-v7.tgz": "europarl-v7.de-en",
    "training-parallel-commoncrawl.tgz": "commoncrawl.de-en",
    "training-parallel-nc-v12.tgz": "news-commentary-v12.de-en",
}
TEST_SGM = {"en": "newstest2014-deen-src.en.sgm", "de": "newstest2014-deen-ref.de.sgm"}
SEG = re.compile(r"<seg id=\"?[0-9]+\"?>\s*(.*?)\s*</seg>")


def read_wmt14(archives: dict[str, Path], source: str, target: str) -> dict[str, Parallel]:
    """train/valid/test of WMT'14 En-De in the (source, target) direction."""
    train: dict[str, list[str]] = {"en": [], "de": []}
    for archive_name, stem in TRAIN_MEMBERS.items():
        names = {f"{stem}.en", f"{stem}.de"}
        members = read_tar_members(archives[archive_name], names)
        en, de = clean_pairs(_lines(members, f"{stem}.en"), _lines(members, f"{stem}.de"),
                             ratio=1.5, max_len=250)
        train["en"] += en
        train["de"] += de
    dev = read_tar_members(archives["dev.tgz"], {"newstest2013.en", "newstest2013.de"})
    test = read_tar_members(archives["test-full.tgz"], set(TEST_SGM.values()))
    splits = {
        "train": train,
        "valid": {lang: _lines(dev, f"newstest2013.{lang}") for lang in ("en", "de")},
        "test": {lang: [normalise(m.group(1)) for m in SEG.finditer(_member(test, TEST_SGM[lang]))]
                 for lang in ("en", "de")},
    }
    return {key: (lines[source], lines[target]) for key, lines in splits.items()}


def _member(members: dict[str, str], name: str) -> str:
    if name not in members:
        raise DataError(f"WMT'14 archive lacks {name}; delete the archive and download it again.")
    return members[name]


def _lines(members: dict[str, str], name: str) -> list[str]:
    lines = _member(members, name).split("\n")
    return [normalise(line) for line in (lines[:-1] if lines[-1] == "" else lines)]
