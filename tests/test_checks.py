"""A config is checked before any work starts: every stage is a kind the engine runs, a generator has an LLM,
and every column a stage reads comes from the inputs or an earlier stage; each problem names FILE:LINE."""

from __future__ import annotations

import importlib.util

import pytest
import yaml

from conftest import GSM8K, TRUTHFULQA
from operators.errors import ConfigError
from pipelines import config

ENDPOINT = {"base_url": "http://127.0.0.1:9/v1", "model": "m"}


def load(tmp_path, stages, inputs=None, **extra):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"dataset": "d", "inputs": inputs or [{"path": str(GSM8K), "fields": {"text": "question"}}],
                                    "stages": stages} | extra, sort_keys=False))
    return path, lambda: config.load(path)


def problems(tmp_path, stages, **kwargs) -> list[str]:
    path, run = load(tmp_path, stages, **kwargs)
    with pytest.raises(ConfigError) as err:
        run()
    return [line.strip() for line in str(err.value).splitlines()[1:]]


def test_a_column_no_input_or_stage_provides_is_named_with_its_line(tmp_path, sluice):
    found = problems(tmp_path, [{"op": "normalize", "fields": ["text", "answer"]},
                                {"op": "exact_dedup", "fields": ["txt"]}])
    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path / 'c.yaml'}:") and "stages[1].fields" in found[0]
    assert "'txt'" in found[0] and "'answer'" in found[0]  # GSM8K's own column is known without a mapping
    line = int(found[0].split(":")[1])
    assert (tmp_path / "c.yaml").read_text().splitlines()[line - 1].strip().startswith("- txt")
    code, _, err = sluice("run", tmp_path / "c.yaml", "--no-prefect")
    assert code == 2 and "stages[1].fields" in err and not (tmp_path / "releases").exists()


def test_a_stage_limited_to_languages_needs_a_language_column(tmp_path):
    found = problems(tmp_path, [{"op": "length_filter", "min_words": 3, "languages": ["en"]},
                                {"op": "langid"}, {"op": "gopher_quality", "languages": ["en"]}])
    assert len(found) == 1 and "stages[0].languages" in found[0] and "'lang'" in found[0]


def test_columns_earlier_stages_write_are_provided(tmp_path):
    _, run = load(tmp_path, [{"op": "length_filter", "field": "text", "min_words": 1},
                             {"op": "exact_dedup", "fields": ["text", "score_words_text"]}],
                  inputs=[{"path": str(TRUTHFULQA), "fields": {"text": "Question"}}])
    assert len(run().stages) == 2  # CSV header known, the length filter's score column provided


def test_generator_stages_replace_or_extend_the_columns(tmp_path, monkeypatch):
    seeds = [{"path": str(GSM8K), "fields": {"instruction": "question"}}]
    kept = [{"op": "responses"}, {"op": "judge"}, {"op": "judge_filter"},
            {"op": "exact_dedup", "fields": ["instruction", "output", "answer"]}]
    _, run = load(tmp_path, kept, inputs=seeds, endpoint=ENDPOINT)
    assert len(run().stages) == 4  # answers and judge keep the seed columns and add theirs
    found = problems(tmp_path, [{"op": "self_instruct", "instances": False}, {"op": "exact_dedup", "fields": ["answer"]}],
                     inputs=seeds, endpoint=ENDPOINT)
    assert len(found) == 1 and "stages[1].fields" in found[0] and "'answer'" in found[0]  # new rows, new columns


def test_a_generator_without_an_llm_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("SLUICE_MODEL", raising=False)
    seeds = [{"path": str(GSM8K), "fields": {"instruction": "question"}}]
    found = problems(tmp_path, [{"op": "responses"}], inputs=seeds, endpoint={"base_url": "http://127.0.0.1:9/v1"})
    assert len(found) == 1 and "stages[0].op" in found[0] and "endpoint.model" in found[0]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "xllamacpp" else real(name, *a))
    found = problems(tmp_path, [{"op": "normalize", "fields": ["instruction"]}, {"op": "responses"}], inputs=seeds)
    assert len(found) == 1 and "stages[1].op" in found[0] and "embedded model is not installed" in found[0]
