"""Magpie, multi-turn, persona, document QA, rephrasing and UltraFeedback over real documents and seed
instructions, against a scripted OpenAI-compatible server on loopback (chat and raw text completions)."""

from __future__ import annotations

import asyncio
import json
import re

import polars as pl
import pytest

from conftest import DCLM, ROOT, SHARED
from fault_server import FaultServer
from operators.errors import SluiceError
from operators.generate import (DocumentQA, EndpointConfig, LLMClient, Magpie, MultiTurn, PersonaInstruct, Rephrase,
                                UltraFeedback)
from operators.generate.base import PROVENANCE
from operators.generate.rephrase import chunk
from operators.tokens import count_tokens

SEEDS = ROOT / "data" / "self_instruct" / "seed_tasks.jsonl"
UDHR = SHARED / "langid" / "udhr" / "udhr.jsonl"
ZH = SHARED / "langid" / "lingua" / "sentences" / "zh.txt"


def documents() -> pl.DataFrame:
    """Real documents in three languages: DCLM web pages (English), UDHR (French), lingua sentences (Chinese)."""
    en = [json.loads(line)["text"] for line in DCLM.read_text().splitlines()[:6]]
    udhr = [json.loads(line) for line in UDHR.read_text().splitlines()]
    fr = [r["text"] for r in udhr if r["lang"] == "fr"][:1]
    zh = ["".join(ZH.read_text().splitlines()[:25])]
    texts = en + fr + zh
    return pl.DataFrame({"id": [f"doc{i}" for i in range(len(texts))], "text": texts,
                         "lang": ["en"] * len(en) + ["fr", "zh"]})


def scripted(messages: list[dict], body: dict) -> str:
    """A stand-in model for every prompt these generators send."""
    text = messages[-1]["content"]
    if text.startswith("Here is a conversation"):
        turn = text.count("ASSISTANT:")
        return f"Thanks. Could you give me example number {turn} of that?"
    if text.startswith("Who is likely to read"):
        words = re.findall(r"[A-Za-z]{5,}", text.split("Text:", 1)[1])
        return f"A reader interested in {words[0].lower() if words else 'many things'}."
    if text.startswith("You are A"):
        return f"\"Please help me plan my week around {text[6:40].strip()}.\""
    if "<document>" in text:
        doc = text.split("<document>\n", 1)[1].split("\n</document>", 1)[0]
        kind = re.search(r"Write one ([a-z-]+) question", text).group(1)
        return json.dumps({"question": f"What {kind} point does the text make about {doc.split()[0]}?",
                           "answer": doc[:80]})
    if text.startswith("Rate "):
        n = int(text.split()[1])
        shown = re.findall(r"<response \d+>\n(.*?)\n</response", text, re.DOTALL)
        aspect = len(re.search(r"Aspect: ([a-z ]+)", text).group(1))
        return json.dumps({"ratings": [{"rating": (len(r) + aspect) % 5 + 1, "rationale": "scripted"} for r in shown[:n]]})
    if "\n\nText:\n" in text:
        style = "wiki" if "Wikipedia" in text else "qa" if "Question:" in text else "plain"
        return f"<{style}>{text.split(chr(10) + 'Text:' + chr(10), 1)[1]}</{style}>"
    if body.get("seed", 0) % 2:
        return f"A short answer to: {text[:40]}"
    return f"A longer and more careful answer, step by step, to: {text[:60]}"


def magpie_instruction(prompt: str, body: dict) -> str:
    seed = body.get("seed", 0)
    if seed % 7 == 3:
        return "Hi there"  # too short
    if seed % 5 == 4:
        return "How do I bake bread at home?"  # the same instruction every time: duplicates
    topic = "photosynthesis" if "biology" in prompt else "budgets"
    return f"Explain {topic} to me, question number {seed}, in simple words."


class CompletionsServer(FaultServer):
    """The scripted chat server, plus raw text completions (POST /v1/completions), or a 404 for them."""

    def __init__(self, offers_completions: bool = True) -> None:
        super().__init__(scripted)
        self.offers_completions = offers_completions
        self.raw_prompts: list[str] = []

    async def _respond(self, request_line: str, body: dict, writer: asyncio.StreamWriter) -> bool:
        if "/completions" not in request_line or "/chat/completions" in request_line:
            return await super()._respond(request_line, body, writer)
        self.calls += 1
        if not self.offers_completions:
            self._send(writer, 404, '{"error": {"message": "Not Found"}}')
            return True
        self.raw_prompts.append(body["prompt"])
        text = magpie_instruction(body["prompt"], body)
        self._send(writer, 200, json.dumps({
            "id": "cmpl", "object": "text_completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "text": " " + text, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 5, "completion_tokens": len(text.split()), "total_tokens": 5 + len(text.split())}}))
        return True


@pytest.fixture(scope="module")
def server():
    with CompletionsServer() as s:
        yield s


def client_for(url: str) -> LLMClient:
    return LLMClient(EndpointConfig(base_url=url, model="scripted", max_retries=0, timeout_s=10, max_concurrency=16))


@pytest.fixture
def client(server):
    return client_for(server.url)


def books(split) -> dict[str, int]:
    return dict(split.rejected.group_by("reason").len().iter_rows()) if len(split.rejected) else {}


def test_magpie_writes_instructions_from_the_template_prefix_and_answers_them(server, client):
    split = Magpie(num_rows=20, system="You are a biology tutor.").run(pl.DataFrame({"id": []}, schema={"id": pl.String}), client)
    assert server.raw_prompts[-1] == "<|im_start|>system\nYou are a biology tutor.<|im_end|>\n<|im_start|>user\n"
    kept = split.kept
    # seeds 3, 10, 17 are too short; seeds 4, 9, 14, 19 say the same thing: the first is kept
    assert books(split) == {"too_short": 3, "duplicate": 3} and len(kept) == 14
    assert kept["instruction"].n_unique() == 14 and kept["instruction"].str.contains("photosynthesis").sum() == 13
    assert kept["output"].str.starts_with("A ").all() and (kept["input"] == "").all()
    assert set(PROVENANCE) <= set(kept.columns) and kept["gen_model"].unique().to_list() == ["scripted"]
    assert client.usage.requests == 20 + 14  # one raw completion per row, one chat answer per kept instruction
    calls = client.usage.calls
    again = Magpie(num_rows=20, system="You are a biology tutor.").run(pl.DataFrame({"id": []}, schema={"id": pl.String}), client)
    assert again.kept.equals(kept) and client.usage.calls == calls  # all from the cache
    seeds = pl.DataFrame({"id": ["s1", "s2"], "sys": ["You teach biology.", "You are an accountant."]})
    per_seed = Magpie(num_rows=2, system_field="sys", responses=False, template="llama3", seed=20).run(seeds, client).kept
    assert per_seed["gen_seed_id"].to_list() == ["s1", "s1", "s2", "s2"] and "output" not in per_seed.columns
    assert {p.split("\n\n")[1][:12] for p in server.raw_prompts[-3:]} == {"You teach bi", "You are an a"}
    assert server.raw_prompts[-1].startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou ")


def test_magpie_says_clearly_when_the_endpoint_has_no_raw_completions():
    with CompletionsServer(offers_completions=False) as chat_only:
        with pytest.raises(SluiceError, match=r"magpie needs raw text completions \(POST /v1/completions\).*does not offer"):
            Magpie(num_rows=3).run(pl.DataFrame({"id": []}, schema={"id": pl.String}), client_for(chat_only.url))
        assert chat_only.calls == 1  # one probe, not a batch of failing requests


def test_multi_turn_conversations_with_simulated_follow_ups(client):
    seeds = pl.read_ndjson(SEEDS).head(6).select("id", "instruction").with_columns(input=pl.lit(""))
    seeds = seeds.with_columns(pl.when(pl.col("id") == seeds["id"][2]).then(pl.col("instruction") + " [500]")
                               .otherwise(pl.col("instruction")).alias("instruction"))
    split = MultiTurn(turns=3, system="Be concise.").run(seeds, client)
    kept = split.kept
    assert len(kept) == 5 and kept["turns"].to_list() == [3] * 5
    roles = kept["messages"][0].struct.field("role").to_list()
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    first = kept.filter(pl.col("gen_seed_id") == seeds["id"][0])["messages"][0].to_list()
    assert first[1]["content"] == seeds["instruction"][0] and first[3]["content"].endswith("example number 1 of that?")
    assert (kept["parent_id"] == kept["gen_seed_id"]).all()
    assert books(split) == {"failed_server_error": 1}
    assert split.rejected["detail"][0].startswith("assistant turn 1: request")
    assert client.usage.requests == 6 + 5 * 2 + 5 * 2  # turn 1 for all, then a user and an assistant turn per round


def test_persona_instructions_from_given_personas_and_from_documents(client):
    given = pl.DataFrame({"id": ["p1", "p2"], "persona": ["A nurse working night shifts.", "A retired sailor."]})
    kept = PersonaInstruct(persona_field="persona", per_persona=2).run(given, client).kept
    assert len(kept) == 4 and kept["gen_seed_id"].to_list() == ["p1", "p1", "p2", "p2"]
    assert not kept["instruction"].str.starts_with('"').any()  # quotes stripped
    docs = documents()
    inferred = PersonaInstruct(text_field="text").run(docs, client).kept
    assert len(inferred) == len(docs) and inferred["persona"].str.starts_with("A reader interested in").all()
    with pytest.raises(ValueError, match="either persona_field"):
        PersonaInstruct(persona_field="a", text_field="b")


def test_document_qa_several_question_types_per_document(client):
    docs = documents().vstack(pl.DataFrame({"id": ["tiny"], "text": ["Too short to ask about."], "lang": ["en"]}))
    split = DocumentQA(question_types=["factual", "reasoning", "summary"], max_doc_chars=1500).run(docs, client)
    kept = split.kept
    assert len(kept) == 3 * (len(docs) - 1) and books(split) == {"short_document": 1}
    per_doc = kept.group_by("source_doc_id").agg(pl.col("question_type").sort())
    assert per_doc["question_type"].to_list() == [["factual", "reasoning", "summary"]] * (len(docs) - 1)
    assert (kept["source_doc_id"] == kept["gen_seed_id"]).all() and kept["output"].str.len_chars().min() > 0
    long_ids = docs.filter(pl.col("text").str.len_chars() > 1500)["id"]
    assert len(long_ids) and kept.filter(pl.col("source_doc_id").is_in(long_ids.implode()))["doc_truncated"].all()
    twice = DocumentQA(question_types=["factual"], per_type=2).run(docs.head(2), client)
    assert books(twice) == {"duplicate_question": 2}  # the scripted model asks the same question again


@pytest.mark.parametrize("lang", ["en", "fr", "zh"])
def test_chunks_stay_under_the_token_limit_and_keep_the_text(lang):
    text = documents().filter(pl.col("lang") == lang)["text"].str.join("\n\n")[0]
    parts = chunk(text, 120)
    assert len(parts) > 2
    assert count_tokens(pl.Series(parts)).max() <= 130  # a re-joined sentence boundary may add a token or two
    assert re.sub(r"\s+", "", "".join(parts)) == re.sub(r"\s+", "", text)


def test_rephrase_chunks_long_documents_and_rejoins_them_in_order(client):
    docs = documents()
    split = Rephrase(styles=["wikipedia", "qa"], chunk_tokens=200).run(docs, client)
    kept = split.kept
    assert len(kept) == 2 * len(docs) and set(kept["style"]) == {"wikipedia", "qa"}
    for row in kept.filter(pl.col("style") == "wikipedia").iter_rows(named=True):
        source = docs.filter(pl.col("id") == row["source_doc_id"])["text"][0]
        pieces = re.findall(r"<wiki>(.*?)</wiki>", row["text"], re.DOTALL)
        assert len(pieces) == row["chunks"] and re.sub(r"\s+", "", "".join(pieces)) == re.sub(r"\s+", "", source)
    assert kept["chunks"].max() > 3
    broken = docs.with_columns(pl.when(pl.col("id") == "doc1").then(pl.col("text") + "\n\nThe end [500].")
                               .otherwise(pl.col("text")).alias("text"))
    split = Rephrase(chunk_tokens=200).run(broken, client)
    assert books(split) == {"failed_server_error": 1} and len(split.kept) == len(docs) - 1
    assert re.match(r"chunk (\d+) of \1: request", split.rejected["detail"][0])  # the last chunk failed


def test_ultrafeedback_rates_n_responses_on_each_aspect_and_pairs_them(client):
    seeds = pl.read_ndjson(SEEDS).head(5).select("id", "instruction").with_columns(input=pl.lit(""))
    before = client.usage.requests
    split = UltraFeedback(samples=4).run(seeds, client)
    assert client.usage.requests - before == 5 * (4 + 4)  # 4 responses + 4 aspects per instruction
    rows = pl.concat([split.kept, split.rejected.drop("reason", "detail")], how="diagonal")
    assert len(rows) == 5 and rows["responses"].list.len().to_list() == [4] * 5
    for aspect in ("helpfulness", "honesty", "instruction_following", "truthfulness"):
        assert rows[f"ratings_{aspect}"].list.len().to_list() == [4] * 5
    for row in split.kept.iter_rows(named=True):
        assert row["score_chosen"] == max(row["score_overall"]) and row["score_rejected"] == min(row["score_overall"])
        assert row["chosen"] == row["responses"][row["score_overall"].index(row["score_chosen"])]
        assert row["chosen"] != row["rejected"]
    given = pl.DataFrame({"id": ["g"], "instruction": ["Name a prime."], "input": [""],
                          "answers": [["2", "Two is the smallest prime number.", "9"]]})
    before = client.usage.requests
    pair = UltraFeedback(responses_field="answers", aspects=["helpfulness"]).run(given, client)
    assert client.usage.requests - before == 1  # nothing sampled: one rating request for the three answers
    assert len(pair.kept) + len(pair.rejected) == 1
    same = given.with_columns(pl.Series("answers", [["Same answer.", "Same answer."]]))
    assert books(UltraFeedback(responses_field="answers", aspects=["honesty"]).run(same, client)) == {"no_preference": 1}
