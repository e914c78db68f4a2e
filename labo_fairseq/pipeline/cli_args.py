"""Small helpers for reading and editing fairseq command-line argument lists.

Pair configs hold fairseq-train arguments as flat lists; the pipeline must read values from
them (``--keep-last-epochs``) and drop flags it sets itself so a run's recorded command has
exactly one, unambiguous value for each.
"""
from __future__ import annotations

from typing import Sequence


def flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of the last ``flag VALUE`` / ``flag=VALUE`` in ``args``, else None."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def drop_flags(args: Sequence[str], with_value: Sequence[str] = (), switches: Sequence[str] = ()) -> list[str]:
    """``args`` without the given flags: ``with_value`` flags lose their value too."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in with_value:
            skip = True
        elif arg in switches or any(arg.startswith(f + "=") for f in with_value):
            continue
        else:
            out.append(arg)
    return out


def split_passthrough(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``argv`` at the first ``--``: (our arguments, arguments passed on to fairseq)."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []
