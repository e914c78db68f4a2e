"""The fixed, deduplicated train/valid/test split of the Tatoeba German-English pairs.

Tatoeba ships no splits, and the same English or German sentence often appears in several
pairs (alternative translations). To keep every sentence in exactly one split:

1. exact duplicate (english, german) pairs are dropped, keeping the first occurrence;
2. pairs sharing an English or a German sentence are grouped (union-find, transitively);
3. groups are ordered by the sha256 of their first pair (in file order), a stable hash that does
   not depend on Python's hash seed; test takes groups in that order until it holds at least
   ``test_size`` pairs, then valid until it holds ``valid_size``; the rest is train.
   Groups larger than ``max_eval_group`` pairs always go to train, so one big cluster of
   alternative translations cannot swamp a test set.

Within each split, pairs keep their original file order. :func:`subsample` takes a fixed
subset of a split (the pairs with the smallest sha256), e.g. to fit a CPU time budget; the
configs name it ``train-<N>``. See docs/DATA.md.
"""
from __future__ import annotations

import hashlib

Pair = tuple[str, str]
TEST_SIZE = 2000
VALID_SIZE = 2000
MAX_EVAL_GROUP = 20


def split_pairs(
    pairs: list[Pair], test_size: int = TEST_SIZE, valid_size: int = VALID_SIZE,
    max_eval_group: int = MAX_EVAL_GROUP,
) -> dict[str, list[Pair]]:
    """Split (english, german) pairs into {"train", "valid", "test"} as described above."""
    unique = list(dict.fromkeys(pairs))
    groups = _group_by_shared_sentence(unique)
    order = sorted(groups, key=lambda members: _stable_hash(unique[members[0]]))
    assignment: dict[int, str] = {}
    sizes = {"test": 0, "valid": 0}
    for members in order:
        split = "train"
        if len(members) <= max_eval_group:
            if sizes["test"] < test_size:
                split = "test"
            elif sizes["valid"] < valid_size:
                split = "valid"
        if split != "train":
            sizes[split] += len(members)
        for index in members:
            assignment[index] = split
    result: dict[str, list[Pair]] = {"train": [], "valid": [], "test": []}
    for index, pair in enumerate(unique):
        result[assignment[index]].append(pair)
    return result


def subsample(pairs: list[Pair], size: int) -> list[Pair]:
    """The ``size`` pairs with the smallest stable hash, in their original order."""
    chosen = set(sorted(range(len(pairs)), key=lambda i: _stable_hash(pairs[i]))[:size])
    return [pair for index, pair in enumerate(pairs) if index in chosen]


def _group_by_shared_sentence(pairs: list[Pair]) -> list[list[int]]:
    """Indices of pairs grouped into connected components over shared sentences."""
    parent = list(range(len(pairs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[tuple[int, str], int] = {}
    for index, (english, german) in enumerate(pairs):
        for key in ((0, english), (1, german)):
            other = first_seen.setdefault(key, index)
            root_a, root_b = find(index), find(other)
            if root_a != root_b:
                parent[max(root_a, root_b)] = min(root_a, root_b)
    groups: dict[int, list[int]] = {}
    for index in range(len(pairs)):
        groups.setdefault(find(index), []).append(index)
    return list(groups.values())


def _stable_hash(pair: Pair) -> str:
    return hashlib.sha256(f"{pair[0]}\t{pair[1]}".encode("utf-8")).hexdigest()
