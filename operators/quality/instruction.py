"""Rules for instruction data (instruction, input, output): empty, echoed, refused, truncated or
out-of-bounds outputs, and outputs in another language than their instruction."""

from __future__ import annotations

import polars as pl
from pydantic import Field

from operators.base import Filter, Params, Threshold
from operators.quality import text as tx
from operators.quality.langid import UNDETERMINED, identify, language_counts
from operators.registry import register

# A model declining, or talking about itself instead of answering (the family of phrases AlpaGasus,
# WizardLM and OpenHermes clean-ups remove). Case-insensitive regular expressions; ^ is the output's start;
# \b is taken as an ASCII word boundary (a Unicode one is 10x slower in Rust's regex).
REFUSALS = [
    r"\bas an ai\b", r"\bas a(?:n ai)? language model\b", r"\bi(?: am|'m) an ai (?:language model|assistant)\b",
    r"^(?:i(?: am|'m) )?(?:sorry|afraid|apologi[sz]e)\b.{0,60}\b(?:can(?:no|')t|unable|not able)\b",
    r"^i(?: cannot| can't|'m unable to| am unable to|'m not able to| am not able to) (?:provide|fulfill|comply|help|"
    r"assist|answer|complete|perform|create|generate|draw|play|access|browse|see|view|hear|watch|process|do th)",
    r"^unfortunately,? (?:i|as an)\b", r"\bmy (?:knowledge|training data) cut-?off\b",
    r"\bi (?:don't|do not) have (?:access to real-time|personal (?:opinions|feelings|experiences|beliefs))",
]
# An answer cut off by a token limit is long and stops mid-sentence: its last line is prose (not a list
# item) of many words ending on a plain word or a comma. Headlines and lists end without a full stop too,
# hence the length conditions. An unclosed code fence is cut off as well.
_CUT_OFF = r"(?:^|\s)[^\s#@]*[\p{L},;:(\-]$"
_LIST_ITEM = r"^\s*(?:[-*•]|\d+[.)])\s"


@register
class InstructionFilter(Filter):
    """Instruction-data rules: empty, too short/long, refusal, echoed instruction, input == output, truncated, language mismatch."""

    name = "instruction_filter"

    class Params(Params):
        instruction_field: str = "instruction"
        input_field: str | None = Field(default="input", description="optional context column; null if none")
        output_field: str = "output"
        min_words: dict[str, int] = Field(default={"instruction": 2, "output": 1},
                                          description="field -> fewest words")
        max_words: dict[str, int] = Field(default={"instruction": 2000, "output": 8000},
                                          description="field -> most words")
        refusals: list[str] = Field(default=REFUSALS, description="regular expressions (case-insensitive) of refusals")
        truncation_min_words: int = Field(default=50, description="a cut-off output has at least this many words")
        language_mismatch: bool = Field(default=True, description="reject outputs in another language (fastText)")
        min_language_score: float = Field(default=0.9, ge=0, le=1,
                                          description="both sides must be this sure for a mismatch to count")

    def score(self, batch: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        instruction, output = _text(p.instruction_field), _text(p.output_field)
        given = _text(p.input_field) if p.input_field and p.input_field in batch.columns else pl.lit("")
        last_line = output.str.strip_chars().str.extract(r"([^\n]*)$")
        pattern = "(?i)" + "|".join(f"(?:{x})" for x in p.refusals).replace(r"\b", r"(?-u:\b)")
        refusal = output.str.strip_chars().str.contains(pattern)
        fields = {f: _text(f) for f in {*p.min_words, *p.max_words}}
        scored = batch.with_columns(
            *[tx.plain_word_count(text).alias(f"score_words_{f}") for f, text in fields.items()],
            refusal.alias("score_instr_refusal"),
            ((_same(output) == _same(instruction)) & (output.str.strip_chars() != "")).alias("score_instr_echo"),
            ((_same(output) == _same(given)) & (given.str.strip_chars() != "")).alias("score_instr_input_echo"),
            ((output.str.count_matches("```", literal=True) % 2 == 1)
             | ((tx.plain_word_count(output) >= p.truncation_min_words)
                & (tx.plain_word_count(last_line) >= 12) & ~last_line.str.contains(_LIST_ITEM)
                & last_line.str.contains(_CUT_OFF))).alias("score_instr_truncated"),
        )
        if p.language_mismatch:
            match, lang, score = _language_match(batch, p)
            lang_col, score_col = self._lang_columns
            scored = scored.with_columns(match.alias("score_instr_lang_match"), lang.alias(lang_col),
                                         score.alias(score_col))
        return scored

    def thresholds(self) -> list[Threshold]:
        p = self.params
        return ([Threshold(f"score_words_{f}", f"min_words.{f}", n, "min") for f, n in p.min_words.items()]
                + [Threshold(f"score_words_{f}", f"max_words.{f}", n, "max") for f, n in p.max_words.items()])

    @property
    def _lang_columns(self) -> tuple[str, str]:
        """Where the output's language goes: the names langid(field=<output field>) would use."""
        return f"lang_{self.params.output_field}", f"lang_score_{self.params.output_field}"

    def columns(self) -> dict[str, str]:
        p = self.params
        notes = {f"score_words_{f}": f"words in `{f}`" for f in {*p.min_words, *p.max_words}}
        notes |= {"score_instr_refusal": "the output matches a refusal pattern",
                  "score_instr_echo": "the output repeats the instruction",
                  "score_instr_input_echo": "the output repeats the input",
                  "score_instr_truncated": "the output looks cut off (unclosed code block, or a long last line "
                                           "ending mid-sentence)"}
        if p.language_mismatch:
            lang_col, score_col = self._lang_columns
            notes |= {"score_instr_lang_match": "true unless instruction and output are confidently in different "
                                                "languages (and no translation was asked for)",
                      lang_col: f"language of `{p.output_field}` (ISO 639 code, fastText lid.176)",
                      score_col: "probability of that language (0-1)"}
        return notes

    def stats(self, kept: pl.LazyFrame, rejected: pl.LazyFrame) -> dict:
        """Kept rows per language of the output (the dataset card's `language:`), counting only outputs the
        language check was sure of (`und`: the rest, e.g. a number or a one-word answer)."""
        p = self.params
        lang_col, score_col = self._lang_columns
        if not p.language_mismatch or lang_col not in kept.collect_schema():
            return {}
        sure = (pl.col(score_col) >= p.min_language_score) & (_text(p.output_field).str.count_matches(r"\p{L}") >= 20)
        langs = kept.select(pl.when(sure).then(pl.col(lang_col)).otherwise(pl.lit(UNDETERMINED))).collect()
        return {"languages": language_counts(langs.to_series())}

    def rules(self) -> dict[str, pl.Expr]:
        p = self.params
        rules = {"empty_output": pl.col(f"score_words_{p.output_field}") == 0} if p.output_field in p.min_words else {}
        for f, low in p.min_words.items():
            rules[f"too_short_{f}"] = pl.col(f"score_words_{f}") < low
        for f, high in p.max_words.items():
            rules[f"too_long_{f}"] = pl.col(f"score_words_{f}") > high
        rules |= {"refusal": pl.col("score_instr_refusal"), "echoed_instruction": pl.col("score_instr_echo"),
                  "input_equals_output": pl.col("score_instr_input_echo"), "truncated": pl.col("score_instr_truncated")}
        if p.language_mismatch:
            rules["language_mismatch"] = ~pl.col("score_instr_lang_match")
        return rules


def _text(field: str) -> pl.Expr:
    return pl.col(field).cast(pl.String).fill_null("")


def _same(text: pl.Expr) -> pl.Expr:
    """The form two fields are compared in: NFC, line ends and outer whitespace normalised; case,
    punctuation and inner spacing kept (an answer that only fixes those is an answer)."""
    return text.str.normalize("NFC").str.replace_all(r"\r\n?", "\n").str.strip_chars()


def _language_match(batch: pl.DataFrame, p: InstructionFilter.Params) -> tuple[pl.Series, pl.Series, pl.Series]:
    """(match, output language, its probability). Match is false where instruction and output are both
    confidently identified and differ; true otherwise.
    Short or formula-like text is no evidence (fewer than 20 letters), and neither is an
    instruction that asks for a translation, mentions language, or names the output's language."""
    instruction, output = _text(p.instruction_field), _text(p.output_field)
    texts = batch.select(instruction, output)
    lang_in, score_in = identify(texts.to_series(0))
    lang_out, score_out = identify(texts.to_series(1))
    wordy = batch.select((instruction.str.count_matches(r"\p{L}") >= 20) & (output.str.count_matches(r"\p{L}") >= 20))
    named = pl.Series([_asks_for(i, lang) for i, lang in zip(texts.to_series(0).to_list(), lang_out.to_list())])
    sure = (score_in >= p.min_language_score) & (score_out >= p.min_language_score) & wordy.to_series()
    return ~(sure & (lang_in != lang_out) & ~named), lang_out, score_out


def _asks_for(instruction: str, lang: str) -> bool:
    low = instruction.lower()
    return "translat" in low or "language" in low or LANGUAGE_NAMES.get(lang, lang) in low


LANGUAGE_NAMES = {
    "ar": "arabic", "ca": "catalan", "cs": "czech", "da": "danish", "de": "german", "el": "greek", "en": "english",
    "eo": "esperanto", "es": "spanish", "fa": "persian", "fi": "finnish", "fr": "french", "he": "hebrew",
    "hi": "hindi", "hu": "hungarian", "id": "indonesian", "it": "italian", "ja": "japanese", "ko": "korean",
    "la": "latin", "nl": "dutch", "no": "norwegian", "pl": "polish", "pt": "portuguese", "ro": "romanian",
    "ru": "russian", "sv": "swedish", "sw": "swahili", "th": "thai", "tr": "turkish", "uk": "ukrainian",
    "vi": "vietnamese", "zh": "chinese",
}
