"""Extract IWSLT TED archives (WIT3 format) into parallel split texts.

IWSLT'14 De-En follows fairseq's ``examples/translation/prepare-iwslt14.sh`` up to (not
including) BPE: training lines from ``train.tags.de-en.*`` minus the metadata lines, Moses
tokenization (sacremoses instead of the Perl scripts), ``clean-corpus-n`` with ratio 1.5 and
1-175 tokens, lowercasing; valid is every 23rd training pair and test is dev2010 + TEDX
dev2012 + tst2010-2012. IWSLT'17 (``preprocessing: raw``) keeps the cased text untokenized
and only drops metadata lines and pairs with an empty side; its valid/test are the XML sets
named in the config's ``splits``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from labo_fairseq.data.sources import DataError
from labo_fairseq.data.text import clean_pairs, normalise, read_tar_members

Parallel = tuple[list[str], list[str]]
METADATA = ("<url>", "<talkid>", "<keywords>")
STRIPPED_TAGS = ("<title>", "</title>", "<description>", "</description>")
IWSLT14_TEST = ("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012")
SEG = re.compile(r'<seg id="[0-9]*">\s*(.*?)\s*</seg>')


def read_iwslt14(archive: Path, source: str, target: str) -> dict[str, Parallel]:
    """train/valid/test of IWSLT'14 De-En, lowercased and Moses-tokenized, as fairseq does."""
    members = read_tar_members(archive)
    tok = {lang: _moses_lower(lang) for lang in ("de", "en")}
    de, en = clean_pairs(*(tok[lang](_train_lines(members, "de-en", lang)) for lang in ("de", "en")),
                         ratio=1.5, max_len=175)
    test = {lang: [line for name in IWSLT14_TEST
                   for line in tok[lang](_xml_lines(members, f"IWSLT14.{name}.de-en.{lang}.xml"))]
            for lang in ("de", "en")}
    splits = {
        "train": {"de": _every_23rd(de, False), "en": _every_23rd(en, False)},
        "valid": {"de": _every_23rd(de, True), "en": _every_23rd(en, True)},
        "test": test,
    }
    return {key: (lines[source], lines[target]) for key, lines in splits.items()}


def read_iwslt17(archive: Path, source: str, target: str, valid: str, test: str) -> dict[str, Parallel]:
    """train/valid/test of an IWSLT'17 <foreign>-en archive, cased and untokenized."""
    members = read_tar_members(archive)
    foreign = source if target == "en" else target
    pair = f"{foreign}-en"
    train = _drop_empty(*(_train_lines(members, pair, lang) for lang in (foreign, "en")))
    splits = {"train": dict(zip((foreign, "en"), train))}
    for key, name in (("valid", valid), ("test", test)):
        splits[key] = {lang: _xml_lines(members, f"IWSLT17.TED.{name}.{pair}.{lang}.xml")
                       for lang in (foreign, "en")}
    return {key: (lines[source], lines[target]) for key, lines in splits.items()}


def _every_23rd(lines: list[str], keep: bool) -> list[str]:
    """Lines whose 1-based number is (keep=True) or is not a multiple of 23, as fairseq's awk."""
    return [line for number, line in enumerate(lines, 1) if (number % 23 == 0) == keep]


def _member(members: dict[str, str], name: str) -> str:
    if name not in members:
        raise DataError(f"IWSLT archive lacks {name}; has {', '.join(sorted(members))}")
    return members[name]


def _train_lines(members: dict[str, str], pair: str, lang: str) -> list[str]:
    lines = []
    for line in _member(members, f"train.tags.{pair}.{lang}").split("\n"):
        if any(tag in line for tag in METADATA):
            continue
        for tag in STRIPPED_TAGS:
            line = line.replace(tag, "")
        lines.append(line)
    return lines[:-1] if lines and lines[-1] == "" else lines


def _xml_lines(members: dict[str, str], name: str) -> list[str]:
    return [normalise(match.group(1).replace("\u2019", "'"))
            for match in SEG.finditer(_member(members, name))]


def _moses_lower(lang: str) -> Callable[[list[str]], list[str]]:
    from sacremoses import MosesTokenizer  # only the moses-lower corpora need it

    tokenizer = MosesTokenizer(lang=lang)
    return lambda lines: [normalise(tokenizer.tokenize(line, return_str=True, escape=True)).lower()
                          for line in lines]


def _drop_empty(src: list[str], tgt: list[str]) -> Parallel:
    if len(src) != len(tgt):
        raise DataError(f"IWSLT training sides differ in length: {len(src)} vs {len(tgt)} lines")
    pairs = [(normalise(s), normalise(t)) for s, t in zip(src, tgt)]
    kept = [(s, t) for s, t in pairs if s and t]
    return [s for s, _ in kept], [t for _, t in kept]
