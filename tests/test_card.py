"""The dataset card: a Hugging Face header `datasets` understands, and every section a reader needs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import ROOT, SHARED
from pipelines import config
from pipelines.card import dataset_card
from pipelines.flow import run_pipeline


def demo_release(root: Path, **length_filter: int) -> Path:
    """Publish the demo pipeline (real bundled web text) under `root`, with length_filter params overridden."""
    cfg = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    cfg["inputs"] = [s for s in cfg["inputs"] if "warc" not in s["path"]]  # the 80 extracted documents
    for source in cfg["inputs"]:
        source["path"] = str((ROOT / "configs" / source["path"]).resolve())
    cfg["release"]["dir"] = str(root)
    cfg["release"]["allow_empty"] = True  # some tests filter every row out on purpose
    # The cleaning core of the demo is enough here (and fast); its quality filters have tests of their own.
    cfg["stages"] = [s for s in cfg["stages"] if s["op"] in ("normalize", "length_filter", "exact_dedup")]
    next(s for s in cfg["stages"] if s["op"] == "length_filter").update(length_filter)
    path = root.parent / f"demo-{len(list(root.parent.glob('demo-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    folder, _ = run_pipeline(config.load(path), use_prefect=False)
    return folder


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return demo_release(tmp_path_factory.mktemp("card") / "releases")


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_card_header_is_hugging_face_yaml(release):
    header = _front_matter((release / "README.md").read_text())
    assert header["license"] == "apache-2.0"
    assert header["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]},
        {"config_name": "rejects", "data_files": [{"split": "train", "path": "rejects/*.parquet"}]},
    ]
    assert header["task_categories"] == ["text-generation"]
    assert header["size_categories"] == ["n<1K"] and header["pretty_name"] == "demo-web"
    assert header["tags"] == ["sluice", "pretraining"]


def test_card_says_what_went_in_and_what_came_out(release):
    card, m = (release / "README.md").read_text(), _manifest(release)
    assert "Real web text from Common Crawl pages" in card  # the config's description
    for source in m["inputs"]:
        assert f"`{source['sha256']}`" in card and f"`{source['path']}`" in card
    assert f"**{m['rows']} rows** in 2 Parquet shard(s)" in card
    assert "| 2 | length_filter | `length_filter` | field=\"text\", min_words=50, max_words=100000" in card
    assert f"`{m['fingerprints']['exact_dedup']}`" in card
    assert "| length_filter | 80 | 79 | 1 | `length_filter:too_few_words` 1 |" in card
    assert "Not decontaminated against evaluation benchmarks" in card
    assert "near-duplicates may remain" in card
    assert "## Generation" not in card  # nothing was generated
    assert m["config_hash"] in card and m["code_version"]["git_commit"] in card


def test_datasets_loads_the_release_through_the_card(release, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    m, ids = _manifest(release), pl.read_parquet(release / "data")["id"].to_list()
    # The folder itself, as a Hugging Face repo: the card's `configs` say where the data is.
    train = datasets.load_dataset(str(release), split="train", cache_dir=str(tmp_path / "hf"))
    assert train.num_rows == m["rows"] == 79 and train["id"] == ids
    assert {"id", "text", "source", "score_words_text"} <= set(train.column_names)
    rejects = datasets.load_dataset(str(release), "rejects", split="train", cache_dir=str(tmp_path / "hf"))
    assert rejects["reason"] == ["length_filter:too_few_words"]
    # The generic Parquet loader, as the card's snippet shows it.
    plain = datasets.load_dataset("parquet", data_files=str(release / "data" / "*.parquet"), split="train",
                                  cache_dir=str(tmp_path / "hf"))
    assert plain["id"] == ids


def test_polars_reads_the_release_as_the_card_says(release):
    frame = pl.read_parquet(release / "data" / "*.parquet")
    assert len(frame) == 79 and frame["id"].n_unique() == 79
    assert frame["score_words_text"].min() >= 50  # the length filter's bound holds in the data


def test_card_shows_generation_usage_and_synthetic_tag(release):
    m = _manifest(release)
    m["schema"]["gen_model"] = "String"
    m["generation"] = {"requests": 50, "cache_hits": 8, "calls": 43, "retries": 1, "failures": {"http_5xx": 1},
                       "cost": 0.0123, "models": {  # the shape of operators.generate.client.Usage.to_json()
        "SmolLM2-135M-Instruct": {"requests": 40, "prompt_tokens": 5_100, "completion_tokens": 9_800},
        "gpt-x": {"requests": 2, "prompt_tokens": 300, "completion_tokens": 120, "note": "ignored: not a number"},
    }}
    card = dataset_card(m)
    assert "synthetic" in _front_matter(card)["tags"]
    assert "| model | completion_tokens | prompt_tokens | requests |" in card
    assert "| `SmolLM2-135M-Instruct` | 9,800 | 5,100 | 40 |" in card
    assert "| **total** | 9,920 | 5,400 | 42 |" in card
    assert ("Requests: requests 50; cache hits 8; calls 43; retries 1; failed requests: http_5xx 1; cost $0.0123."
            in card)
    assert "Generated rows come from language models" in card


@pytest.mark.parametrize("rows, bucket", [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (52_002, "10K<n<100K"),
                                          (3_000_000, "1M<n<10M")])
def test_size_category(release, rows, bucket):
    m = _manifest(release) | {"rows": rows}
    assert _front_matter(dataset_card(m))["size_categories"] == [bucket]


def test_card_lists_the_languages_language_id_kept(write_config, tmp_path):
    lingua = SHARED / "langid" / "lingua" / "sentences"
    rows = [{"text": line} for lang, n in (("en", 30), ("de", 20), ("fr", 10))
            for line in (lingua / f"{lang}.txt").read_text().splitlines()[:n]]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    cfg = write_config([{"path": str(path)}], [{"op": "langid", "languages": ["en", "de"], "min_score": 0.5}])
    folder, _ = run_pipeline(config.load(cfg), use_prefect=False)
    stats = _manifest(folder)["stages"][-1]["stats"]
    assert list(stats["languages"])[:2] == ["en", "de"] and sum(stats["languages"].values()) >= 45
    assert stats["rejected_languages"].get("fr", 0) >= 8
    assert _front_matter((folder / "README.md").read_text())["language"] == list(stats["languages"])


def test_card_lists_instruction_filter_languages_and_describes_every_column(write_config, tmp_path):
    """instruction_filter identifies each output's language: the card lists those languages (not "Languages were
    not identified"), and every column its stages added has a meaning, as the operators declare them."""
    lingua = SHARED / "langid" / "lingua" / "sentences"
    rows = []
    for lang, n in (("en", 40), ("de", 20), ("zh", 12)):
        lines = (lingua / f"{lang}.txt").read_text().splitlines()[: 2 * n]
        rows += [{"instruction": q, "output": a} for q, a in zip(lines[::2], lines[1::2])]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    cfg = write_config([{"path": str(path), "fields": {"instruction": "instruction", "output": "output"},
                         "keep": "mapped"}],
                       [{"op": "instruction_filter", "input_field": None},
                        {"op": "decontaminate", "benchmarks": ["gsm8k"], "drop": False},
                        {"op": "cluster_sample", "budget": 60, "clusters": 4, "fields": ["instruction"], "dims": 16}])
    folder, _ = run_pipeline(config.load(cfg), use_prefect=False)
    m, card = _manifest(folder), (folder / "README.md").read_text()
    counted = next(s for s in m["stages"] if s["stage"] == "instruction_filter")["stats"]["languages"]
    assert counted["en"] >= 20 and counted["de"] >= 15 and counted["zh"] >= 8
    assert set(_front_matter(card)["language"]) == set(counted) - {"und"}
    assert "Languages were not identified" not in card
    assert "Languages were identified (the `language:` list above) but not filtered" in card
    notes = dict(re.findall(r"^\| `(\w+)` \| [^|]+ \| (.*) \|$", card, re.M))
    assert set(notes) == set(m["schema"]) and all(notes.values()), notes
    assert notes["lang_output"].startswith("language of `output`")
    assert notes["contamination"].startswith("the benchmark item") and notes["cluster"].startswith("k-means cluster")
    # where a stage rejects on a score, the card says so (decontaminate only flags here: drop is false)
    assert notes["score_words_output"] == "words in `output`; rejected below 1 (instruction_filter.min_words.output), " \
                                          "above 8000 (instruction_filter.max_words.output)"
    assert "rejected" not in notes["score_contamination"]
