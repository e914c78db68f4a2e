"""Writes a benchmark's generated markdown into a document between its own begin/end markers,
so reruns replace their table in docs/PERFORMANCE.md and leave the hand-written text alone."""
from pathlib import Path


def write_block(path, block: str, begin: str, end: str) -> None:
    """Replaces the text from ``begin`` to ``end`` in ``path`` by ``block`` (which carries both
    markers), or appends ``block`` if the markers are not there yet."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text + ("\n" if text and not text.endswith("\n") else "") + block + "\n"
    path.write_text(text)
