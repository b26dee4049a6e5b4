"""Against the embedded model (SmolLM2-135M on llama.cpp, started once for this module): token counts equal
llama.cpp's own tokenizer on English, Chinese and code, and Magpie end to end over raw /v1/completions."""

from __future__ import annotations

import json
import urllib.request

import polars as pl
import pytest

from conftest import DCLM, SHARED
from operators.generate import EndpointConfig, LLMClient, Magpie
from operators.tokens import count_tokens, load_tokenizer
from pipelines.local_model import MODEL_NAME, LocalModel, LocalModelConfig

ZH = SHARED / "langid" / "lingua" / "sentences" / "zh.txt"
HUMANEVAL = SHARED / "benchmarks" / "humaneval" / "HumanEval.jsonl"


@pytest.fixture(scope="module")
def local_url():
    with LocalModel(LocalModelConfig(parallel=2, ctx_per_slot=512)) as url:
        yield url


def llama_tokens(base_url: str, text: str) -> list[int]:
    request = urllib.request.Request(base_url.removesuffix("/v1") + "/tokenize",
                                     json.dumps({"content": text, "add_special": False}).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["tokens"]


def test_token_counts_equal_llama_cpp_on_english_chinese_and_code(local_url):
    samples = {"en": [json.loads(line)["text"] for line in DCLM.read_text().splitlines()[:15]],
               "zh": ZH.read_text().splitlines()[:40],
               "code": [(r := json.loads(line))["prompt"] + r["canonical_solution"]
                        for line in HUMANEVAL.read_text().splitlines()[:15]]}
    tok = load_tokenizer()
    for lang, texts in samples.items():
        ours = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
        theirs = [llama_tokens(local_url, t) for t in texts]
        assert ours == theirs, lang  # the same ids, not only the same counts
        assert count_tokens(pl.Series(texts)).to_list() == [len(t) for t in theirs]


def test_magpie_end_to_end_on_the_embedded_model(local_url):
    client = LLMClient(EndpointConfig(base_url=local_url, model=MODEL_NAME, max_concurrency=2, timeout_s=300))
    split = Magpie(num_rows=2, max_tokens=40, response_max_tokens=24, min_words=1,
                   system="You are a helpful AI assistant named SmolLM, trained by Hugging Face").run(
        pl.DataFrame({"id": []}, schema={"id": pl.String}), client)
    rows = pl.concat([split.kept, split.rejected], how="diagonal")
    assert len(rows) == 2 and client.usage.requests >= 3  # 2 raw completions, then an answer per kept instruction
    # the model wrote instructions from the template prefix alone, stopped at its end-of-turn marker
    assert rows["instruction"].str.len_chars().min() > 0 and not rows["instruction"].str.contains("<|im_", literal=True).any()
    assert set(split.rejected["reason"].to_list()) <= {"failed_truncated", "too_short", "duplicate"}
    assert all(row["output"] for row in split.kept.iter_rows(named=True))
