"""Question-answer pairs grounded in documents (e.g. the rows of a web release): several question types per
document, each answered from the document alone, each row pointing back at its source document.

One JSON request per (document, question type, sample). Rows: `instruction` (the question), `input` (the
document passage when `include_context`, else empty), `output` (the answer), `question_type`,
`source_doc_id`, with provenance (`gen_seed_id` = `parent_id` = the document's id). Documents longer than
`max_doc_chars` are cut there at a paragraph or sentence end (the row says `doc_truncated`).
"""

from __future__ import annotations

import re

import polars as pl
from pydantic import Field, field_validator

from operators.base import DETAIL, REASON, Params, Split
from operators.generate.base import LLMGenerator, failed
from operators.generate.client import ChatRequest, LLMClient
from operators.generate.text import word_count
from operators.registry import register

PROMPT = ("Here is a document:\n\n<document>\n{document}\n</document>\n\nWrite one {kind} question about it and "
          "its answer. {guidance} The question must make sense to a reader who has not seen the document, and the "
          "answer must follow from the document alone. Answer in JSON: {{\"question\": \"...\", \"answer\": \"...\"}}")
QUESTION_TYPES = {
    "factual": "Ask about a specific fact, name, number or definition stated in the document.",
    "reasoning": "Ask something that needs two or more statements of the document combined, or a why/how question.",
    "summary": "Ask for the main point or a short summary of the document (or of one of its parts).",
    "open_ended": "Ask for an explanation or an opinion-free discussion of a topic the document covers.",
}
SCHEMA = {"type": "object", "required": ["question", "answer"],
          "properties": {"question": {"type": "string"}, "answer": {"type": "string"}}}


def cut(text: str, limit: int) -> tuple[str, bool]:
    """`text` up to `limit` characters, ending at the last paragraph or sentence end inside it when there is one."""
    if len(text) <= limit:
        return text, False
    head = text[:limit]
    ends = [m.end() for m in re.finditer(r"\n\s*\n|[.!?。！？]\s", head)]
    return (head[: ends[-1]] if ends and ends[-1] > limit // 2 else head).rstrip(), True


@register
class DocumentQA(LLMGenerator):
    """QA pairs grounded in documents: several question types per document, with the source document's id."""

    name = "document_qa"
    templates = (PROMPT, *QUESTION_TYPES.values())

    class Params(Params):
        text_field: str = "text"
        question_types: list[str] = Field(default=["factual", "reasoning", "summary"], min_length=1,
                                          description=f"of {sorted(QUESTION_TYPES)}")
        per_type: int = Field(default=1, ge=1, description="questions per type and document")
        include_context: bool = Field(default=False, description="put the passage in `input` (reading comprehension)")
        max_doc_chars: int = Field(default=6000, ge=200)
        min_doc_words: int = Field(default=30, ge=0, description="shorter documents give no questions (rejected)")
        temperature: float = Field(default=0.7, ge=0, le=2)
        max_tokens: int = Field(default=400, ge=16)
        seed: int = 0

        @field_validator("question_types")
        @classmethod
        def _known(cls, kinds: list[str]) -> list[str]:
            unknown = [k for k in kinds if k not in QUESTION_TYPES]
            if unknown:
                raise ValueError(f"unknown question type {unknown[0]!r}; known: {sorted(QUESTION_TYPES)}")
            return kinds

    def run(self, seeds: pl.DataFrame, client: LLMClient) -> Split:
        p = self.params
        jobs, kept, rejected = [], [], []
        for row in seeds.select("id", p.text_field).to_dicts():
            text = (row[p.text_field] or "").strip()
            base = {"source_doc_id": row["id"]} | self.provenance(client, row["id"], parent_id=row["id"])
            if (words := word_count(text)) < p.min_doc_words:
                rejected.append(base | {"question_type": None, REASON: "short_document", DETAIL: f"{words} words"})
                continue
            passage, truncated = cut(text, p.max_doc_chars)
            jobs += [(base, passage, truncated, kind, k) for kind in p.question_types for k in range(p.per_type)]
        requests = [ChatRequest.user(PROMPT.format(document=passage, kind=kind.replace("_", "-"), guidance=QUESTION_TYPES[kind]),
                                     temperature=p.temperature, max_tokens=p.max_tokens, seed=p.seed + k,
                                     json_schema=SCHEMA, tag=base["source_doc_id"])
                    for base, passage, _, kind, k in jobs]
        seen: set[tuple[str, str]] = set()
        for (base, passage, truncated, kind, k), answer in zip(jobs, client.complete(requests, step=self.name)):
            data = answer.data if answer.ok and isinstance(answer.data, dict) else {}
            question, reply = str(data.get("question") or "").strip(), str(data.get("answer") or "").strip()
            row = base | {"instruction": question or None, "input": passage if p.include_context else "",
                          "output": reply or None, "question_type": kind, "sample": k, "doc_truncated": truncated}
            reason = failed(answer)
            if reason is None and not (question and reply):
                reason = {REASON: "no_question", DETAIL: answer.text[:160]}
            elif reason is None and (base["source_doc_id"], question.lower()) in seen:
                reason = {REASON: "duplicate_question", DETAIL: question[:120]}
            seen.add((base["source_doc_id"], question.lower()))
            (rejected if reason else kept).append(row | (reason or {}))
        return Split(self.rows(kept), self.rejected(rejected))
