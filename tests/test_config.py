"""Configs are validated before any work starts; errors name file, line, field path and value."""

from __future__ import annotations

import pytest

from conftest import GSM8K, ROOT
from operators.errors import ConfigError
from pipelines import config

GOOD_INPUT = {"path": str(GSM8K), "fields": {"text": "question"}}


def load_error(path) -> str:
    with pytest.raises(ConfigError) as err:
        config.load(path)
    return str(err.value)


def test_demo_config_is_valid_and_resolves_paths():
    pipeline = config.load(ROOT / "configs" / "demo.yaml")
    assert [s.name for s in pipeline.stages] == ["url_filter", "html_extract", "normalize", "length_filter", "langid",
                                                 "gopher_repetition", "gopher_quality", "bad_words", "exact_dedup",
                                                 "minhash_dedup", "decontaminate", "pii_redact"]
    assert len(pipeline.sources) == 10 and all(s.path.is_file() for s in pipeline.sources)
    assert pipeline.release_dir == ROOT / "data" / "releases"
    resolved = pipeline.resolved
    assert resolved["stages"][3] == {"name": "length_filter", "op": "length_filter", "field": "text",
                                     "min_words": 50, "max_words": 100000, "min_chars": 0, "max_chars": None}


def test_bad_parameter_type_names_line_field_and_value(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"""dataset: t
inputs:
  - path: {GSM8K}
    fields: {{text: question}}
stages:
  - op: normalize
  - op: length_filter
    min_words: lots
""")
    message = load_error(path)
    assert f"{path}:8: stages[1].min_words: Input should be a valid integer" in message
    assert "(got 'lots')" in message


def test_unknown_operator_suggests_the_close_name(write_config):
    path = write_config([GOOD_INPUT], [{"op": "lenght_filter"}])
    message = load_error(path)
    assert "stages[0].op: unknown operator 'lenght_filter'; did you mean 'length_filter'?" in message


def test_unknown_fields_list_what_is_allowed(write_config):
    path = write_config([GOOD_INPUT | {"feilds": {}}], [{"op": "length_filter", "min_word": 3}])
    message = load_error(path)
    assert "inputs[0].feilds: unknown field; allowed: path, format, fields, optional, source, on_error" in message
    assert "stages[0].min_word: unknown field; allowed: field, min_words, max_words, min_chars, max_chars" in message


def test_every_problem_is_reported_at_once(write_config, tmp_path):
    path = write_config(
        [{"path": str(tmp_path / "missing-*.jsonl")}, GOOD_INPUT | {"on_error": "ignore"}],
        [{"op": "length_filter", "min_words": 10, "max_words": 5}],
        shard_rows=0,
    )
    message = load_error(path)
    assert "shard_rows: Input should be greater than or equal to 1 (got 0)" in message
    assert "inputs[1].on_error: Input should be 'fail' or 'skip' (got 'ignore')" in message
    path = write_config([{"path": str(tmp_path / "missing-*.jsonl")}],
                        [{"op": "length_filter", "min_words": 10, "max_words": 5}])
    message = load_error(path)
    assert "inputs[0].path: no input file matches" in message
    assert "stages[0]: max_words (5) is below min_words (10)" in message


def test_missing_required_fields_and_bad_dataset_name(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: 'no spaces allowed'\nstages: []\n")
    message = load_error(path)
    assert "inputs: required field is missing" in message
    assert "dataset: String should match pattern" in message


def test_invalid_yaml_and_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dataset: t\ninputs: [\n  - path: x\n")
    assert f"{path}:3: invalid YAML" in load_error(path) or f"{path}:4: invalid YAML" in load_error(path)
    assert "config file not found" in load_error(tmp_path / "none.yaml")


def test_optional_must_name_a_mapped_field(write_config):
    path = write_config([GOOD_INPUT | {"optional": ["input"]}])
    assert "inputs[0].optional: 'input' is not a mapped field" in load_error(path)


def test_keep_and_drop_on_an_input_are_checked(write_config):
    path = write_config([GOOD_INPUT | {"keep": "some"}])
    assert "inputs[0].keep: Input should be 'all' or 'mapped' (got 'some')" in load_error(path)
    path = write_config([GOOD_INPUT | {"keep": "mapped", "drop": ["meta"]}])
    assert "inputs[0].drop: keep: mapped already leaves out every unmapped field" in load_error(path)
    mapped_field = next(iter(GOOD_INPUT["fields"].values()))
    path = write_config([GOOD_INPUT | {"drop": ["meta", mapped_field]}])
    assert f"inputs[0].drop: {mapped_field!r} is mapped to" in load_error(path)
    source = config.load(write_config([GOOD_INPUT | {"drop": ["meta"]}])).sources[0]
    assert source.keep == "all" and source.drop == ("meta",)


def test_repeated_operators_get_distinct_stage_names(write_config):
    path = write_config([GOOD_INPUT], [{"op": "length_filter"}, {"op": "length_filter", "min_words": 5}])
    assert [s.name for s in config.load(path).stages] == ["length_filter", "length_filter_2"]
