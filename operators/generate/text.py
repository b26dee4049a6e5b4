"""Text helpers the generators share: ROUGE-L similarity, keyword search, numbered-list parsing."""

from __future__ import annotations

import re
from collections import Counter

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokenizer without stemming (what Self-Instruct used): lowercase alphanumerics."""
    return _NON_ALNUM.sub(" ", text.lower()).split()


def _lcs(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:  # one row of the DP table at a time: O(len(a) * len(b)) time, O(len(b)) memory
        diag = 0
        for j, y in enumerate(b, 1):
            up = row[j]
            row[j] = diag + 1 if x == y else max(row[j], row[j - 1])
            diag = up
    return row[-1]


def rouge_l(a: list[str], b: list[str]) -> float:
    """ROUGE-L F-measure of two token lists."""
    if not a or not b:
        return 0.0
    lcs = _lcs(a, b)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(b), lcs / len(a)
    return 2 * precision * recall / (precision + recall)


def most_similar(tokens: list[str], pool: list[list[str]], floor: float = 0.0) -> tuple[float, int]:
    """(best ROUGE-L above `floor`, its index in pool), or (0.0, -1) when nothing scores above `floor`.

    The LCS is at most the number of tokens two texts share (with multiplicity), so 2*shared/(len_a+len_b)
    bounds the F-measure: pool entries whose bound cannot beat the best so far skip the O(n*m) DP."""
    best, where, mine = floor, -1, Counter(tokens)
    for i, other in enumerate(pool):
        total = len(tokens) + len(other)
        if not total or 2 * min(len(tokens), len(other)) / total <= best:
            continue
        shared = sum((mine & Counter(other)).values())
        if 2 * shared / total <= best:
            continue
        score = rouge_l(tokens, other)
        if score > best:
            best, where = score, i
    return (best, where) if where >= 0 else (0.0, -1)


def has_keyword(text: str, words: list[str]) -> str | None:
    """The first of `words` found in `text` as a whole word (case-insensitive), or None."""
    for word in words:
        if re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE):
            return word
    return None


def numbered_items(text: str) -> list[str]:
    """Split a numbered list ("9. foo\\n10. bar") into its items; a leading number is optional."""
    text = re.sub(r"^\s*\d+\s?[.)]\s*", "", text.strip())
    return [re.sub(r"\s+", " ", item).strip() for item in re.split(r"\n\s*\d+\s?[.)]\s", text)]


def word_count(text: str | None) -> int:
    """Words as the length filter counts them (any language: each Chinese, Japanese or Thai character is one)."""
    import polars as pl

    from operators.quality.text import plain_word_count

    return int(pl.select(plain_word_count(pl.lit(text or "", pl.String))).item())
