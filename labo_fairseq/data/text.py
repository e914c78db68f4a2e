"""Reading corpus files into lines and normalising text.

Readers turn a verified source file (gzip text, Tatoeba zip, plain text) into a list of
lines and raise :class:`~labo_fairseq.data.sources.DataError` naming the file when it cannot be
decoded. :func:`normalise` is the one normalisation applied to raw cased text: Unicode NFC and
whitespace collapsed to single spaces, so one line stays one sentence.
"""
from __future__ import annotations

import gzip
import tarfile
import unicodedata
import zipfile
import zlib
from pathlib import Path

from labo_fairseq.data.sources import DataError


def normalise(line: str) -> str:
    """NFC-normalise and collapse all whitespace (tabs, newlines, NBSP runs) to single spaces."""
    return " ".join(unicodedata.normalize("NFC", line).split())


def read_gzip_lines(path: Path) -> list[str]:
    """Normalised lines of a gzipped UTF-8 text file."""
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="\n") as handle:
            return [normalise(line) for line in _split_lines(handle.read())]
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not a valid gzipped UTF-8 file ({err}); replace it with a "
                        "fresh copy from the mirror or upstream.") from err


def read_text_lines(path: Path) -> list[str]:
    """Normalised lines of a UTF-8 text file."""
    try:
        return [normalise(line) for line in _split_lines(path.read_text(encoding="utf-8"))]
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not valid UTF-8 ({err}); replace it with a fresh copy.") from err


def read_tatoeba_pairs(path: Path, member: str = "deu.txt") -> list[tuple[str, str]]:
    """(english, german) pairs from the manythings.org zip, normalised, empty ones dropped."""
    try:
        with zipfile.ZipFile(path) as archive:
            text = archive.read(member).decode("utf-8")
    except (zipfile.BadZipFile, KeyError, OSError, zlib.error, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not a valid Tatoeba zip with {member} ({err}); replace it "
                        "with a fresh copy from the mirror or upstream.") from err
    pairs = []
    for number, line in enumerate(_split_lines(text), start=1):
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataError(f"{path}:{member}:{number}: expected english<TAB>german, got {line!r}")
        english, german = normalise(fields[0]), normalise(fields[1])
        if english and german:
            pairs.append((english, german))
    return pairs


def read_tar_members(archive: Path, names: set[str] | None = None) -> dict[str, str]:
    """UTF-8 text of the archive's regular files (only those whose base name is in ``names``,
    if given), keyed by base name."""
    found = {}
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and (names is None or base in names):
                    found[base] = tar.extractfile(member).read().decode("utf-8")
    except (tarfile.TarError, OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
        raise DataError(f"{archive} is not a valid archive ({err}); delete it and download it "
                        "again.") from err
    return found


def clean_pairs(src: list[str], tgt: list[str], ratio: float, max_len: int) -> tuple[list[str], list[str]]:
    """Moses clean-corpus-n.perl: keep pairs with 1..max_len whitespace tokens a side and a
    token-count ratio of at most ``ratio`` either way."""
    if len(src) != len(tgt):
        raise DataError(f"parallel sides differ in length: {len(src)} vs {len(tgt)} lines")
    kept: tuple[list[str], list[str]] = ([], [])
    for s, t in zip(src, tgt):
        ns, nt = len(s.split()), len(t.split())
        if 1 <= ns <= max_len and 1 <= nt <= max_len and ns / nt <= ratio and nt / ns <= ratio:
            kept[0].append(s)
            kept[1].append(t)
    return kept


def _split_lines(text: str) -> list[str]:
    """Split on newlines only (not on the other characters str.splitlines breaks on)."""
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines
