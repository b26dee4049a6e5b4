"""Evol-Instruct (Xu et al., 2023, WizardLM): evolve instructions over N rounds, eliminate failed evolutions.

Each round every instruction in the pool is rewritten by one operation drawn at random: in depth (add
constraints, deepen, concretise, increase reasoning steps, complicate the input) or in breadth (a new,
rarer prompt of the same domain). An evolution is eliminated when
  - it copies the rewriting prompt's scaffolding ("#Rewritten Prompt#", "given prompt", ...)  copied_scaffolding
  - the LLM judges it equal to its parent (same constraints, same depth and breadth)          no_information_gain
  - its response is a short "sorry" (under 80 words)                                           sorry_response
  - its response holds only punctuation and stop words                                         stopwords_response
and its parent stays in the pool for the next round (as in the paper). Survivors carry their response as
`output`, `evol_round`, `evol_op`, and `parent_id` (the row they evolved from; `gen_seed_id` is the root).
"""

from __future__ import annotations

import hashlib
import random
import re

import polars as pl
from pydantic import Field

from operators.base import DETAIL, REASON, Params, Split
from operators.generate.base import LLMGenerator, failed, row_id
from operators.generate.client import ChatRequest, LLMClient
from operators.registry import register

DEPTH = (
    "I want you to act as a Prompt Rewriter. Rewrite the given prompt into a more complex version that makes "
    "well-known AI assistants (such as ChatGPT or GPT-4) work a little harder. The rewritten prompt must stay "
    "reasonable and answerable by humans, and must keep any table, code or input of #The Given Prompt#.\n"
    "Complicate the given prompt with this method:\n{method}\n"
    "Keep #Rewritten Prompt# concise: add only 10 to 20 words to #The Given Prompt#. The phrases "
    "'#The Given Prompt#', '#Rewritten Prompt#', 'given prompt' and 'rewritten prompt' must not appear in "
    "#Rewritten Prompt#.\n#The Given Prompt#:\n{instruction}\n#Rewritten Prompt#:\n"
)
METHODS = {
    "add_constraints": "Add one more constraint or requirement to #The Given Prompt#.",
    "deepen": "If #The Given Prompt# asks about certain issues, increase the depth and breadth of the inquiry.",
    "concretize": "Replace general concepts with more specific concepts.",
    "increase_reasoning": "If #The Given Prompt# can be solved with a few simple thinking steps, rewrite it to "
                          "explicitly ask for multi-step reasoning.",
    "complicate_input": "Add a concrete input (data, a table, code or a passage) that the task must work on, "
                        "or make the existing input more complex.",
}
BREADTH = (
    "I want you to act as a Prompt Creator. Draw inspiration from #Given Prompt# to create a brand new prompt "
    "in the same domain but rarer. Its length and complexity should be similar to #Given Prompt#, and it must "
    "be reasonable and answerable by humans. The phrases '#Given Prompt#', '#Created Prompt#', 'given prompt' "
    "and 'created prompt' must not appear in #Created Prompt#.\n#Given Prompt#:\n{instruction}\n#Created Prompt#:\n"
)
EQUAL = (
    "Here are two instructions to an AI assistant. Are they equal to each other, meeting these requirements:\n"
    "1. They have the same constraints and requirements.\n2. They have the same depth and breadth of inquiry.\n"
    "The First Prompt: {parent}\nThe Second Prompt: {child}\n"
    "Your judgement (answer only Equal or Not Equal, no explanation):"
)
OPERATIONS = [*METHODS, "breadth"]
SCAFFOLDING = re.compile(r"#?(the )?(given|rewritten|created) prompt#?", re.IGNORECASE)
STOP_WORDS = frozenset(
    "a about above after again against all am an and any are as at be because been before being below between "
    "both but by can could did do does doing down during each few for from further had has have having he her "
    "here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not "
    "now of off on once only or other our ours ourselves out over own same she should so some such than that "
    "the their theirs them themselves then there these they this those through to too under until up very was "
    "we were what when where which while who whom why will with would you your yours yourself yourselves".split()
)


@register
class EvolInstruct(LLMGenerator):
    """Evol-Instruct: evolve instructions in depth and breadth for N rounds, eliminating failed evolutions."""

    name = "evol_instruct"
    templates = (DEPTH, *METHODS.values(), BREADTH, EQUAL)

    class Params(Params):
        rounds: int = Field(default=4, ge=1, description="evolution rounds (WizardLM: 4)")
        operations: list[str] = Field(default_factory=lambda: list(OPERATIONS), description=f"drawn from {OPERATIONS}")
        instruction_field: str = "instruction"
        judge_equality: bool = Field(default=True, description="eliminate evolutions the LLM judges equal to their parent")
        sorry_max_words: int = Field(default=80, ge=0, description="a 'sorry' response shorter than this eliminates")
        temperature: float = Field(default=1.0, ge=0, le=2)
        max_tokens: int = Field(default=512, ge=1, description="for the rewrite")
        response_max_tokens: int = Field(default=512, ge=1)
        seed: int = 0

    def run(self, seeds: pl.DataFrame, client: LLMClient) -> Split:
        p = self.params
        unknown = set(p.operations) - set(OPERATIONS)
        if unknown or not p.operations:
            raise ValueError(f"evol_instruct: unknown operations {sorted(unknown)}; choose from {OPERATIONS}")
        pool = [{"id": r["id"], "root": r["id"], "instruction": r[p.instruction_field]} for r in seeds.to_dicts()]
        kept, rejected = [], []
        for round_ in range(1, p.rounds + 1):
            survivors, eliminated = self._evolve(pool, round_, client)
            kept += survivors
            rejected += eliminated
            parents_kept = {r["parent_id"] for r in survivors}
            next_pool = [{"id": r["_id"], "root": r["gen_seed_id"], "instruction": r["instruction"]} for r in survivors]
            pool = next_pool + [r for r in pool if r["id"] not in parents_kept]  # failed evolutions keep their parent
        return Split(self.rows(kept), self.rejected(rejected))

    def _evolve(self, pool: list[dict], round_: int, client: LLMClient) -> tuple[list[dict], list[dict]]:
        p = self.params
        ops = [self._operation(parent["id"], round_) for parent in pool]
        requests = [ChatRequest.user(_rewrite_prompt(op, parent["instruction"]), temperature=p.temperature,
                                     max_tokens=p.max_tokens, seed=p.seed + round_, tag=parent["id"])
                    for op, parent in zip(ops, pool)]
        children, eliminated = [], []
        for op, parent, answer in zip(ops, pool, client.complete(requests, step=self.name)):
            child = {"instruction": answer.text.strip() if answer.ok else None, "input": "", "evol_round": round_,
                     "evol_op": op} | self.provenance(client, parent["root"], parent["id"])
            # the id is fixed now (content and ancestry), so the next round's children can name it as parent
            child["_id"] = row_id(self.name, {k: child[k] for k in ("instruction", "parent_id", "evol_round")})
            reason = failed(answer)
            if reason is None and (not child["instruction"] or SCAFFOLDING.search(child["instruction"])):
                reason = {REASON: "copied_scaffolding" if child["instruction"] else "empty_instruction", DETAIL: None}
            (eliminated if reason else children).append(child | (reason or {}) | {"_parent": parent["instruction"]})
        return self._eliminate(children, client, eliminated)

    def _eliminate(self, children: list[dict], client: LLMClient, eliminated: list[dict]) -> tuple[list[dict], list[dict]]:
        p = self.params
        responses = client.complete([ChatRequest.user(c["instruction"], temperature=0.7, max_tokens=p.response_max_tokens,
                                                      seed=p.seed, tag=c["parent_id"]) for c in children], step=self.name)
        equal = [None] * len(children)
        if p.judge_equality:
            equal = client.complete([ChatRequest.user(EQUAL.format(parent=c["_parent"], child=c["instruction"]),
                                                      temperature=0, max_tokens=4, seed=p.seed, tag=c["parent_id"])
                                     for c in children], step=self.name)
        survivors = []
        for child, response, same in zip(children, responses, equal):
            reason = failed(response) or (failed(same) if same is not None else None)
            if reason is None:
                child["output"] = response.text.strip()
                reason = _elimination(child["output"], same.text if same is not None else "", p.sorry_max_words)
            (eliminated if reason else survivors).append(child | (reason or {}))
        for row in survivors + eliminated:
            row.pop("_parent", None)
            row.setdefault("output", None)
        return survivors, eliminated

    def _operation(self, row_id_: str, round_: int) -> str:
        """A seeded draw per (row, round): the same run draws the same operations, so the cache replays it."""
        digest = hashlib.sha256(f"{self.params.seed}:{row_id_}:{round_}".encode()).digest()
        return random.Random(digest).choice(self.params.operations)


def _rewrite_prompt(op: str, instruction: str) -> str:
    if op == "breadth":
        return BREADTH.format(instruction=instruction)
    return DEPTH.format(method=METHODS[op], instruction=instruction)


def _elimination(response: str, judgement: str, sorry_max_words: int) -> dict | None:
    if re.match(r"\s*equal\b", judgement, re.IGNORECASE):
        return {REASON: "no_information_gain", DETAIL: judgement.strip()[:40]}
    words = re.findall(r"[a-z']+", response.lower())
    if "sorry" in response.lower() and len(response.split()) < sorry_max_words:
        return {REASON: "sorry_response", DETAIL: response[:120]}
    if not words or all(w in STOP_WORDS for w in words):
        return {REASON: "stopwords_response", DETAIL: response[:120]}
    return None
