"""The generators over real seed data, against a scripted OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
import random

import polars as pl
import pytest

from conftest import ROOT, SHARED
from fault_server import FaultServer
from operators.generate import (EndpointConfig, EvolInstruct, Judge, LLMClient, PreferencePairs, PretrainGrid,
                                Responses, SelfInstruct)
from operators.generate.text import numbered_items, rouge_l, rouge_tokens

SEEDS = ROOT / "data" / "self_instruct" / "seed_tasks.jsonl"
USER_ORIENTED = SHARED / "instructions" / "self_instruct" / "user_oriented_instructions.jsonl"


def seed_tasks() -> pl.DataFrame:
    return pl.read_ndjson(SEEDS)


def held_out(n: int) -> list[str]:
    return [json.loads(line)["instruction"] for line in USER_ORIENTED.read_text().splitlines()[:n]]


def scripted(messages: list[dict], body: dict) -> str:
    """A stand-in model: answers each prompt kind the way the generators expect, deterministically."""
    text = messages[-1]["content"]
    rng = random.Random(text)
    if text.startswith("Come up with a series of tasks"):
        shown = [line.split(". ", 1)[1] for line in text.splitlines()[1:-1]]
        fresh = held_out(252)
        return "\n".join([
            "9. " + rng.choice(fresh),
            "10. " + shown[0],                          # a copy of an in-context instruction: ROUGE-L 1.0
            "11. Draw a picture of your house.",        # blacklisted keyword
            "12. Be nice.",                             # too short
            "13. Write a program that prints hello.",   # "Write a program"
            "14. " + rng.choice(fresh),
        ])
    if "Is it classification?" in text:
        return "Yes" if "sentiment" in text.rsplit("Task:", 1)[-1].lower() else "No"
    if text.startswith("Come up with examples"):
        return "Example 1\nInput: a\nOutput: b\nExample 2\nOutput: c\nExample 3\nInput: same\nOutput: same"
    if text.startswith("Given the classification"):
        return "Class label: Positive\nInput: I love it\nClass label: Negative\nInput: I hate it"
    if "Prompt Rewriter" in text or "Prompt Creator" in text:
        given = text.rsplit(":\n", 2)[-2].rsplit("\n", 1)[0]
        if "sorry" in given:
            return "Sorry version of: " + given
        return f"{given} Explain each step and give two examples." if "Rewriter" in text else "#Created Prompt#: " + given
    if "Are they equal" in text:
        return "Not Equal"
    if "rate the" in text:
        return json.dumps({"score": len(text) % 5 + 1, "explanation": "scripted"})
    if text.startswith("Sorry version"):
        return "Sorry, that is unclear to me."
    if body.get("seed", 0) % 2:
        return f"A short answer to: {text[:40]}"
    return f"A longer and more careful answer, step by step, to: {text[:60]}"


@pytest.fixture(scope="module")
def server():
    with FaultServer(scripted) as s:
        yield s


@pytest.fixture
def client(server):
    return LLMClient(EndpointConfig(base_url=server.url, model="scripted", max_retries=0, timeout_s=10))


def test_rouge_l_and_list_parsing():
    assert rouge_l(rouge_tokens("Give me three tips."), rouge_tokens("give me THREE tips")) == 1.0
    assert rouge_l(rouge_tokens("a b c d"), rouge_tokens("a x c y")) == pytest.approx(0.5)
    assert numbered_items("9. First one\n10. Second\n11) Third") == ["First one", "Second", "Third"]


def test_self_instruct_filters_like_the_paper_and_adds_instances(client):
    kept, rejected = SelfInstruct(num_instructions=6, request_batch_size=2, seed=3).run(seed_tasks(), client)
    reasons = dict(rejected.group_by("reason").len().iter_rows())
    assert {"similar_to_pool", "blacklisted_keyword", "too_short", "write_a_program"} <= set(reasons)
    copies = rejected.filter(pl.col("reason") == "similar_to_pool")
    assert copies["detail"].str.starts_with("rougeL 1.00").all()
    instructions = kept["instruction"].unique().to_list()
    assert len(instructions) >= 6 and set(instructions) <= set(held_out(252))
    # 2 instances per generation task (input == output dropped), 2 per classification task
    assert kept.group_by("instruction").len()["len"].to_list() == [2] * len(instructions)
    assert set(kept.columns) >= {"id", "instruction", "input", "output", "is_classification", "source", "gen_model",
                                 "gen_template", "gen_params", "gen_seed_id", "parent_id"}
    assert kept["id"].n_unique() == len(kept) and kept["gen_model"].unique().to_list() == ["scripted"]
    # every prompt showed 8 instructions; the seed ids are recorded
    assert all(len(ids.split(",")) >= 8 for ids in kept["gen_seed_id"])


def test_self_instruct_is_reproducible_from_the_cache(server, client):
    first = SelfInstruct(num_instructions=4, request_batch_size=2).run(seed_tasks(), client)
    calls = server.calls
    again = SelfInstruct(num_instructions=4, request_batch_size=2).run(seed_tasks(), client)
    assert server.calls == calls
    assert first.kept.equals(again.kept) and first.rejected.equals(again.rejected)


def test_evol_instruct_chains_parents_and_eliminates(client):
    seeds = pl.DataFrame({"id": ["s1", "s2", "s3"],
                          "instruction": ["List three fruits.", "Say sorry nicely.", "Explain rain to a child."]})
    kept, rejected = EvolInstruct(rounds=3, operations=["deepen", "breadth"]).run(seeds, client)
    reasons = set(rejected["reason"])
    assert "copied_scaffolding" in reasons  # breadth answers start with "#Created Prompt#:" in this script
    assert "sorry_response" in reasons
    by_id = {r["id"]: r for r in kept.to_dicts()}
    for row in kept.to_dicts():
        parent = by_id.get(row["parent_id"])
        if parent is not None:  # evolved from an earlier evolution
            assert parent["evol_round"] < row["evol_round"] and parent["gen_seed_id"] == row["gen_seed_id"]
            assert row["instruction"].startswith(parent["instruction"])  # deepen keeps and extends it
        else:  # evolved from a seed (in a later round when the seed's earlier evolutions were eliminated)
            assert row["parent_id"] == row["gen_seed_id"] and row["parent_id"] in {"s1", "s3"}
    assert kept["evol_round"].max() == 3
    assert kept["output"].str.len_chars().min() > 0


def test_responses_samples_and_judge_scores(client):
    seeds = pl.DataFrame({"id": ["a", "b"], "instruction": held_out(2), "input": ["", "some input"]})
    answered, rejected = Responses(samples=2).run(seeds, client)
    assert len(answered) == 4 and not len(rejected)
    assert answered.group_by("gen_seed_id").len().sort("gen_seed_id")["len"].to_list() == [2, 2]
    assert answered["output"].n_unique() == 4  # different seeds per sample
    scored, rejected = Judge().run(answered, client)
    assert scored["score_judge_accuracy"].is_between(1, 5).all() and len(scored) == 4
    assert scored["id"].to_list() == answered["id"].to_list()  # the judge keeps the rows' ids


def test_preference_pairs_pick_best_and_worst(client):
    seeds = pl.DataFrame({"id": [f"r{i}" for i in range(4)], "instruction": held_out(4), "input": [""] * 4})
    pairs, rejected = PreferencePairs(samples=3).run(seeds, client)
    assert len(pairs) + len(rejected) == 4
    assert (pairs["score_chosen"] > pairs["score_rejected"]).all()
    assert set(rejected["reason"]) <= {"no_preference"}
    assert set(pairs.columns) >= {"prompt", "chosen", "rejected", "gen_seed_id"}


def test_pretrain_grid_covers_every_cell_and_passages(client):
    grid = PretrainGrid(topics=["tides", "compound interest"], audiences=["children", "engineers"],
                        styles=["blog post", "textbook section"], per_cell=2, min_words=3)
    kept, rejected = grid.run(pl.DataFrame({"id": []}, schema={"id": pl.String}), client)
    assert len(kept) + len(rejected) == 16
    cells = kept.group_by("topic", "audience", "style").len()
    assert len(cells) == 8 and cells["len"].to_list() == [2] * 8
    passages = pl.read_ndjson(ROOT / "data" / "web" / "redpajama" / "redpajama-c4-refined.jsonl").head(3)
    passages = passages.with_row_index("id").with_columns(pl.col("id").cast(pl.String))
    kept, _ = PretrainGrid(passage_field="text", min_words=3).run(passages, client)
    assert kept["gen_seed_id"].to_list() == ["0", "1", "2"]


def test_failed_requests_become_counted_rejects_not_nones():
    with FaultServer() as flaky:
        client = LLMClient(EndpointConfig(base_url=flaky.url, model="m", max_retries=1, backoff_s=0.01))
        seeds = pl.DataFrame({"id": ["ok", "bad", "cut"], "instruction": ["fine", "boom [500]", "long [length]"]})
        kept, rejected = Responses().run(seeds, client)
    assert kept["gen_seed_id"].to_list() == ["ok"] and kept["output"].null_count() == 0
    assert dict(zip(rejected["gen_seed_id"], rejected["reason"])) == {"bad": "failed_server_error", "cut": "failed_truncated"}
    assert len(client.failures) == 2 and {f.tag for f in client.failures} == {"bad", "cut"}


def test_bad_params_are_rejected():
    with pytest.raises(ValueError, match="either topics or passage_field"):
        PretrainGrid()
    with pytest.raises(ValueError, match="extra"):
        SelfInstruct(num_instruction=3)


def test_judge_reads_the_score_of_a_cut_off_json_answer():
    def cut(messages, body):
        if "[length]" in messages[-1]["content"]:  # finish_reason=length, the JSON cut off
            return '{"score": 4, "explanation": "The answer is mostly right but'
        return '{"score": 4, "explanation": "ok" BROKEN'  # complete but not JSON: a parse_error
    with FaultServer(cut) as server:
        client = LLMClient(EndpointConfig(base_url=server.url, model="m"))
        rows = pl.DataFrame({"id": ["a", "b"], "instruction": ["Add 2 and 2.", "Name a colour. [length]"],
                             "input": ["", ""], "output": ["4", "blue"]})
        scored, rejected = Judge().run(rows, client)
    assert scored["id"].to_list() == ["b"] and scored["score_judge_accuracy"].to_list() == [4]
    assert rejected["reason"].to_list() == ["failed_parse_error"]
