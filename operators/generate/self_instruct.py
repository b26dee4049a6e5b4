"""Self-Instruct (Wang et al., 2022), as its reference code does it.

1. Bootstrap instructions: each prompt lists 8 instructions (2 from the machine pool once it has them, the
   rest from the human seeds, shuffled) and asks for the next; the answer's numbered items are filtered:
   3 words or fewer / more than 150 words, the keyword blacklist (image, graph, picture, file, map, draw,
   plot, go to, ...), "Write a program" openings, punctuation or non-ASCII first characters, and ROUGE-L > 0.7
   against every instruction in the pool (human and machine). Rounds repeat until `num_instructions`.
2. Classify each new instruction (classification task with finite labels or not), few-shot from the seeds.
3. Instances: output-first prompts for classification tasks, input-first for the rest, few-shot from the
   seed tasks' own instances; instances with an empty output, output equal to input, or repeated are dropped.

Differences from the reference, because chat endpoints are not GPT-3 completions: an answer cut off at
max_tokens keeps its complete items (the reference drops the whole answer; small models rarely stop on
their own): the cut-off last instruction is rejected as `cut_off`, a cut-off last instance is dropped, and
a cut-off classification answer is read by its first word; the prompt is sent as a
user message; the model's leading item number is optional; no presence penalty (not in every server);
"\\n\\n" is not a stop sequence (chat models put blank lines between items); only the first letter is
upper-cased (the reference's str.capitalize() also lower-cases the rest, e.g. "Python" -> "python").
"""

from __future__ import annotations

import random
import re
import string

import polars as pl
from pydantic import Field

from operators.base import DETAIL, REASON, Params, Split
from operators.generate.base import PROVENANCE, LLMGenerator, failed
from operators.generate.client import ChatRequest, LLMClient
from operators.generate.text import has_keyword, most_similar, numbered_items, rouge_tokens
from operators.registry import register

BLACKLIST = ["image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps", "draw",
             "plot", "go to", "video", "audio", "music", "flowchart", "diagram"]
TASKS = "Come up with a series of tasks:\n"
CLF_QUESTION = "Can the following task be regarded as a classification task with finite output labels?\n\n"
INPUT_FIRST = ("Come up with examples for the following tasks. Try to generate multiple examples when possible. "
               "If the task doesn't require additional input, you can generate the output directly.\n\n")
OUTPUT_FIRST = ("Given the classification task definition and the class labels, generate an input that corresponds "
                "to each of the class labels. If the task doesn't require input, just generate the correct class "
                "label.\n\n")


@register
class SelfInstruct(LLMGenerator):
    """Self-Instruct: bootstrap new instructions from seed tasks, filter (ROUGE-L, length, blacklist), add instances."""

    name = "self_instruct"
    templates = (TASKS, CLF_QUESTION, INPUT_FIRST, OUTPUT_FIRST)

    class Params(Params):
        num_instructions: int = Field(default=100, ge=1, description="new instructions to bootstrap")
        prompt_instructions: int = Field(default=8, ge=2, description="in-context instructions per prompt")
        machine_in_prompt: int = Field(default=2, ge=0, description="of which from the machine pool, once it has them")
        request_batch_size: int = Field(default=8, ge=1, description="prompts per round (sent concurrently)")
        max_rounds: int = Field(default=100, ge=1, description="give up after this many rounds")
        rouge_threshold: float = Field(default=0.7, ge=0, le=1)
        min_words: int = Field(default=4, ge=1, description="the reference rejects 3 words or fewer")
        max_words: int = Field(default=150, ge=1)
        blacklist: list[str] = Field(default_factory=lambda: list(BLACKLIST))
        instances: bool = Field(default=True, description="generate input/output instances for each instruction")
        max_instances: int = Field(default=5, ge=1)
        few_shot: int = Field(default=4, ge=0, description="seed tasks shown as examples for classifying and instances")
        temperature: float = Field(default=0.7, ge=0, le=2)
        top_p: float = Field(default=0.5, gt=0, le=1)
        max_tokens: int = Field(default=1024, ge=1)
        instance_max_tokens: int = Field(default=350, ge=1)
        seed: int = 0

    def reads(self) -> dict[str, list[str]]:
        return {"op": ["instruction"]}  # the seed tasks' text

    def writes(self) -> set[str]:
        return {"instruction", *PROVENANCE} | ({"input", "output"} if self.params.instances else set())

    def run(self, seeds: pl.DataFrame, client: LLMClient) -> Split:
        tasks = seeds.to_dicts()
        if not tasks:
            raise ValueError("self_instruct needs seed tasks (rows with an `instruction`)")
        pool, rejected = self._bootstrap(tasks, client)
        if not self.params.instances:
            return Split(self.rows(pool), self.rejected(rejected))
        kept = self._instances(pool, tasks, client, rejected)
        return Split(self.rows(kept), self.rejected(rejected))

    # -- 1. bootstrap -------------------------------------------------------------------------------------

    def _bootstrap(self, tasks: list[dict], client: LLMClient) -> tuple[list[dict], list[dict]]:
        p, rng = self.params, random.Random(self.params.seed)
        human = [(t["id"], t["instruction"]) for t in tasks]
        pool_tokens = [rouge_tokens(text) for _, text in human]
        pool_texts = [text for _, text in human]
        machine: list[tuple[str, str]] = []
        accepted, rejected = [], []
        for round_ in range(p.max_rounds):
            if len(machine) >= p.num_instructions:
                break
            prompts = [self._prompt(rng, human, machine) for _ in range(p.request_batch_size)]
            requests = [ChatRequest.user(text, temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens,
                                         stop=("\n16", "16."), seed=p.seed + round_ * p.request_batch_size + k,
                                         tag=f"round{round_}.{k}", accept_truncated=True)
                        for k, (text, _) in enumerate(prompts)]
            for (_, shown), answer in zip(prompts, client.complete(requests, step=self.name)):
                if not answer.ok:
                    continue  # nothing to account for but the failure itself (in the failures table)
                items = numbered_items(answer.text)
                for n, instruction in enumerate(items, 1):
                    if not instruction:
                        continue
                    instruction = instruction[0].upper() + instruction[1:]
                    row = {"instruction": instruction} | self.provenance(client, ",".join(shown))
                    if answer.truncated and n == len(items):
                        rejected.append(row | {REASON: "cut_off", DETAIL: "the last item of a truncated answer"})
                        continue
                    reason, detail = self._check(instruction, pool_tokens, pool_texts)
                    if reason:
                        rejected.append(row | {REASON: reason, DETAIL: detail})
                        continue
                    pool_tokens.append(rouge_tokens(instruction))
                    pool_texts.append(instruction)
                    machine.append((row["gen_seed_id"], instruction))
                    accepted.append(row)
        return accepted, rejected

    def _prompt(self, rng: random.Random, human: list, machine: list) -> tuple[str, list[str]]:
        p = self.params
        shown = rng.sample(machine, min(p.machine_in_prompt, len(machine)))
        shown += rng.sample(human, min(len(human), p.prompt_instructions - len(shown)))
        rng.shuffle(shown)
        lines = [f"{i}. " + re.sub(r"\s+", " ", text).strip().rstrip(":") for i, (_, text) in enumerate(shown, 1)]
        # machine entries carry their own seeds' ids; human entries their id
        ids = [sid for sid, _ in shown]
        return TASKS + "\n".join(lines) + f"\n{len(shown) + 1}.", ids

    def _check(self, text: str, pool_tokens: list[list[str]], pool_texts: list[str]) -> tuple[str | None, str | None]:
        p, words = self.params, len(text.split())
        if words < p.min_words:
            return "too_short", f"{words} words"
        if words > p.max_words:
            return "too_long", f"{words} words"
        if (word := has_keyword(text, p.blacklist)) is not None:
            return "blacklisted_keyword", word
        if text.startswith("Write a program"):
            return "write_a_program", None
        if text[0] in string.punctuation:
            return "starts_with_punctuation", None
        if not text[0].isascii():
            return "starts_non_ascii", None
        score, where = most_similar(rouge_tokens(text), pool_tokens, floor=p.rouge_threshold)
        if where >= 0:
            return "similar_to_pool", f"rougeL {score:.2f} vs {pool_texts[where][:120]!r}"
        return None, None

    # -- 2 + 3. classify, then instances ------------------------------------------------------------------

    def _instances(self, pool: list[dict], tasks: list[dict], client: LLMClient, rejected: list[dict]) -> list[dict]:
        p, rng = self.params, random.Random(p_seed := self.params.seed + 1)
        clf_requests = [ChatRequest.user(self._clf_prompt(rng, tasks, r["instruction"]), temperature=0, max_tokens=3,
                                         seed=p_seed, tag=r["instruction"][:80], accept_truncated=True)  # 1st word counts
                        for r in pool]
        clf_answers = client.complete(clf_requests, step=self.name)
        prompts = []
        for row, answer in zip(pool, clf_answers):
            row["is_classification"] = bool(answer.ok and answer.text.strip().lower().startswith("yes"))
            prompts.append(self._instance_prompt(rng, tasks, row["instruction"], row["is_classification"]))
        requests = [ChatRequest.user(text, temperature=0, max_tokens=p.instance_max_tokens, seed=p_seed,
                                     stop=(f"Example {p.max_instances + 1}", "Task:"), tag=r["instruction"][:80],
                                     accept_truncated=True)
                    for r, text in zip(pool, prompts)]
        kept = []
        for row, clf, answer in zip(pool, clf_answers, client.complete(requests, step=self.name)):
            if (reason := failed(clf) or failed(answer)) is not None:
                rejected.append(row | reason)
                continue
            instances = parse_instances(answer.text, row["is_classification"])
            if answer.truncated:
                instances = instances[:-1]  # the last one was cut off
            instances = instances[: p.max_instances]
            if not instances:
                rejected.append(row | {REASON: "no_instances", DETAIL: answer.text[:200]})
            kept += [row | {"input": inp, "output": out} for inp, out in instances]
        return kept

    def _examples(self, rng: random.Random, tasks: list[dict], classification: bool | None) -> list[dict]:
        fit = [t for t in tasks if t.get("instances") and (classification is None or t.get("is_classification") == classification)]
        return rng.sample(fit, min(self.params.few_shot, len(fit)))

    def _clf_prompt(self, rng: random.Random, tasks: list[dict], instruction: str) -> str:
        shots = [f"Task: {t['instruction']}\nIs it classification? {'Yes' if t.get('is_classification') else 'No'}"
                 for t in self._examples(rng, tasks, None)]
        return CLF_QUESTION + "\n\n".join(shots + [f"Task: {instruction}\nIs it classification?"])

    def _instance_prompt(self, rng: random.Random, tasks: list[dict], instruction: str, classification: bool) -> str:
        shots = []
        for t in self._examples(rng, tasks, classification):
            if classification:
                body = "\n".join(f"Class label: {i['output']}\nInput: {i['input']}" for i in t["instances"])
            else:
                body = "\n".join(f"Example {k}\n" + (f"Input: {i['input']}\n" if i["input"] else "") + f"Output: {i['output']}"
                                 for k, i in enumerate(t["instances"], 1))
            shots.append(f"Task: {t['instruction']}\n{body}")
        return (OUTPUT_FIRST if classification else INPUT_FIRST) + "\n\n".join(shots + [f"Task: {instruction}"])


def parse_instances(text: str, classification: bool) -> list[tuple[str, str]]:
    """(input, output) pairs from an instance answer; empty outputs, input == output and repeats dropped.

    An answer in none of the expected shapes is one output with no input (chat models often answer directly)."""
    pairs = []
    if classification:
        for chunk in re.split(r"Class label:", text)[1:]:
            label, _, inp = chunk.partition("Input:")
            pairs.append((inp.strip(), label.strip()))
    elif "Output:" in text:
        for chunk in re.split(r"Example \d+\s*\n?", text):
            inp, sep, out = chunk.partition("Output:")
            if sep:
                pairs.append((inp.replace("Input:", "", 1).strip(), out.strip()))
    elif text.strip() and not re.match(r"\s*(Input|Example \d)", text):
        pairs.append(("", text.strip()))
    seen, result = set(), []
    for inp, out in pairs:
        if out and out != inp and (inp, out) not in seen:
            seen.add((inp, out))
            result.append((inp, out))
    return result
