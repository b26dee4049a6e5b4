"""Persona-driven instructions (in the manner of Persona Hub, Ge et al., 2024): the same request written from
many points of view gives varied instructions at scale.

Personas come from a seed column (`persona_field`), or are inferred from documents (`text_field`,
text-to-persona: who would read or write this text?). Each persona then writes `per_persona` instructions
of the kind `task` names ("request to an AI assistant", "math word problem", ...).
Rows: `persona`, `instruction`, `input` (empty), with provenance (`gen_seed_id` = the seed row).
"""

from __future__ import annotations

import polars as pl
from pydantic import Field, model_validator

from operators.base import DETAIL, REASON, Params, Split
from operators.generate.base import LLMGenerator, failed
from operators.generate.client import ChatRequest, LLMClient
from operators.generate.text import word_count
from operators.registry import register

TEXT_TO_PERSONA = ("Who is likely to read, write, like or need the following text? Describe that person in one "
                   "sentence, starting with \"A\" or \"An\" (their role, expertise and interests), and nothing else."
                   "\n\nText:\n{text}")
PERSONA_TO_TASK = ("You are {persona}\n\nWrite one {task} that you, this person, would realistically give an AI "
                   "assistant, in your own voice and about your own needs. Reply with the {task} only: no preamble, "
                   "no answer, no quotation marks.")


@register
class PersonaInstruct(LLMGenerator):
    """Instructions written by personas (from a seed column, or inferred from documents: text-to-persona)."""

    name = "persona_instruct"
    templates = (TEXT_TO_PERSONA, PERSONA_TO_TASK)

    class Params(Params):
        persona_field: str | None = Field(default=None, description="seed column holding a persona description")
        text_field: str | None = Field(default=None, description="seed column of documents to infer personas from")
        max_text_chars: int = Field(default=2000, ge=100, description="documents are cut to this length")
        task: str = Field(default="request to an AI assistant", description="what each persona writes")
        per_persona: int = Field(default=1, ge=1, description="instructions per persona")
        temperature: float = Field(default=0.9, ge=0, le=2)
        max_tokens: int = Field(default=256, ge=1)
        persona_max_tokens: int = Field(default=96, ge=1)
        min_words: int = Field(default=4, ge=1, description="shorter instructions are rejected")
        seed: int = 0

        @model_validator(mode="after")
        def _one_source(self):
            if bool(self.persona_field) == bool(self.text_field):
                raise ValueError("give either persona_field (personas in the seeds) or text_field (documents), not both")
            return self

    def run(self, seeds: pl.DataFrame, client: LLMClient) -> Split:
        p = self.params
        rows = seeds.to_dicts()
        rejected: list[dict] = []
        if p.persona_field:
            personas = [(r["id"], (r.get(p.persona_field) or "").strip()) for r in rows]
        else:
            personas = self._infer(rows, client, rejected)
        requests = [ChatRequest.user(PERSONA_TO_TASK.format(persona=persona, task=p.task), temperature=p.temperature,
                                     max_tokens=p.max_tokens, seed=p.seed + k, tag=sid)
                    for sid, persona in personas for k in range(p.per_persona)]
        kept = []
        answers = client.complete(requests, step=self.name)
        for i, answer in enumerate(answers):
            sid, persona = personas[i // p.per_persona]
            text = answer.text.strip().strip('"') if answer.ok else None
            row = {"persona": persona, "instruction": text, "input": "", "sample": i % p.per_persona}
            row |= self.provenance(client, sid)
            reason = failed(answer)
            if reason is None and (words := word_count(text)) < p.min_words:
                reason = {REASON: "too_short", DETAIL: f"{words} words"}
            (rejected if reason else kept).append(row | (reason or {}))
        return Split(self.rows(kept), self.rejected(rejected))

    def _infer(self, rows: list[dict], client: LLMClient, rejected: list[dict]) -> list[tuple[str, str]]:
        """(seed id, persona) per document; a document whose persona request fails is rejected here."""
        p = self.params
        requests = [ChatRequest.user(TEXT_TO_PERSONA.format(text=(r.get(p.text_field) or "")[: p.max_text_chars]),
                                     temperature=0, max_tokens=p.persona_max_tokens, seed=p.seed, tag=r["id"])
                    for r in rows]
        personas = []
        for row, answer in zip(rows, client.complete(requests, step=self.name)):
            persona = answer.text.strip() if answer.ok else ""
            if (reason := failed(answer)) is not None or not persona:
                rejected.append({"persona": persona or None, "instruction": None, "input": "", "sample": None}
                                | self.provenance(client, row["id"]) | (reason or {REASON: "no_persona", DETAIL: None}))
            else:
                personas.append((row["id"], persona))
        return personas
