"""Language ID (fastText lid.176 from its PyPI package), instruction-data rules, the LLM-judge threshold
and the `sluice filter` verb, on real multilingual sentences, Alpaca rows and DCLM pages."""

from __future__ import annotations

import json

import polars as pl
import pytest

from conftest import DCLM, SHARED
from operators.errors import SluiceError
from operators.quality import InstructionFilter, JudgeFilter, LanguageId, LengthFilter
from operators.quality.langid import identify, lid_model_path

LINGUA = SHARED / "langid" / "lingua" / "sentences"
LANGS = ["en", "de", "fr", "es", "ru", "zh", "ja", "ar", "hi", "th", "sw", "fi"]


def test_lid_model_comes_from_the_installed_package():
    path = lid_model_path()
    assert path.name == "lid.176.ftz" and path.stat().st_size > 900_000 and "site-packages" in str(path)


def test_language_id_is_right_on_real_sentences_in_many_scripts():
    rows = [(lang, line) for lang in LANGS
            for line in (LINGUA / f"{lang}.txt").read_text().splitlines()[:60] if line.strip()]
    frame = pl.DataFrame(rows, schema=["gold", "text"], orient="row")
    lang, score = identify(frame["text"])
    accuracy = frame.with_columns(lang=lang).group_by("gold").agg((pl.col("lang") == pl.col("gold")).mean())
    assert accuracy["lang"].mean() >= 0.95 and accuracy["lang"].min() >= 0.8, accuracy.sort("lang")
    assert score.min() >= 0 and score.max() <= 1


def test_langid_filter_keeps_languages_and_counts_the_rest():
    texts = {"en": "The weather was warm and the children played in the park all afternoon.",
             "de": "Das Wetter war warm und die Kinder spielten den ganzen Nachmittag im Park.",
             "fr": "Il faisait chaud et les enfants ont joué dans le parc tout l'après-midi.",
             "digits": "12345 67890 !!!", "empty": "", "multi": "First line of English text.\nSecond line here."}
    batch = pl.DataFrame({"id": list(texts), "text": list(texts.values())})
    kept, rejected = LanguageId(languages=["en", "de"]).process(batch)
    assert sorted(kept["id"]) == ["de", "en", "multi"]
    assert dict(zip(rejected["id"], rejected["reason"])) == {
        "fr": "wrong_language", "digits": "low_language_score", "empty": "low_language_score"}
    assert rejected.filter(pl.col("id") == "digits")["lang"].item() == "und"
    assert {"lang", "lang_score"} <= set(kept.columns)
    anything = LanguageId(languages=None, min_score=0.5).process(batch)
    assert len(anything.kept) == 4


def test_langid_on_long_documents_in_rare_languages():
    udhr = pl.read_ndjson(SHARED / "langid" / "udhr" / "udhr.jsonl")
    sample = udhr.filter(pl.col("iso6393").is_in(["eng", "deu", "spa", "rus", "jpn", "tha", "swh", "isl"]))
    lang, _ = identify(sample["text"])
    expected = {"eng": "en", "deu": "de", "spa": "es", "rus": "ru", "jpn": "ja", "tha": "th", "swh": "sw", "isl": "is"}
    assert [expected[c] for c in sample["iso6393"]] == lang.to_list()


def alpaca_rows(alpaca: list[dict], ids: list[int]) -> pl.DataFrame:
    return pl.DataFrame([alpaca[i] for i in ids]).with_columns(pl.Series("id", [str(i) for i in ids]))


def test_instruction_rules_on_real_alpaca_rows(alpaca):
    picks = {
        "refusal": next(i for i, r in enumerate(alpaca) if r["output"].startswith("Sorry, I can't")),
        "echo": next(i for i, r in enumerate(alpaca) if r["output"].strip() == r["instruction"].strip()),
        "same": next(i for i, r in enumerate(alpaca) if r["input"] and r["input"].strip() == r["output"].strip()),
        "empty": next(i for i, r in enumerate(alpaca) if not r["output"].strip()),
    }
    good = list(range(20))
    batch = alpaca_rows(alpaca, good + list(picks.values()))
    kept, rejected = InstructionFilter().process(batch)
    reasons = dict(zip(rejected["id"], rejected["reason"]))
    assert reasons == {str(picks["refusal"]): "refusal", str(picks["echo"]): "echoed_instruction",
                       str(picks["same"]): "input_equals_output", str(picks["empty"]): "empty_output"}
    assert len(kept) == len(good)


def test_instruction_rules_on_made_up_failures():
    rows = {
        "ai": ("Tell me a joke.", "As an AI language model, I do not have a sense of humor."),
        "cut": ("Describe the water cycle.", " ".join(["Water evaporates from the sea and rises into the sky."] * 5)
                + " Then the vapour cools and forms clouds which are carried by the wind over the"),
        "fence": ("Write a Python function that adds two numbers.", "```python\ndef add(a, b):\n    return a + b"),
        "mismatch": ("Explain in a few sentences why the sky is blue during the day.",
                     "Der Himmel ist blau, weil das Sonnenlicht an den Molekülen der Luft gestreut wird."),
        "translation": ("Translate into German: the sky is blue because sunlight is scattered by the air.",
                        "Der Himmel ist blau, weil das Sonnenlicht von der Luft gestreut wird."),
        "fixed_case": ("Capitalise the sentence.", "The sky is blue."),
    }
    batch = pl.DataFrame({"id": list(rows), "instruction": [r[0] for r in rows.values()],
                          "input": ["the sky is blue."] * len(rows), "output": [r[1] for r in rows.values()]})
    kept, rejected = InstructionFilter().process(batch)
    assert dict(zip(rejected["id"], rejected["reason"])) == {
        "ai": "refusal", "cut": "truncated", "fence": "truncated", "mismatch": "language_mismatch"}
    assert sorted(kept["id"]) == ["fixed_case", "translation"]
    no_lang = InstructionFilter(language_mismatch=False).process(batch)
    assert "mismatch" in no_lang.kept["id"].to_list() and "score_instr_lang_match" not in no_lang.kept.columns


def test_judge_filter_thresholds_an_existing_score_and_keeps_it():
    batch = pl.DataFrame({"id": ["a", "b", "c", "d"], "score_judge_accuracy": [5, 4, None, 3]})
    kept, rejected = JudgeFilter().process(batch)
    assert kept["id"].to_list() == ["a"] and "score_judge_accuracy" in kept.columns
    assert dict(zip(rejected["id"], rejected["reason"])) == {"b": "low_judge_score", "c": "no_judge_score",
                                                             "d": "low_judge_score"}
    assert len(JudgeFilter(min_score=4).process(batch).kept) == 2
    with pytest.raises(SluiceError, match="run the `judge` stage"):
        JudgeFilter().process(batch.drop("score_judge_accuracy"))


def test_sluice_filter_default_rules_on_dclm_pages(sluice, tmp_path):
    out = tmp_path / "web.parquet"
    code, stdout, _ = sluice("filter", DCLM, out)
    assert code == 0
    kept, rejects = pl.read_parquet(out), pl.read_parquet(tmp_path / "web.rejects.parquet")
    total = len(DCLM.read_text().splitlines())
    assert len(kept) + len(rejects) == total
    stages = {r.split(":")[0] for r in rejects["reason"]}
    assert stages <= {"read", "langid", "gopher_repetition", "gopher_quality", "c4", "fineweb"} and len(stages) >= 4
    assert {"lang", "score_gopher_words", "score_c4_sentences", "score_fineweb_line_punct_ratio", "label"} <= set(kept.columns)
    assert f"wrote {len(kept):,} rows" in stdout


def test_sluice_filter_instruction_rules_and_settings(sluice, tmp_path, alpaca):
    src = tmp_path / "alpaca.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in alpaca[:300] + [alpaca[i] for i in (34, 1270)]))
    out = tmp_path / "out.jsonl"
    code, stdout, _ = sluice("filter", src, out, "--rules", "instruction",
                             "--set", "instruction.language_mismatch=false", "--set", "instruction_filter.min_words="
                             '{"output": 30}')
    assert code == 0, stdout
    rejects = pl.read_parquet(tmp_path / "out.rejects.parquet")
    assert "instruction_filter:too_short_output" in set(rejects["reason"])
    assert len(out.read_text().splitlines()) + len(rejects) == 302


@pytest.mark.parametrize("args, message", [
    (["--rules", "gopher_qualty"], "did you mean 'gopher_quality'"),
    (["--rules", "c4", "--set", "c4.min_sentences=many"], "c4: min_sentences"),
    (["--rules", "c4", "--set", "fineweb.max_newline_ratio=1"], "not among --rules"),
    (["--rules", "c4", "--set", "c4"], "expected RULE.PARAM=VALUE"),
])
def test_sluice_filter_bad_usage_exits_2_with_a_message(sluice, tmp_path, args, message):
    code, _, stderr = sluice("filter", DCLM, tmp_path / "out.parquet", *args)
    assert code == 2 and message in stderr


def test_length_limits_count_words_in_scripts_without_spaces():
    """A Chinese, Japanese or Thai sentence is many words, not one: each of their characters counts."""
    texts = {lang: (LINGUA / f"{lang}.txt").read_text().splitlines()[:50] for lang in ("zh", "ja", "th")}
    batch = pl.DataFrame({"id": [f"{lang}{i}" for lang, lines in texts.items() for i in range(len(lines))],
                          "text": [line for lines in texts.values() for line in lines]})
    kept, rejected = LengthFilter(min_words=5).process(batch)
    assert len(rejected) <= 3, rejected.select("text", "score_words_text")  # only genuinely tiny lines
    instruction = pl.DataFrame({"id": ["zh"], "instruction": ["解释光合作用"], "input": [""],
                                "output": ["光合作用是植物利用阳光把二氧化碳和水变成糖和氧气的过程。"]})
    assert len(InstructionFilter().process(instruction).kept) == 1  # was too_short_instruction (one "word")
