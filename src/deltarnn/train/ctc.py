"""Greedy CTC decoding and edit distance, for the connected-digit task."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

BLANK = 0


def greedy_decode(log_probs: Tensor, lengths: Tensor, blank: int = BLANK) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks.

    Args:
        log_probs: (T, B, C). lengths: (B,) valid frames.

    Returns:
        One label list per sequence.
    """
    best = log_probs.argmax(-1).t().tolist()  # (B, T)
    out = []
    for seq, n in zip(best, lengths.tolist(), strict=True):
        labels, prev = [], blank
        for c in seq[:n]:
            if c != prev and c != blank:
                labels.append(c)
            prev = c
        out.append(labels)
    return out


def edit_distance(a: Sequence[int], b: Sequence[int]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]
