"""Pretraining text in the Cosmopedia / Phi style from a declarative seed grid: coverage is planned.

The grid is topics x audiences x styles (or seed passages x audiences x styles when the seed rows carry a
passage field); every cell gets `per_cell` documents, so each combination is represented by construction.
Output rows carry `text` and the cell (`topic` or the seed passage's id, `audience`, `style`, `sample`).
"""

from __future__ import annotations

import itertools

import polars as pl
from pydantic import Field, model_validator

from operators.base import DETAIL, REASON, Params, Split
from operators.generate.base import LLMGenerator, failed
from operators.generate.client import ChatRequest, LLMClient
from operators.registry import register

TOPIC_PROMPT = ("Write a {style} about \"{topic}\" for {audience}. {guidance}Go deep into the subject and stay "
                "accurate. Start directly with the content: no title page, no mention of these instructions.")
PASSAGE_PROMPT = ("Here is an extract from a web page:\n\"{passage}\"\n\nWrite a {style} for {audience} related to "
                  "the extract above, expanding on the concepts it touches. {guidance}Do not refer to the extract; "
                  "start directly with the content.")
GUIDANCE = {
    "textbook section": "Define each concept, build from simple to advanced, and include a worked example. ",
    "blog post": "Use an engaging, conversational tone with concrete examples. ",
    "story": "Tell a story whose characters meet and explain the ideas naturally. ",
    "wikihow article": "Give numbered steps, each with a clear explanation and tips. ",
    "lecture notes": "Organise the notes under headings with key points and a short summary. ",
    "faq": "Write questions a curious reader would ask, each followed by a thorough answer. ",
}


@register
class PretrainGrid(LLMGenerator):
    """Synthetic pretraining text over a planned grid: topics (or seed passages) x audiences x styles, per_cell each."""

    name = "pretrain_grid"
    templates = (TOPIC_PROMPT, PASSAGE_PROMPT, *GUIDANCE.values())

    class Params(Params):
        topics: list[str] = Field(default_factory=list, description="grid axis 1 (or use seed passages)")
        passage_field: str | None = Field(default=None, description="seed column holding passages; replaces topics")
        max_passage_chars: int = Field(default=1500, ge=100, description="passages are cut to this length")
        audiences: list[str] = Field(default_factory=lambda: ["high school students"], min_length=1)
        styles: list[str] = Field(default_factory=lambda: ["textbook section"], min_length=1)
        per_cell: int = Field(default=1, ge=1, description="documents per grid cell (the quota)")
        min_words: int = Field(default=50, ge=0, description="shorter documents are rejected")
        temperature: float = Field(default=0.8, ge=0, le=2)
        max_tokens: int = Field(default=1024, ge=1)
        seed: int = 0

        @model_validator(mode="after")
        def _one_axis(self):
            if bool(self.topics) == bool(self.passage_field):
                raise ValueError("give either topics or passage_field (seed passages), not both or neither")
            return self

    def cells(self, seeds: pl.DataFrame) -> list[dict]:
        p = self.params
        if p.passage_field:
            firsts = [{"gen_seed_id": r["id"], "passage": (r[p.passage_field] or "")[: p.max_passage_chars]}
                      for r in seeds.select("id", p.passage_field).to_dicts()]
        else:
            firsts = [{"gen_seed_id": None, "topic": t} for t in p.topics]
        return [first | {"audience": a, "style": s, "sample": k}
                for first, a, s, k in itertools.product(firsts, p.audiences, p.styles, range(p.per_cell))]

    def run(self, seeds: pl.DataFrame, client: LLMClient) -> Split:
        p = self.params
        cells = self.cells(seeds)
        requests = [ChatRequest.user(_prompt(c), temperature=p.temperature, max_tokens=p.max_tokens,
                                     seed=p.seed + c["sample"], tag=c.get("topic") or c["gen_seed_id"]) for c in cells]
        kept, rejected = [], []
        for cell, answer in zip(cells, client.complete(requests, step=self.name)):
            text = answer.text.strip() if answer.ok else None
            row = {"text": text, **{k: v for k, v in cell.items() if k != "passage"}}
            row |= self.provenance(client, cell["gen_seed_id"])
            reason = failed(answer)
            if reason is None and len(text.split()) < p.min_words:
                reason = {REASON: "too_short", DETAIL: f"{len(text.split())} words"}
            (rejected if reason else kept).append(row | (reason or {}))
        return Split(self.rows(kept), self.rejected(rejected))


def _prompt(cell: dict) -> str:
    guidance = GUIDANCE.get(cell["style"].lower(), "")
    if "passage" in cell:
        return PASSAGE_PROMPT.format(passage=cell["passage"], style=cell["style"], audience=cell["audience"], guidance=guidance)
    return TOPIC_PROMPT.format(topic=cell["topic"], style=cell["style"], audience=cell["audience"], guidance=guidance)
