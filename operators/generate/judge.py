"""LLM-as-judge: AlpaGasus-style rubric scores, and preference pairs chosen/rejected by those scores."""

from __future__ import annotations

import re
from typing import Any, Literal

import polars as pl
from pydantic import Field

from operators.base import DETAIL, REASON, Params, Split
from operators.generate.base import PROVENANCE, LLMGenerator, failed
from operators.generate.client import ChatRequest, Completion, LLMClient
from operators.generate.failures import Failure
from operators.generate.responses import instruction_prompt, sample_requests
from operators.registry import register

RUBRIC = (
    "We would like to request your feedback on the performance of an AI assistant in response to the "
    "instruction and the given input displayed below.\n\nInstruction: {instruction}\nInput: {input}\n"
    "Response: {response}\n\nPlease rate the {dimension} of the response to the instruction and the input "
    "on a scale of 1 to 5, where a higher score means better {dimension}. Answer in JSON: "
    "{{\"score\": <1-5>, \"explanation\": \"<one or two sentences, avoiding any bias>\"}}"
)
SCHEMA = {"type": "object", "required": ["score", "explanation"],  # score first: a cut-off answer still has it
          "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5}, "explanation": {"type": "string"}}}


class JudgeParams(Params):
    dimension: Literal["accuracy", "helpfulness"] = Field(default="accuracy", description="what the rubric rates")
    instruction_field: str = "instruction"
    input_field: str = "input"
    max_tokens: int = Field(default=200, ge=16)
    seed: int = 0


def judge_requests(items: list[tuple[str, dict, str]], p: JudgeParams) -> list[ChatRequest]:
    """One rubric request per (tag, row, response)."""
    return [ChatRequest.user(RUBRIC.format(instruction=row.get(p.instruction_field) or "",
                                           input=(row.get(p.input_field) or "") if p.input_field else "",
                                           response=response, dimension=p.dimension),
                             temperature=0, max_tokens=p.max_tokens, seed=p.seed, json_schema=SCHEMA, tag=tag,
                             accept_truncated=True)  # the score comes first: a cut-off explanation still counts
            for tag, row, response in items]


def read_score(answer: Completion | Failure) -> tuple[int | None, str, dict | None]:
    """(score 1..5, explanation, reject reason): JSON first, else the first digit 1-5 in the text."""
    if (reason := failed(answer)) is not None:
        return None, "", reason
    data: Any = answer.data
    score = data.get("score") if isinstance(data, dict) else None
    if not isinstance(score, int):
        found = re.search(r'"score"\s*:\s*([1-5])\b', answer.text) or re.search(r"\b([1-5])\b", answer.text)
        score = int(found.group(1)) if found else None
    if score is None or not 1 <= score <= 5:
        return None, "", {REASON: "no_score", DETAIL: answer.text[:160]}
    explanation = data.get("explanation", "") if isinstance(data, dict) else answer.text
    return score, str(explanation).strip(), None


@register
class Judge(LLMGenerator):
    """Rate each row's response on a 1-5 rubric (AlpaGasus) -> score_judge_<dimension>, judge_explanation."""

    name = "judge"
    templates = (RUBRIC,)
    per_seed_row = keeps_seed_columns = True

    class Params(JudgeParams):
        response_field: str = "output"

    def writes(self) -> set[str]:
        return {f"score_judge_{self.params.dimension}", "judge_explanation"}

    def run(self, seeds: pl.DataFrame, client: LLMClient) -> Split:
        p, rows = self.params, seeds.to_dicts()
        answers = client.complete(judge_requests([(r["id"], r, r.get(p.response_field) or "") for r in rows], p), self.name)
        kept, rejected = [], []
        column = f"score_judge_{p.dimension}"
        for row, answer in zip(rows, answers):
            score, explanation, reason = read_score(answer)
            scored = row | {column: score, "judge_explanation": explanation, "_id": row["id"]}
            (rejected if reason else kept).append(scored | (reason or {}))
        return Split(self.rows(kept), self.rejected(rejected))


@register
class PreferencePairs(LLMGenerator):
    """Sample n responses per instruction, judge each, keep the best as `chosen` and the worst as `rejected`."""

    name = "preference_pairs"
    templates = (RUBRIC,)
    per_seed_row = True

    class Params(JudgeParams):
        samples: int = Field(default=4, ge=2, description="responses sampled per instruction")
        temperature: float = Field(default=1.0, ge=0, le=2)
        response_max_tokens: int = Field(default=512, ge=1)
        min_margin: int = Field(default=1, ge=1, description="chosen must beat rejected by this many points")

    def writes(self) -> set[str]:
        return {"prompt", "chosen", "rejected", "score_chosen", "score_rejected", *PROVENANCE}

    def run(self, seeds: pl.DataFrame, client: LLMClient) -> Split:
        p, rows = self.params, seeds.to_dicts()
        prompts = [(r["id"], instruction_prompt(r, p.instruction_field, p.input_field)) for r in rows]
        sampling = p.model_copy(update={"max_tokens": p.response_max_tokens})
        samples = client.complete(sample_requests(prompts, p.samples, sampling), step=self.name)
        to_judge = [(rows[i // p.samples]["id"], rows[i // p.samples], a.text.strip())
                    for i, a in enumerate(samples) if a.ok and a.text.strip()]
        scores = iter(client.complete(judge_requests(to_judge, p), step=self.name))
        kept, rejected = [], []
        for i, (row, (_, prompt)) in enumerate(zip(rows, prompts)):
            scored = []
            for answer in samples[i * p.samples:(i + 1) * p.samples]:
                if answer.ok and answer.text.strip():
                    score, _, reason = read_score(next(scores))
                    if reason is None:
                        scored.append((score, answer.text.strip()))
            pair = {"prompt": prompt} | self.provenance(client, row["id"], parent_id=row["id"])
            if len(scored) < 2:
                rejected.append(pair | {REASON: "too_few_judged", DETAIL: f"{len(scored)} of {p.samples} samples judged"})
                continue
            best, worst = max(scored, key=lambda s: s[0]), min(scored, key=lambda s: s[0])
            pair |= {"chosen": best[1], "rejected": worst[1], "score_chosen": best[0], "score_rejected": worst[0]}
            if best[0] - worst[0] < p.min_margin:
                rejected.append(pair | {REASON: "no_preference", DETAIL: f"scores {sorted(s for s, _ in scored)}"})
            else:
                kept.append(pair)
        return Split(self.rows(kept), self.rejected(rejected))
