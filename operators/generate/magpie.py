"""Magpie (Xu et al., 2024): an aligned model, given only its chat template up to the user's turn, writes a
user instruction itself; the same model then answers it.

The instruction comes from a raw text completion (/v1/completions) of the template's prefix (system block, if
any, then the user header), stopped at the end-of-turn marker; the answer from an ordinary chat request. An
endpoint without /v1/completions (most hosted chat APIs) cannot do this: the step stops with an error saying
so. The embedded llama.cpp server offers it.

Rows: `instruction`, `input` (empty), `output` (unless `responses: false`), with provenance. Without seeds,
`num_rows` instructions; with seeds and a `system_field`, `num_rows` per seed row, each under its row's
system prompt (the way Magpie steers topics). Each instruction request has its own seed, so each is its own
cached answer.
"""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import Field

from operators.base import DETAIL, REASON, Params, Split
from operators.errors import SluiceError
from operators.generate.base import LLMGenerator, failed
from operators.generate.client import ChatRequest, LLMClient
from operators.generate.failures import FailureKind
from operators.generate.text import word_count
from operators.registry import register

# template -> (system block with {system}, the user turn's header, end-of-turn stops). A model's own chat
# template decides which applies: SmolLM2 and Qwen use chatml.
TEMPLATES = {
    "chatml": ("<|im_start|>system\n{system}<|im_end|>\n", "<|im_start|>user\n", ("<|im_end|>", "<|im_start|>")),
    "llama3": ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
               "<|start_header_id|>user<|end_header_id|>\n\n", ("<|eot_id|>", "<|start_header_id|>")),
    "phi3": ("<|system|>\n{system}<|end|>\n", "<|user|>\n", ("<|end|>", "<|assistant|>")),
}
BOS = {"llama3": "<|begin_of_text|>"}  # a template whose prefix starts with BOS even without a system block


def pre_query(template: str, system: str | None) -> str:
    """The prompt Magpie completes: the system block (if any) and the user header."""
    system_block, user, _ = TEMPLATES[template]
    return (system_block.format(system=system) if system else BOS.get(template, "")) + user


@register
class Magpie(LLMGenerator):
    """Magpie: instructions the model writes from its chat template's user prefix alone (raw /v1/completions), then answers."""

    name = "magpie"
    templates = tuple(part for t in TEMPLATES.values() for part in (t[0], t[1]))

    class Params(Params):
        template: Literal["chatml", "llama3", "phi3"] = Field(default="chatml", description="the model's chat template family")
        num_rows: int = Field(default=100, ge=1, description="instructions to make (per seed row with system_field)")
        system: str | None = Field(default=None, description="system prompt for every row (steers the topic)")
        system_field: str | None = Field(default=None, description="seed column holding a system prompt per row")
        responses: bool = Field(default=True, description="also answer each instruction (chat request) -> output")
        temperature: float = Field(default=1.0, ge=0, le=2, description="of the instruction (Magpie samples at 1)")
        top_p: float = Field(default=1.0, gt=0, le=1)
        max_tokens: int = Field(default=128, ge=1, description="instruction length cap; a cut-off one is rejected")
        response_temperature: float = Field(default=0.7, ge=0, le=2)
        response_max_tokens: int = Field(default=512, ge=1)
        min_words: int = Field(default=3, ge=1, description="shorter instructions are rejected")
        seed: int = 0

    def run(self, seeds: pl.DataFrame, client: LLMClient) -> Split:
        p = self.params
        plan = self._plan(seeds)
        stops = TEMPLATES[p.template][2]
        requests = [ChatRequest.completion(pre_query(p.template, system), temperature=p.temperature, top_p=p.top_p,
                                           max_tokens=p.max_tokens, seed=p.seed + k, stop=stops, tag=sid or f"row{k}")
                    for k, (sid, system) in enumerate(plan)]
        first = client.complete(requests[:1], step=self.name)
        _require_completions(first[0], client)
        answers = first + client.complete(requests[1:], step=self.name)
        kept, rejected, seen = [], [], set()
        for k, ((sid, system), answer) in enumerate(zip(plan, answers)):
            row = {"instruction": answer.text.strip() if answer.ok else None, "input": "", "system": system,
                   "sample": k} | self.provenance(client, sid)
            reason = failed(answer) or self._check(row["instruction"], seen)
            (rejected if reason else kept).append(row | (reason or {}))
            seen.add(row["instruction"])
        if p.responses:
            kept = self._answer(kept, client, rejected)
        return Split(self.rows(kept), self.rejected(rejected))

    def _plan(self, seeds: pl.DataFrame) -> list[tuple[str | None, str | None]]:
        """(seed id, system prompt) per instruction to make."""
        p = self.params
        if p.system_field is None:
            return [(None, p.system)] * p.num_rows
        if p.system_field not in seeds.columns:
            raise SluiceError(f"magpie: system_field {p.system_field!r} is not a seed column (seeds have {seeds.columns})")
        return [(r["id"], r[p.system_field]) for r in seeds.select("id", p.system_field).to_dicts()
                for _ in range(p.num_rows)]

    def _check(self, instruction: str, seen: set[str]) -> dict | None:
        words = word_count(instruction)
        if words < self.params.min_words:
            return {REASON: "too_short", DETAIL: f"{words} words: {instruction[:80]!r}"}
        if instruction in seen:
            return {REASON: "duplicate", DETAIL: instruction[:120]}
        return None

    def _answer(self, rows: list[dict], client: LLMClient, rejected: list[dict]) -> list[dict]:
        p = self.params
        requests = [ChatRequest.user(r["instruction"], r["system"], temperature=p.response_temperature,
                                     max_tokens=p.response_max_tokens, seed=p.seed, tag=str(r["sample"])) for r in rows]
        kept = []
        for row, answer in zip(rows, client.complete(requests, step=self.name)):
            row = row | {"output": answer.text.strip() if answer.ok else None}
            reason = failed(answer) or (None if row["output"] else {REASON: "empty_output", DETAIL: None})
            (rejected if reason else kept).append(row | (reason or {}))
        return kept


def _require_completions(answer, client: LLMClient) -> None:
    """Stop with a clear message when the endpoint has no raw text completions (a 404/405 on /v1/completions)."""
    if answer.ok or answer.kind != FailureKind.BAD_REQUEST:
        return
    if any(code in answer.message for code in ("404", "405", "NotFound", "not found", "not supported")):
        raise SluiceError(f"magpie needs raw text completions (POST /v1/completions), and the endpoint "
                          f"{client.base_url} does not offer them ({answer.message[:160]}). Use a server that does "
                          "(llama.cpp, vLLM, TGI, Ollama; the embedded model does), or another generator.")
