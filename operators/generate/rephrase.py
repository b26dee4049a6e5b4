"""Rephrasing pre-training text into styles (in the manner of WRAP, Maini et al., 2024, and Nemotron-CC's
rewrites of web text): the same knowledge, written as an encyclopedia passage, as questions and answers, or
in plain language, as extra synthetic pre-training data.

Long documents are cut into chunks of at most `chunk_tokens` tokens (real tokens, operators/tokens.py) at
paragraph, then sentence, then word boundaries; each chunk is rephrased on its own and the results are
re-joined in order with blank lines. A document any of whose chunks fails is rejected (`failed_<kind>`, the
detail names the chunk), never published with a hole. Rows: `text`, `style`, `chunks`, `source_doc_id`,
with provenance (`gen_seed_id` = `parent_id` = the document's id). The prompts ask for the text's own language.
"""

from __future__ import annotations

import re
from typing import Literal

import polars as pl
from pydantic import Field

from operators.base import DETAIL, REASON, Params, Split
from operators.generate.base import LLMGenerator, failed
from operators.generate.client import ChatRequest, LLMClient
from operators.generate.text import word_count
from operators.registry import register
from operators.tokens import DEFAULT_TOKENIZER, count_tokens

KEEP = ("Keep every piece of information and every number; add nothing that is not in the text. Write in the same "
        "language as the text. Reply with the rewritten text only, without a preamble.")
STYLES = {
    "wikipedia": "Rewrite the following text as a passage of an encyclopedia article in the style of Wikipedia: "
                 "neutral, factual, well organised and formal. " + KEEP,
    "qa": "Rewrite the following text as a series of questions and answers that together cover all of its "
          "content, each as \"Question: ...\" on one line and \"Answer: ...\" on the next. " + KEEP,
    "plain": "Paraphrase the following text in clear, plain language that a high-school student can follow, in "
             "complete sentences. " + KEEP,
}
PROMPT = "{instruction}\n\nText:\n{text}"
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")


def split_units(text: str) -> list[tuple[str, str]]:
    """The text as (separator before it, piece): paragraphs, each further split into sentences."""
    units = []
    for i, paragraph in enumerate(p for p in re.split(r"\n\s*\n", text) if p.strip()):
        for j, sentence in enumerate(s for s in _SENTENCE_END.split(paragraph.strip()) if s):
            units.append(("\n\n" if i and not j else (" " if j else ""), sentence))
    return units


def chunk(text: str, limit: int, tokenizer: str = DEFAULT_TOKENIZER) -> list[str]:
    """Chunks of at most ~`limit` tokens, packed from whole sentences; a sentence longer than that is halved
    between words (between characters in Chinese or Japanese) until its pieces fit."""
    units = split_units(text)
    sizes = count_tokens(pl.Series([u for _, u in units]), tokenizer).to_list()
    pieces: list[tuple[str, str, int]] = []
    for (sep, unit), size in zip(units, sizes):
        pieces += _fit(sep, unit, size, limit, tokenizer)
    chunks, current, used = [], "", 0
    for sep, piece, size in pieces:
        if current and used + size > limit:
            chunks.append(current)
            current, used, sep = "", 0, ""
        current += sep + piece
        used += size
    return chunks + ([current] if current else [])


def _fit(sep: str, unit: str, size: int, limit: int, tokenizer: str) -> list[tuple[str, str, int]]:
    if size <= limit or len(unit) < 2:
        return [(sep, unit, size)]
    glue = " " if " " in unit.strip() else ""
    parts = unit.split(" ") if glue else list(unit)
    half = max(1, len(parts) // 2)
    left, right = glue.join(parts[:half]), glue.join(parts[half:])
    left_size, right_size = count_tokens(pl.Series([left, right]), tokenizer).to_list()
    return _fit(sep, left, left_size, limit, tokenizer) + _fit(glue, right, right_size, limit, tokenizer)


@register
class Rephrase(LLMGenerator):
    """Rephrase pre-training text into styles (wikipedia, qa, plain); long documents chunked and re-joined."""

    name = "rephrase"
    templates = (PROMPT, *STYLES.values())

    class Params(Params):
        text_field: str = "text"
        styles: list[Literal["wikipedia", "qa", "plain"]] = Field(default=["wikipedia"], min_length=1,
                                                                  description="one output row per style and document")
        chunk_tokens: int = Field(default=350, ge=32, description="longest chunk sent in one request")
        tokenizer: str = Field(default=DEFAULT_TOKENIZER, description="counts chunk tokens")
        min_words: int = Field(default=20, ge=0, description="shorter documents are rejected, not rephrased")
        temperature: float = Field(default=0.5, ge=0, le=2)
        max_tokens: int = Field(default=700, ge=16, description="per chunk; a cut-off chunk fails the document")
        seed: int = 0

    def run(self, seeds: pl.DataFrame, client: LLMClient) -> Split:
        p = self.params
        docs, rejected = [], []
        for row in seeds.select("id", p.text_field).to_dicts():
            text = (row[p.text_field] or "").strip()
            if (words := word_count(text)) < p.min_words:
                rejected += [self._row(client, row["id"], style, None, 0) | {REASON: "short_document",
                                                                              DETAIL: f"{words} words"}
                             for style in p.styles]
            else:
                docs.append((row["id"], chunk(text, p.chunk_tokens, p.tokenizer)))
        jobs = [(sid, style, parts) for sid, parts in docs for style in p.styles]
        requests = [ChatRequest.user(PROMPT.format(instruction=STYLES[style], text=part), temperature=p.temperature,
                                     max_tokens=p.max_tokens, seed=p.seed, tag=f"{sid}#{k}")
                    for sid, style, parts in jobs for k, part in enumerate(parts)]
        answers = iter(client.complete(requests, step=self.name))
        kept = []
        for sid, style, parts in jobs:
            replies = [next(answers) for _ in parts]
            bad = next(((k, failed(a)) for k, a in enumerate(replies) if failed(a) or not a.text.strip()), None)
            text = "\n\n".join(a.text.strip() for a in replies) if bad is None else None
            row = self._row(client, sid, style, text, len(parts))
            if bad is None:
                kept.append(row)
            else:
                k, reason = bad
                reason = reason or {REASON: "empty_chunk", DETAIL: ""}
                rejected.append(row | reason | {DETAIL: f"chunk {k + 1} of {len(parts)}: {reason[DETAIL]}"})
        return Split(self.rows(kept), self.rejected(rejected))

    def _row(self, client: LLMClient, sid: str, style: str, text: str | None, chunks: int) -> dict:
        return {"text": text, "style": style, "chunks": chunks, "source_doc_id": sid} | self.provenance(client, sid, parent_id=sid)
