"""UltraFeedback-style ratings (Cui et al., 2023) and preference pairs from them.

For each instruction: N responses (sampled here with different seeds, or taken from a list column of the
seeds, e.g. answers of several models), then one rating request per aspect that shows all N responses
together and asks for a 1-5 rating and a rationale for each, as UltraFeedback does. Each response's overall
score is the mean of its aspect ratings; `chosen` is the best response and `rejected` the worst (ties:
the earlier response); a row whose best and worst are less than `min_margin` apart is rejected as
`no_preference` (its ratings stay in the rejects table).

Rows: `prompt`, `responses` (list), `ratings_<aspect>` (list of ints, one per response), `rationales_<aspect>`,
`score_overall` (list of means), `chosen`, `rejected`, `score_chosen`, `score_rejected`, with provenance.
Requests per row: N (unless given) + one per aspect.
"""

from __future__ import annotations

from typing import Any, Literal

import polars as pl
from pydantic import Field

from operators.base import DETAIL, REASON, Params, Split
from operators.generate.base import LLMGenerator, failed
from operators.generate.client import ChatRequest, LLMClient
from operators.generate.responses import instruction_prompt, sample_requests
from operators.registry import register

ASPECTS = {
    "helpfulness": "How well does the response meet the user's need: correct, informative, relevant and "
                   "complete without being verbose? (1 = useless or wrong, 5 = fully helpful and correct)",
    "honesty": "Does the response express the right amount of confidence, saying so where it is unsure and "
               "not inventing certainty? (1 = confidently wrong, 5 = correct and appropriately confident)",
    "instruction_following": "Does the response do exactly what the instruction asks, respecting every "
                             "requirement and restriction? (1 = ignores it, 5 = follows it fully)",
    "truthfulness": "Is the response free of fabricated facts, contradictions and claims not supported by the "
                    "instruction or common knowledge? (1 = mostly fabricated, 5 = no hallucination)",
}
PROMPT = ("Rate {n} responses to the same instruction on one aspect.\n\nAspect: {aspect}. {rubric}\n\n"
          "Instruction:\n{instruction}\n\n{responses}\n\nRate each response on its own merits from 1 to 5. Answer in "
          "JSON: {{\"ratings\": [{{\"rating\": <1-5>, \"rationale\": \"<one sentence>\"}}, ...]}} with exactly {n} "
          "entries, in the order of the responses.")


def schema(n: int) -> dict[str, Any]:
    item = {"type": "object", "required": ["rating", "rationale"],
            "properties": {"rating": {"type": "integer", "minimum": 1, "maximum": 5}, "rationale": {"type": "string"}}}
    return {"type": "object", "required": ["ratings"],
            "properties": {"ratings": {"type": "array", "items": item, "minItems": n, "maxItems": n}}}


def read_ratings(data: Any, n: int) -> tuple[list[int], list[str]] | None:
    """(ratings, rationales) when the answer has exactly n ratings of 1-5, else None."""
    items = data.get("ratings") if isinstance(data, dict) else data if isinstance(data, list) else None
    if not isinstance(items, list) or len(items) != n:
        return None
    ratings = [i.get("rating") if isinstance(i, dict) else i for i in items]
    if not all(isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= 5 for r in ratings):
        return None
    return ratings, [str(i.get("rationale", "")) if isinstance(i, dict) else "" for i in items]


@register
class UltraFeedback(LLMGenerator):
    """UltraFeedback: rate N responses per instruction on several aspects (1-5 each) -> ratings and a chosen/rejected pair."""

    name = "ultrafeedback"
    templates = (PROMPT, *ASPECTS.values())

    class Params(Params):
        instruction_field: str = "instruction"
        input_field: str = Field(default="input", description="appended after a blank line when present; '' for none")
        responses_field: str | None = Field(default=None, description="seed column with a list of responses to rate; "
                                            "omit to sample `samples` responses here")
        samples: int = Field(default=4, ge=2, le=10, description="responses sampled per instruction")
        aspects: list[Literal["helpfulness", "honesty", "instruction_following", "truthfulness"]] = Field(
            default=["helpfulness", "honesty", "instruction_following", "truthfulness"], min_length=1)
        temperature: float = Field(default=1.0, ge=0, le=2, description="of the sampled responses")
        response_max_tokens: int = Field(default=512, ge=1)
        max_tokens: int = Field(default=1024, ge=64, description="per rating request")
        min_margin: float = Field(default=0.5, ge=0, description="chosen must beat rejected by this mean rating")
        seed: int = 0

    def run(self, seeds: pl.DataFrame, client: LLMClient) -> Split:
        p = self.params
        rows = seeds.to_dicts()
        prompts = [(r["id"], instruction_prompt(r, p.instruction_field, p.input_field)) for r in rows]
        candidates, rejected = self._responses(rows, prompts, client)
        rated = [(i, texts) for i, texts in enumerate(candidates) if len(texts) >= 2]
        requests = [ChatRequest.user(self._prompt(prompts[i][1], texts, aspect), temperature=0, max_tokens=p.max_tokens,
                                     seed=p.seed, json_schema=schema(len(texts)), tag=prompts[i][0])
                    for i, texts in rated for aspect in p.aspects]
        answers = iter(client.complete(requests, step=self.name))
        kept = []
        for i, texts in enumerate(candidates):
            sid, prompt = prompts[i]
            row = {"prompt": prompt, "responses": texts} | self.provenance(client, sid, parent_id=sid)
            if len(texts) < 2:
                rejected.append(row | {REASON: "too_few_responses", DETAIL: f"{len(texts)} usable"})
                continue
            reason = None
            for aspect in p.aspects:
                answer = next(answers)
                read = read_ratings(answer.data, len(texts)) if answer.ok else None
                reason = reason or failed(answer) or (None if read else {REASON: "bad_ratings", DETAIL: answer.text[:160]})
                row[f"ratings_{aspect}"], row[f"rationales_{aspect}"] = read or (None, None)
            if reason:
                rejected.append(row | reason)
                continue
            scores = [round(sum(row[f"ratings_{a}"][k] for a in p.aspects) / len(p.aspects), 4) for k in range(len(texts))]
            best, worst = scores.index(max(scores)), scores.index(min(scores))
            row |= {"score_overall": scores, "chosen": texts[best], "rejected": texts[worst],
                    "score_chosen": scores[best], "score_rejected": scores[worst]}
            if scores[best] - scores[worst] < p.min_margin or best == worst:
                rejected.append(row | {REASON: "no_preference", DETAIL: f"scores {scores}"})
            else:
                kept.append(row)
        return Split(self.rows(kept), self.rejected(rejected))

    def _responses(self, rows: list[dict], prompts: list[tuple[str, str]], client: LLMClient) -> tuple[list[list[str]], list[dict]]:
        """The responses to rate per row (failed or empty samples left out, and counted in the failures table)."""
        p = self.params
        if p.responses_field:
            return [[str(t).strip() for t in (r.get(p.responses_field) or []) if t and str(t).strip()] for r in rows], []
        sampling = p.model_copy(update={"max_tokens": p.response_max_tokens})
        answers = client.complete(sample_requests(prompts, p.samples, sampling), step=self.name)
        return [[a.text.strip() for a in answers[i * p.samples:(i + 1) * p.samples] if a.ok and a.text.strip()]
                for i in range(len(rows))], []

    def _prompt(self, instruction: str, texts: list[str], aspect: str) -> str:
        shown = "\n\n".join(f"<response {k}>\n{t}\n</response {k}>" for k, t in enumerate(texts, 1))
        return PROMPT.format(n=len(texts), aspect=aspect.replace("_", " "), rubric=ASPECTS[aspect],
                             instruction=instruction, responses=shown)
