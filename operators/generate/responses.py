"""Answer instructions: one or n sampled responses per instruction."""

from __future__ import annotations

import polars as pl
from pydantic import Field

from operators.base import DETAIL, REASON, Params, Split
from operators.generate.base import PROVENANCE, LLMGenerator, failed
from operators.generate.client import ChatRequest, LLMClient
from operators.registry import register

PROMPT = "{instruction}\n\n{input}"  # the input, when there is one, follows the instruction after a blank line


def instruction_prompt(row: dict, instruction_field: str, input_field: str) -> str:
    instruction = (row.get(instruction_field) or "").strip()
    input_ = (row.get(input_field) or "").strip() if input_field else ""
    return PROMPT.format(instruction=instruction, input=input_).strip()


def sample_requests(prompts: list[tuple[str, str]], samples: int, p: Params, system: str | None = None) -> list[ChatRequest]:
    """`samples` requests per (seed id, prompt), differing by seed so each is its own cached answer."""
    return [ChatRequest.user(prompt, system, temperature=p.temperature, max_tokens=p.max_tokens, seed=p.seed + k, tag=sid)
            for sid, prompt in prompts for k in range(samples)]


@register
class Responses(LLMGenerator):
    """Answer each row's instruction (plus its input) with n sampled responses -> `output`."""

    name = "responses"
    templates = (PROMPT,)
    per_seed_row = keeps_seed_columns = True

    class Params(Params):
        instruction_field: str = "instruction"
        input_field: str = Field(default="input", description="appended after a blank line when present; '' for none")
        output_field: str = "output"
        samples: int = Field(default=1, ge=1, description="responses per instruction (one row each)")
        system: str | None = Field(default=None, description="optional system prompt")
        temperature: float = Field(default=0.7, ge=0, le=2)
        max_tokens: int = Field(default=512, ge=1)
        seed: int = 0

    def reads(self) -> dict[str, list[str]]:
        return {"instruction_field": [self.params.instruction_field]}

    def writes(self) -> set[str]:
        return {self.params.output_field, "sample", *PROVENANCE}

    def run(self, seeds: pl.DataFrame, client: LLMClient) -> Split:
        p = self.params
        records = seeds.to_dicts()
        prompts = [(r["id"], instruction_prompt(r, p.instruction_field, p.input_field)) for r in records]
        answers = client.complete(sample_requests(prompts, p.samples, p, p.system), step=self.name)
        kept, rejected = [], []
        for i, answer in enumerate(answers):
            seed = records[i // p.samples]
            row = seed | {p.output_field: answer.text.strip() if answer.ok else None, "sample": i % p.samples}
            row |= self.provenance(client, seed["id"], parent_id=seed["id"])
            if (reason := failed(answer)) is not None:
                rejected.append(row | reason)
            elif not row[p.output_field]:
                rejected.append(row | {REASON: "empty_output", DETAIL: None})
            else:
                kept.append(row)
        return Split(self.rows(kept), self.rejected(rejected))
