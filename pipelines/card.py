"""The dataset card: the release's README.md, Hugging Face style (YAML header, then what went in and out).

Everything comes from the manifest, so the card of a published version can be rebuilt at any time.
Optional manifest keys shown when present: `generation` (see `generation_usage`), `column_notes` (column -> what
it means, as each stage's operator declares it in `Operator.columns()`).
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.accounting import Ledger

PROVENANCE = ("source", "gen_model", "gen_template", "gen_params", "gen_seed_id", "parent_id")
COLUMN_NOTES = {
    "id": "stable row id (unique in the release)",
    "source": "where the row came from (input file or label)",
    "text": "document text", "instruction": "the task", "input": "optional task input", "output": "the answer",
    "messages": "conversation turns {role, content}", "prompt": "prompt", "chosen": "preferred response",
    "rejected": "dispreferred response", "lang": "detected language",
    "gen_model": "model that generated the row", "gen_template": "hash of the prompt template",
    "gen_params": "sampling parameters", "gen_seed_id": "id of the seed row", "parent_id": "row this one evolved from",
    # what the raw-document readers (pipelines/sources.py) add
    "url": "address of the page (WARC-Target-URI)", "date": "when the page was fetched (WARC-Date)",
    "content_type": "the page's HTTP Content-Type", "html": "the page's HTML", "path": "file the row was read from",
    "page": "page number in the PDF", "pages": "pages in the PDF", "line": "line number in the file",
}


def dataset_card(manifest: dict[str, Any]) -> str:
    sections = [_header(manifest), _summary(manifest), _loading(manifest), _schema(manifest), _inputs(manifest),
                _stages(manifest), _accounting(manifest), _languages_section(manifest), _generation(manifest),
                _limitations(manifest),
                _provenance(manifest)]
    return "\n\n".join(s for s in sections if s) + "\n"


def _release(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest.get("config", {}).get("release", {})


def _header(manifest: dict[str, Any]) -> str:
    lines = ["---", f"license: {_release(manifest).get('license', 'other')}", "configs:",
             "- config_name: default", "  data_files:", "  - split: train", "    path: data/*.parquet"]
    if manifest.get("rejects"):
        lines += ["- config_name: rejects", "  data_files:", "  - split: train", "    path: rejects/*.parquet"]
    if languages := _languages(manifest):
        lines += ["language:", *(f"- {code}" for code in languages)]
    lines += ["task_categories:", "- text-generation", f"size_categories:\n- {_size_category(manifest['rows'])}",
              f"pretty_name: {json.dumps(manifest['dataset'])}", "tags:", "- sluice",
              *(f"- {tag}" for tag in _tags(manifest["schema"])), "---"]
    return "\n".join(lines)


def _languages(manifest: dict[str, Any]) -> list[str]:
    """The languages of the released rows, as the last stage that identified them counted them in its stats
    (langid; instruction_filter: the outputs' languages), `und` left out."""
    counted = [s["stats"]["languages"] for s in manifest.get("stages", []) if "languages" in s.get("stats", {})]
    return [code for code in counted[-1] if code != "und"] if counted else []


def _size_category(rows: int) -> str:
    """The Hugging Face size bucket: n<1K, 1K<n<10K, ... 1T<n."""
    bounds = ["1K", "10K", "100K", "1M", "10M", "100M", "1B", "10B", "100B", "1T"]
    for i, bound in enumerate(bounds):
        if rows < _count(bound):
            return f"n<{bound}" if i == 0 else f"{bounds[i - 1]}<n<{bound}"
    return "1T<n"


def _count(bound: str) -> int:
    return int(bound[:-1]) * {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}[bound[-1]]


def _tags(schema: dict[str, str]) -> list[str]:
    tags = []
    if "text" in schema:
        tags.append("pretraining")
    if "instruction" in schema or "messages" in schema:
        tags.append("instruction-tuning")
    if {"chosen", "rejected"} <= schema.keys():
        tags.append("preference")
    if "gen_model" in schema:
        tags.append("synthetic")
    return tags


def _summary(manifest: dict[str, Any]) -> str:
    size = sum(s["bytes"] for s in manifest["shards"])
    lines = [f"# {manifest['dataset']} {manifest['version']}"]
    if description := _release(manifest).get("description"):
        lines.append(f"\n{description}")
    lines.append(
        f"\n**{manifest['rows']:,} rows** in {len(manifest['shards'])} Parquet shard(s) under `data/` "
        f"({human_bytes(size)}, zstd). {manifest['rejected_rows']:,} rejected rows are kept with the reason for each "
        f"under `rejects/`. Plots of lengths, scores and drops are in `report.html`; `manifest.json` has every "
        f"checksum (`sluice release verify` re-checks them)."
    )
    return "\n".join(lines)


def _loading(manifest: dict[str, Any]) -> str:
    return (
        "## Loading\n\n```python\n"
        'from datasets import load_dataset\nds = load_dataset("parquet", data_files="data/*.parquet", split="train")\n\n'
        'import polars as pl\ndf = pl.read_parquet("data/*.parquet")\n```'
    )


def _schema(manifest: dict[str, Any]) -> str:
    notes = manifest.get("column_notes") or {}
    limits = _limits(manifest)
    rows = [(f"`{name}`", _short_type(dtype), "; ".join(filter(None, (_column_note(name, notes), limits.get(name)))))
            for name, dtype in manifest["schema"].items()]
    return "## Columns\n\n" + _table(("column", "type", "meaning"), rows)


def _short_type(dtype: str) -> str:
    """`Struct({...16 fields...})` is unreadable in a table: keep the outer type."""
    return dtype if len(dtype) <= 40 else dtype.split("(", 1)[0] + "(...)"


def _limits(manifest: dict[str, Any]) -> dict[str, str]:
    """score column -> "rejected below 50 (gopher_quality.min_words), above ..." from manifest["thresholds"]."""
    said: dict[str, list[str]] = {}
    for t in manifest.get("thresholds", []):
        where = "below" if t["side"] == "min" else "above"
        said.setdefault(t["column"], []).append(f"{where} {t['value']:g} ({t['stage']}.{t['param']})")
    return {column: "rejected " + ", ".join(parts) for column, parts in said.items()}


def _column_note(name: str, declared: dict[str, str]) -> str:
    if name in declared:
        return declared[name]
    if name in COLUMN_NOTES:
        return COLUMN_NOTES[name]
    if name.startswith("score_"):
        return "score computed by a pipeline stage (kept for re-thresholding)"
    return "from the input, or from a stage that does not describe its columns"


def _inputs(manifest: dict[str, Any]) -> str:
    rows = [(f"`{i['path']}`", i.get("source") or "", f"{i['rows']:,}", f"`{i['sha256']}`") for i in manifest["inputs"]]
    return "## Sources\n\n" + _table(("file", "source", "rows read", "sha256"), rows)


def _stages(manifest: dict[str, Any]) -> str:
    stages = manifest.get("config", {}).get("stages", [])
    if not stages:
        return "## Pipeline\n\nNo stages: the inputs were published as read."
    fingerprints = manifest.get("fingerprints", {})
    rows = []
    for i, stage in enumerate(stages, 1):
        params = ", ".join(f"{k}={json.dumps(v)}" for k, v in stage.items() if k not in ("name", "op"))
        rows.append((str(i), stage["name"], f"`{stage['op']}`", params or "-", f"`{fingerprints.get(stage['name'], '')}`"))
    return "## Pipeline\n\n" + _table(("#", "stage", "operator", "parameters", "fingerprint"), rows)


def _accounting(manifest: dict[str, Any]) -> str:
    ledger = Ledger.from_json(manifest["stages"])
    rows = []
    for s in ledger.stages:
        rows.append((s.stage, f"{s.rows_in:,}", f"{s.rows_out:,}", f"{sum(s.dropped.values()):,}", s.reasons("`")))
    return ("## Row accounting\n\nEvery stage balances: rows in (+ copies added by up-sampling) = rows out + rows "
            "dropped.\n\n"
            + _table(("stage", "rows in", "rows out", "dropped", "reasons"), rows))


def language_table(manifest: dict[str, Any], top: int = 15) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """(header, rows) of rows and drops per language: rows when the language was first counted, rows each
    stage dropped (stages that dropped any), rows released; the `top` largest languages, the rest summed."""
    stages = [s for s in Ledger.from_json(manifest["stages"]).stages if s.languages]
    if not stages:
        return (), []
    first, last = stages[0].languages, stages[-1].languages
    dropping = [s for s in stages if any(n["dropped"] for n in s.languages.values())]
    langs = sorted(first, key=lambda lang: -first[lang]["out"] - first[lang]["dropped"])
    if len(langs) > top:
        langs = langs[:top - 1] + [langs[top - 1:]]
    rows = []
    for lang in langs:
        group = lang if isinstance(lang, list) else [lang]
        total = sum(first[g]["out"] + first[g]["dropped"] for g in group)
        drops = [sum(s.languages.get(g, {}).get("dropped", 0) for g in group) for s in dropping]
        released = sum(last.get(g, {}).get("out", 0) for g in group)
        name = f"other ({len(group)})" if isinstance(lang, list) else lang
        rows.append((name, f"{total:,}", *(f"{d:,}" for d in drops), f"{released:,}",
                     f"{released / total:.1%}" if total else "-"))
    return ("language", "rows in", *(f"{s.stage} dropped" for s in dropping), "released", "kept"), rows


def _languages_section(manifest: dict[str, Any]) -> str:
    header, rows = language_table(manifest)
    if not rows:
        return ""
    return ("## Languages\n\nRows per language (the `lang` column) from the first stage that had it to the release, "
            "and what each stage dropped:\n\n" + _table(header, rows))


def generation_usage(manifest: dict[str, Any]) -> dict[str, dict[str, int | float]]:
    """`manifest["generation"]["models"]`: model -> counters (prompt_tokens, completion_tokens, calls, ...)."""
    models = (manifest.get("generation") or {}).get("models") or {}
    return {name: {k: v for k, v in counters.items() if isinstance(v, int | float)} for name, counters in models.items()}


def generation_totals(manifest: dict[str, Any]) -> list[str]:
    """The job-level counters of `manifest["generation"]` (as `Usage.to_json()` writes them), as short phrases."""
    gen = manifest.get("generation") or {}
    phrases = [f"{k.replace('_', ' ')} {v:,}" for k, v in gen.items()
               if isinstance(v, int) and not isinstance(v, bool)]
    if failures := {k: v for k, v in (gen.get("failures") or {}).items() if v}:
        phrases.append("failed requests: " + ", ".join(f"{k} {v:,}" for k, v in failures.items()))
    if isinstance(gen.get("cost"), int | float):
        phrases.append(f"cost ${gen['cost']:,.4f}")
    return phrases


def _generation(manifest: dict[str, Any]) -> str:
    usage = generation_usage(manifest)
    if not usage:
        return ""
    counters = sorted({k for c in usage.values() for k in c})
    rows = [(f"`{model}`", *(f"{c.get(k, 0):,}" for k in counters)) for model, c in sorted(usage.items())]
    if len(usage) > 1:
        rows.append(("**total**", *(f"{sum(c.get(k, 0) for c in usage.values()):,}" for k in counters)))
    totals = generation_totals(manifest)
    return ("## Generation\n\nRows made by language models, and what they cost:\n\n" + _table(("model", *counters), rows)
            + (f"\n\nRequests: {'; '.join(totals)}." if totals else ""))


def _limitations(manifest: dict[str, Any]) -> str:
    ops = {s["op"] for s in manifest.get("config", {}).get("stages", [])}
    notes = []
    if not any("dedup" in op for op in ops):
        notes.append("No deduplication stage ran: the data may contain repeated rows.")
    elif not any("dedup" in op and op != "exact_dedup" for op in ops):
        notes.append("Only exact duplicates (after normalisation) were removed; near-duplicates may remain.")
    if not any("decontam" in op for op in ops):
        notes.append("Not decontaminated against evaluation benchmarks: do not assume benchmark test items are absent.")
    if "langid" not in ops:
        if _languages(manifest):
            notes.append("Languages were identified (the `language:` list above) but not filtered: rows in every "
                         "language were kept.")
        elif "lang" not in manifest["schema"]:
            notes.append("Languages were not identified or filtered.")
    if "gen_model" in manifest["schema"]:
        notes.append("Generated rows come from language models: they may be wrong, biased or repetitive, and the "
                     "models' own terms of use may apply.")
    notes.append("Quality filters are heuristics: some good rows were dropped (see `rejects/`) and some poor rows kept.")
    notes.append("Source texts keep their original authors' rights; check the licence of each source before use.")
    return "## Known limitations\n\n" + "\n".join(f"- {n}" for n in notes)


def _provenance(manifest: dict[str, Any]) -> str:
    code = manifest.get("code_version", {})
    lines = [f"- created: {manifest.get('created_at', '?')}",
             f"- sluice {code.get('sluice', '?')}, git commit `{code.get('git_commit') or 'unknown'}`"]
    if manifest.get("config_hash"):
        lines.append(f"- config sha256 `{manifest['config_hash']}`" +
                     (f" (from `{manifest['config_path']}`)" if manifest.get("config_path") else ""))
    return "## Provenance\n\n" + "\n".join(lines)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def human_bytes(n: float) -> str:
    unit = "B"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            break
        n /= 1024
    return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
