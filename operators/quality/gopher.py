"""Gopher's quality and repetition rules (Rae et al. 2021, MassiveText, Table A1) with the published
defaults, scored in Polars and decided as thresholds. Rule names and order follow datatrove's filters."""

from __future__ import annotations

import numpy as np
import polars as pl
from pydantic import Field

from operators.base import Threshold, thresholds_of
from operators.quality import languages as lg
from operators.quality import text as tx
from operators.quality import tokenize
from operators.quality.text import TextParams, text_of
from operators.registry import register

STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]
# Python's str.splitlines() boundaries, folded into "\n" so line counts match it.
_LINE_BREAKS = r"\r\n|[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]"
_TOKENS = "__tokens"  # a scratch column: the text is tokenised once per batch
_STOP_LIST = "__stop_words"  # a scratch column: each row's language's stop words
# A word is a token with a character outside datatrove's punctuation set (ASCII punctuation, control
# characters, sentence terminators and a few CJK and typographic marks): "€" and "•" are words, "--" is not.
_WORD_CHAR = (r"[^!-/:-@\[-`{-~\x00-\x1f\x7f-\x9f«´»–—’“”„…∶━►、〈〉《》「」【】％（），１：；～៖៙៚"
              r"\p{Sentence_Terminal}]")


def threshold_rule(column: str, op: str, limit: float) -> pl.Expr:
    """True where the score fails: below ("<") or above (">") the limit."""
    return pl.col(column) < limit if op == "<" else pl.col(column) > limit


@register
class GopherQuality(lg.CalibratedFilter):
    """Gopher quality rules: word count, mean word length, symbols, bullets, ellipses, alphabetic words, stop words."""

    name = "gopher_quality"
    LANGUAGE_RULES = {"short_mean_word_length": "min_mean_word_length", "long_mean_word_length": "max_mean_word_length",
                      "too_few_alpha_words": "min_alpha_words_ratio", "too_few_stop_words": "stop_words"}

    class Params(lg.LanguageParams):
        min_words: int | None = Field(default=50, description="fewest words (tokens that are not all punctuation)")
        max_words: int | None = 100_000
        min_mean_word_length: float | None = Field(default=3, description="English; other languages: published")
        max_mean_word_length: float | None = Field(default=10, description="English; other languages: published")
        max_symbol_word_ratio: float | None = Field(default=0.1, description="'#' and '...' per token, each")
        max_bullet_lines_ratio: float | None = 0.9
        max_ellipsis_lines_ratio: float | None = 0.3
        min_alpha_words_ratio: float | None = Field(default=0.8, description="share of tokens with a letter "
                                                    "(English; other languages: published)")
        min_stop_words: int | None = Field(default=2, description="distinct stop words present (case-sensitive)")
        stop_words: list[str] = Field(default=STOP_WORDS, description="English; other languages: published")

    def score(self, batch: pl.DataFrame) -> pl.DataFrame:
        text, toks = tx.rule_text(batch, self.params.field), pl.col(_TOKENS)
        tokens = toks.list.len()
        words = toks.list.eval(pl.element().filter(pl.element().str.contains(_WORD_CHAR)))
        alpha = tx.count_true(toks, pl.element().str.contains(r"\p{L}"))
        flat = text.str.replace_all(_LINE_BREAKS, "\n").str.replace(r"\n$", "")  # as str.splitlines() sees it
        line_count = flat.str.count_matches("\n", literal=True) + 1
        ellipses = text.str.count_matches("...", literal=True) + text.str.count_matches("…", literal=True)
        scored = batch.with_columns(tx.words(text).alias(_TOKENS))
        scored, stop_words = self._stop_words(scored)
        return scored.lazy().with_columns(  # lazy: shared parts once
            words.list.len().cast(pl.Int64).alias("score_gopher_words"),
            tx.ratio(words.list.eval(pl.element().str.len_chars()).list.sum(), words.list.len())
            .alias("score_gopher_mean_word_length"),
            tx.ratio(text.str.count_matches("#", literal=True), tokens).alias("score_gopher_hash_ratio"),
            tx.ratio(ellipses, tokens).alias("score_gopher_ellipsis_ratio"),
            tx.ratio(flat.str.count_matches(r"(?m)^[^\S\n]*[•\-]"), line_count).alias("score_gopher_bullet_lines_ratio"),
            tx.ratio(flat.str.count_matches(r"(?m)(?:\.\.\.|…)[^\S\n]*$"), line_count)
            .alias("score_gopher_ellipsis_lines_ratio"),
            tx.ratio(alpha, tokens).alias("score_gopher_alpha_ratio"),
            stop_words.cast(pl.Int64).alias("score_gopher_stop_words"),
        ).drop(_TOKENS, _STOP_LIST, strict=False).collect()

    def _stop_words(self, batch: pl.DataFrame) -> tuple[pl.DataFrame, pl.Expr]:
        """(batch, distinct stop words among each row's tokens): the English list, or with a language column
        each row's language's list (null where the language has none)."""
        toks, english = pl.col(_TOKENS), sorted(set(self.params.stop_words))
        if (lang := self.language(batch)) is None:
            return batch, pl.sum_horizontal(toks.list.contains(w).cast(pl.Int32) for w in english)
        lists = {code: sorted(set(words)) for code, words in lg.published(self.name, "stop_words").items()}
        lists[lg.ENGLISH] = english
        table = pl.DataFrame({"__lang": list(lists), _STOP_LIST: list(lists.values())},
                             schema={"__lang": pl.String, _STOP_LIST: pl.List(pl.String)})
        joined = batch.with_columns(pl.col(lang).cast(pl.String).alias("__lang")).join(
            table, on="__lang", how="left", maintain_order="left").drop("__lang")
        return joined, toks.list.set_intersection(pl.col(_STOP_LIST)).list.len()

    CHECKS = [  # (rule, score, parameter with the threshold, fails when the score is "<" or ">" the threshold)
        ("too_few_words", "words", "min_words", "<"), ("too_many_words", "words", "max_words", ">"),
        ("short_mean_word_length", "mean_word_length", "min_mean_word_length", "<"),
        ("long_mean_word_length", "mean_word_length", "max_mean_word_length", ">"),
        ("too_many_hashes", "hash_ratio", "max_symbol_word_ratio", ">"),
        ("too_many_ellipses", "ellipsis_ratio", "max_symbol_word_ratio", ">"),
        ("too_many_bullet_lines", "bullet_lines_ratio", "max_bullet_lines_ratio", ">"),
        ("too_many_ellipsis_lines", "ellipsis_lines_ratio", "max_ellipsis_lines_ratio", ">"),
        ("too_few_alpha_words", "alpha_ratio", "min_alpha_words_ratio", "<"),
        ("too_few_stop_words", "stop_words", "min_stop_words", "<"),
    ]

    def columns(self) -> dict[str, str]:
        return {f"score_gopher_{score}": f"Gopher: {meaning}" for score, meaning in (
            ("words", "words (tokens that are not all punctuation)"), ("mean_word_length", "mean characters per word"),
            ("hash_ratio", "'#' per token"), ("ellipsis_ratio", "ellipses per token"),
            ("bullet_lines_ratio", "share of lines starting with a bullet"),
            ("ellipsis_lines_ratio", "share of lines ending in an ellipsis"),
            ("alpha_ratio", "share of tokens with a letter"), ("stop_words", "distinct stop words present"))}

    def thresholds(self) -> list[Threshold]:
        return thresholds_of(*((f"score_gopher_{score}", param, getattr(self.params, param), "min" if op == "<" else "max")
                               for _, score, param, op in self.CHECKS))

    def language_rules(self, lang: str | None) -> dict[str, pl.Expr]:
        rules = {}
        for rule, score, param, op in self.CHECKS:
            limit = getattr(self.params, param)
            if limit is None:
                continue
            key = self.LANGUAGE_RULES.get(rule)
            if key is not None and key != "stop_words":
                limit = self.limit(lang, key, limit)
            rules[rule] = threshold_rule(f"score_gopher_{score}", op, limit)
        return rules


@register
class GopherRepetition(lg.CalibratedFilter):
    """Gopher repetition rules: duplicate lines and paragraphs, top 2-4-gram and duplicate 5-10-gram character fractions."""

    name = "gopher_repetition"

    class Params(lg.LanguageParams):
        dup_line_frac: float | None = Field(default=0.3, description="English; other languages: published")
        dup_para_frac: float | None = 0.3
        dup_line_char_frac: float | None = 0.2
        dup_para_char_frac: float | None = 0.2
        top_ngrams: dict[int, float] = Field(default={2: 0.20, 3: 0.18, 4: 0.16},
                                             description="n -> max share of characters in the most frequent n-gram "
                                                         "(English; other languages: published)")
        dup_ngrams: dict[int, float] = Field(default={5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
                                             description="n -> max share of characters inside repeated n-grams "
                                                         "(English; other languages: published)")

    @property
    def LANGUAGE_RULES(self) -> dict[str, str]:  # noqa: N802 (one per n)
        return ({"dup_line_frac": "dup_line_frac"} | {f"top_{n}_gram": f"top_ngrams.{n}" for n in self._top}
                | {f"duplicated_{n}_n_grams": f"dup_ngrams.{n}" for n in self._dup})

    def score(self, batch: pl.DataFrame) -> pl.DataFrame:
        text = tx.rule_text(batch, self.params.field)
        chars = text.str.len_chars()
        paragraphs = text.str.strip_chars().str.extract_all(r"[^\n]+(?:\n[^\n]+)*")
        lines = text.str.replace_all(r"\n+", "\n").str.split("\n")
        para_dups, para_dup_chars = tx.duplicates(paragraphs)
        line_dups, line_dup_chars = tx.duplicates(lines)
        scored = batch.with_columns(
            tx.ratio(para_dups, paragraphs.list.len()).alias("score_gopher_dup_para_frac"),
            tx.ratio(para_dup_chars, chars).alias("score_gopher_dup_para_char_frac"),
            tx.ratio(line_dups, lines.list.len()).alias("score_gopher_dup_line_frac"),
            tx.ratio(line_dup_chars, chars).alias("score_gopher_dup_line_char_frac"),
        )
        ngrams = ngram_repetition(batch.select(text.alias("text")), self._top, self._dup)
        return pl.concat([scored, ngrams], how="horizontal")

    @property
    def _top(self) -> list[int]:
        return sorted(self.params.top_ngrams)

    @property
    def _dup(self) -> list[int]:
        return sorted(self.params.dup_ngrams)

    def columns(self) -> dict[str, str]:
        units = {"para": "paragraphs", "line": "lines"}
        notes = {f"score_gopher_dup_{unit}_frac": f"Gopher: share of {name} repeating an earlier one"
                 for unit, name in units.items()}
        notes |= {f"score_gopher_dup_{unit}_char_frac": f"Gopher: share of characters in repeated {name}"
                  for unit, name in units.items()}
        notes |= {f"score_gopher_top_{n}gram_frac": f"Gopher: share of characters in the most frequent word {n}-gram"
                  for n in self._top}
        return notes | {f"score_gopher_dup_{n}gram_frac": f"Gopher: share of characters inside repeated word {n}-grams"
                        for n in self._dup}

    def thresholds(self) -> list[Threshold]:
        p = self.params
        fractions = ("dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac")
        return (thresholds_of(*((f"score_gopher_{name}", name, getattr(p, name), "max") for name in fractions))
                + [Threshold(f"score_gopher_top_{n}gram_frac", f"top_ngrams.{n}", p.top_ngrams[n], "max") for n in self._top]
                + [Threshold(f"score_gopher_dup_{n}gram_frac", f"dup_ngrams.{n}", p.dup_ngrams[n], "max") for n in self._dup])

    def language_rules(self, lang: str | None) -> dict[str, pl.Expr]:
        p = self.params
        rules = {"empty": text_of(p.field).str.strip_chars() == ""}
        rules |= {rule: pl.col(f"score_gopher_{rule}") > limit for rule, limit in (
            ("dup_para_frac", p.dup_para_frac), ("dup_para_char_frac", p.dup_para_char_frac),
            ("dup_line_frac", None if p.dup_line_frac is None else self.limit(lang, "dup_line_frac", p.dup_line_frac)),
            ("dup_line_char_frac", p.dup_line_char_frac)) if limit is not None}
        rules |= {f"top_{n}_gram": pl.col(f"score_gopher_top_{n}gram_frac")
                  > self.limit(lang, "top_ngrams", p.top_ngrams[n], str(n)) for n in self._top}
        rules |= {f"duplicated_{n}_n_grams": pl.col(f"score_gopher_dup_{n}gram_frac")
                  > self.limit(lang, "dup_ngrams", p.dup_ngrams[n], str(n)) for n in self._dup}
        return rules


def ngram_repetition(texts: pl.DataFrame, top: list[int], dup: list[int]) -> pl.DataFrame:
    """Per row of `texts` (one column `text`): for n in `top`, the characters of the most frequent word
    n-gram times its count (n-gram joined with spaces, ties to the earliest); for n in `dup`, the
    characters (spaces excluded) of words covered by an n-gram that occurred earlier in the text. Both
    as fractions of the text's characters.

    Vectorised in NumPy over the batch's tokens, one array each in text order: an n-gram is a 64-bit
    polynomial hash rolled on from the (n-1)-gram's, so each n costs one pass; counts and first
    occurrences come from Polars' hash-based `len().over` and `is_first_distinct`. Every occurrence of
    a repeated n-gram starts with a repeated (n-1)-gram, so beyond the top-n sizes only the positions
    whose (n-1)-gram repeats are looked at (a few percent of a page). Duplicate coverage is the union
    of the repeated n-grams' spans (the Gopher paper's definition); datatrove walks the words greedily
    and skips n words after each repeat, which can count slightly less.
    """
    table = tokenize.token_table(texts["text"])
    rows = table["row"].to_numpy().astype(np.int64)
    lengths = table["token"].str.len_chars().to_numpy().astype(np.int64)
    word = table["token"].hash(7).to_numpy()
    chars = texts["text"].str.len_chars().fill_null(0).to_numpy().astype(np.float64)
    ends = np.cumsum(lengths)  # characters of the words up to and including each
    space = _space_after(table["token"], texts["text"].str.contains(f"[{tokenize.UNSPACED}]").to_numpy()[rows])
    gaps = np.cumsum(space)  # spaces after the words up to and including each
    out, key, live = {}, word.copy(), np.arange(len(rows))
    for n in range(2, max(top + dup, default=1) + 1):
        m = max(len(key) - n + 1, 0)  # n-grams in the batch's token array (none when it has fewer than n tokens)
        key[:m] = key[:m] * _PRIME + word[n - 1:]
        fits = _fits(rows, n)
        starts = np.flatnonzero(fits) if n in top else live[fits[live]]
        counts, first = _counts(rows[starts], key[starts], first=n in dup)
        if n in top:
            span = (ends[starts + n - 1] - ends[starts] + lengths[starts]
                    + gaps[starts + n - 2] - gaps[starts] + space[starts])
            out[f"score_gopher_top_{n}gram_frac"] = _top_ngram_chars(rows[starts], counts, span, len(chars))
        if n in dup:
            out[f"score_gopher_dup_{n}gram_frac"] = _covered_chars(rows, lengths, starts[~first], n, len(chars))
        live = starts[counts > 1]
    columns = [f"score_gopher_top_{n}gram_frac" for n in top] + [f"score_gopher_dup_{n}gram_frac" for n in dup]
    # A share of the text's characters is at most 1; the top n-gram's count times its length can exceed the
    # text where occurrences overlap ("ha ha ha ha") or a space is counted between two words that the text
    # writes together ("end." -> "end ."), as in datatrove. Every threshold is below 1: no decision changes.
    return pl.DataFrame({name: np.minimum(np.divide(out[name], chars, out=np.zeros_like(chars), where=chars > 0), 1.0)
                         for name in columns}, schema={name: pl.Float64 for name in columns})


def _space_after(tokens: pl.Series, candidates: np.ndarray) -> np.ndarray:
    """1 where an n-gram counts a space after the token (Gopher joins an n-gram's words with spaces), 0 where
    it or the next token is a character of a script written without spaces (中国 is 2 characters, not 3).
    Only the `candidates` (tokens of texts that have such characters) are looked at."""
    space = np.ones(len(tokens), dtype=np.int64)
    unspaced = np.zeros(len(tokens), dtype=bool)
    unspaced[candidates] = tokens.filter(candidates).str.contains(f"^{tokenize.UNSPACED_WORD}$").to_numpy()
    space[unspaced] = 0
    space[:-1][unspaced[1:]] = 0
    return space


_PRIME = np.uint64(0x100000001B3)  # the FNV-1 64-bit prime: any odd multiplier works
_ROW_MIX = np.uint64(0x9E3779B97F4A7C15)


def _fits(rows: np.ndarray, n: int) -> np.ndarray:
    """True at each token where n tokens of the same text start."""
    fits = np.zeros(len(rows), dtype=bool)
    if len(rows) >= n:
        fits[: len(rows) - n + 1] = rows[: len(rows) - n + 1] == rows[n - 1:]
    return fits


def _counts(rows: np.ndarray, keys: np.ndarray, first: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """For each (row, key): how often it occurs, and (if `first`) whether this is its first occurrence."""
    mixed = pl.DataFrame({"key": keys ^ (rows.astype(np.uint64) * _ROW_MIX)})  # the same n-gram in another text is another
    counts = mixed.select(pl.len().over("key")).to_series().to_numpy()
    return counts, mixed.select(pl.col("key").is_first_distinct()).to_series().to_numpy() if first else None


def _top_ngram_chars(rows: np.ndarray, counts: np.ndarray, span: np.ndarray, n_texts: int) -> np.ndarray:
    """Per text: count x characters of its most frequent n-gram (the earliest of equally frequent ones)."""
    out = np.zeros(n_texts)
    if len(rows) == 0:
        return out
    first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])  # each text's first n-gram
    most = np.maximum.reduceat(counts, first)
    is_most = counts == np.repeat(most, np.diff(np.r_[first, len(rows)]))
    earliest = np.minimum.reduceat(np.where(is_most, np.arange(len(rows)), len(rows)), first)
    out[rows[first]] = most * span[earliest]
    return out


def _covered_chars(rows: np.ndarray, lengths: np.ndarray, repeats: np.ndarray, n: int, n_texts: int) -> np.ndarray:
    """Per text: characters of the words inside an n-gram starting at one of the positions `repeats`."""
    started = np.zeros(len(rows) + 1, dtype=np.int64)
    started[repeats + 1] = 1
    seen = np.cumsum(started)  # seen[i]: repeats starting before position i
    position = np.arange(len(rows))
    covered = seen[position + 1] - seen[np.maximum(position + 1 - n, 0)] > 0  # one started in the last n words
    return np.bincount(rows, weights=np.where(covered, lengths, 0), minlength=n_texts).astype(np.float64)
