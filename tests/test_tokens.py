"""Token counts with a real tokenizer: the embedded model's vocabulary rebuilt from its GGUF, a tokenizer.json
the user names, the `token_count` stage and `mix` budgets in tokens. (Equality with llama.cpp's own
tokenizer on English, Chinese and code is checked against the running server in test_generate_local.py.)"""

from __future__ import annotations

import json

import polars as pl
import pytest

from conftest import DCLM, SHARED
from operators.diversity import Mix, mixture
from operators.errors import ConfigError
from operators.tokens import DEFAULT_TOKENIZER, TokenCount, count_tokens, gguf_metadata, embedded_gguf, load_tokenizer

ZH = SHARED / "langid" / "lingua" / "sentences" / "zh.txt"
HUMANEVAL = SHARED / "benchmarks" / "humaneval" / "HumanEval.jsonl"


def texts() -> dict[str, list[str]]:
    return {"en": [json.loads(line)["text"] for line in DCLM.read_text().splitlines()[:40]],
            "zh": ZH.read_text().splitlines()[:200],
            "code": [(r := json.loads(line))["prompt"] + r["canonical_solution"] for line in HUMANEVAL.read_text().splitlines()[:60]]}


def test_the_embedded_vocabulary_is_read_from_the_gguf():
    meta = gguf_metadata(embedded_gguf())
    tok = load_tokenizer()
    assert meta["tokenizer.ggml.model"] == "gpt2" and tok.get_vocab_size() == len(meta["tokenizer.ggml.tokens"]) == 49152
    assert tok.encode("<|im_start|>user\nHi<|im_end|>", add_special_tokens=False).ids[0] == 1  # a special token is one
    for sample in texts().values():  # decoding gives the text back: the byte-level BPE is complete
        assert [tok.decode(e.ids) for e in tok.encode_batch(sample, add_special_tokens=False)] == sample


def test_counts_per_language_and_a_tokenizer_json_the_user_names(tmp_path):
    by_lang = texts()
    counts = {lang: count_tokens(pl.Series(sample)) for lang, sample in by_lang.items()}
    chars = {lang: sum(map(len, sample)) for lang, sample in by_lang.items()}
    # An English vocabulary: ~4 characters a token in English, under 1 in Chinese (bytes of rare characters)
    assert 3.5 < chars["en"] / counts["en"].sum() < 5.5
    assert chars["zh"] / counts["zh"].sum() < 1.0
    assert 2 < chars["code"] / counts["code"].sum() < 5
    saved = tmp_path / "tokenizer.json"
    load_tokenizer().save(str(saved))
    for sample in by_lang.values():
        assert count_tokens(pl.Series(sample), str(saved)).equals(count_tokens(pl.Series(sample)))
    assert count_tokens(pl.Series(["", None, "a b"])).to_list() == [0, 0, 2]
    with pytest.raises(ConfigError, match="nope.json: no such tokenizer file"):
        count_tokens(pl.Series(["x"]), str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a tokenizer"}')
    with pytest.raises(ConfigError, match="bad.json: not a Hugging Face tokenizer.json"):
        count_tokens(pl.Series(["x"]), str(bad))
    with pytest.raises(ConfigError, match="fake.gguf: not a readable GGUF file"):
        (fake := tmp_path / "fake.gguf").write_bytes(b"GGML" + bytes(40))
        count_tokens(pl.Series(["x"]), str(fake))


def test_token_count_stage_counts_text_and_chat_columns():
    rows = pl.DataFrame({"id": ["a", "b"], "text": ["Hello world", None],
                         "messages": [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], []]})
    kept, rejected = TokenCount(fields=["messages"]).process(rows)
    tok = load_tokenizer()
    assert kept["tokens"].to_list() == [len(tok.encode("Hi\nHello!", add_special_tokens=False).ids), 0]
    assert TokenCount().map(rows)["tokens"].to_list() == [2, 0] and not len(rejected)
    stats = TokenCount().stats(TokenCount().map(rows).lazy(), rows.clear().lazy())
    assert stats["tokens"] == 2 and stats["tokenizer"] == DEFAULT_TOKENIZER and stats["vocab_size"] == 49152
    with pytest.raises(ConfigError, match="no column 'body'"):
        TokenCount(fields=["body"]).map(rows)


def test_mix_budget_in_tokens_counts_with_the_tokenizer():
    by_lang = texts()
    frame = pl.DataFrame({"id": [f"{lang}{i}" for lang, s in by_lang.items() for i in range(len(s))],
                          "text": [t for s in by_lang.values() for t in s],
                          "source": [lang for lang, s in by_lang.items() for _ in s]})
    op = Mix(ratios={"en": 1, "zh": 1}, unit="tokens", total=6000)
    drops = op.decide(op.index(frame))
    kept = frame.filter(~pl.col("id").is_in(drops.drops["id"].implode()))
    mix = mixture(kept, ["text"])
    for lang in ("en", "zh"):  # each source filled to within one row of its 3,000-token share, never over
        assert 3000 - 400 < mix[lang]["tokens"] <= 3000
    assert mix["en"]["tokens"] == count_tokens(kept.filter(pl.col("source") == "en")["text"]).sum()
    words = Mix(ratios={"en": 1, "zh": 1}, unit="words", total=6000)  # the word proxy is still there, and differs
    kept_words = frame.filter(~pl.col("id").is_in(words.decide(words.index(frame)).drops["id"].implode()))
    assert mixture(kept_words, ["text"])["zh"]["tokens"] > 3000 * 1.3
