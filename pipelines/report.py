"""report.html: one self-contained page of plots about a release (inline SVG, no script, no network).

A section appears only when its data exists, so the report works on whatever columns a release has:

    drop waterfall      manifest["stages"] (always)
    lengths             every payload string column (and `messages` contents): words per row
    scores              every numeric or true/false `score_*` column: kept, rejected and not-sampled rows, with
                        the thresholds in manifest["thresholds"] ([{stage, column, param, value, side}], what
                        each operator's `thresholds()` declared); 0/1 flags and constant scores as tables
    duplicate clusters  rejects whose rule names a duplicate ("...dup...") and whose `detail` is the kept row's id
    contamination       rejects whose rule names contamination, `detail` = "benchmark:item"; a `contamination` column
    languages, sources  the `lang` and `source` columns; generating models: the `gen_model` column
    diversity           manifest["stages"][i]["stats"] of samplers ("diversity": {"before", "after"}, "cluster_sizes")
                        and of mix ("mixture"); manifest["diversity"] = diversity_metrics(...) output (numeric
                        leaves, nested names dotted), optionally with "cluster_sizes": [rows per cluster]
    generation usage    manifest["generation"] = Usage.to_json(): {"models": {model: {prompt_tokens,
                        completion_tokens, calls}}, "requests", "cache_hits", "calls", "retries", "failures", "cost"}
"""

from __future__ import annotations

import html
import json
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from operators.diversity.metrics import headline
from operators.quality.text import plain_word_count
from pipelines.accounting import Ledger
from pipelines import storage
from pipelines.card import PROVENANCE, generation_totals, generation_usage, language_table
from pipelines.storage import Location

KEPT, REJECTED, ACCENT, INK, GRID = "#3b6ea8", "#d9534f", "#2a9d8f", "#222", "#e3e3e3"
UNSAMPLED = "#b8b8b8"  # rows a sampler or mix did not select: not judged bad, only not chosen
NOT_SAMPLED = ("not_selected", "not_in_mix")  # the rules under which samplers and mix drop rows
PAYLOAD = ("text", "instruction", "input", "output", "prompt", "chosen", "rejected", "response", "question", "answer")
NOT_PAYLOAD = {"id", "reason", "detail", "lang", *PROVENANCE}
TOP = 15  # categories shown in a bar chart; the rest are summed as "other"
PROSE_ROWS = 10_000  # the release's first rows, on which other string columns are judged prose or not
LENGTH_ROWS = 1_000_000  # lengths of bigger releases are counted on an even spread of this many rows


def render_report(folder: Location, manifest: dict[str, Any]) -> str:
    """The report of the release whose shards and rejects are in `folder` (read, nothing is written)."""
    data, lengths = _read(folder, manifest["shards"], manifest["rows"])
    rejects, _ = _read(folder, manifest.get("rejects", []))
    sections = [
        lambda: _waterfall_section(manifest),
        lambda: _length_section(lengths, manifest["rows"]),
        lambda: _score_section(data, rejects, manifest),
        lambda: _duplicate_section(rejects),
        lambda: _contamination_section(data, rejects),
        lambda: _category_section(data, "lang", "Languages", "share of released rows by detected language"),
        lambda: _language_drops_section(manifest),
        lambda: _category_section(data, "source", "Sources", "released rows by source"),
        lambda: _diversity_section(manifest),
        lambda: _generation_section(data, manifest),
        lambda: _stages_section(manifest),
    ]
    return _page(manifest, "".join(s for s in (section() for section in sections) if s))


# --- reading -----------------------------------------------------------------------------------------

SMALL = ("lang", "source", "gen_model", "contamination", "reason", "detail")  # with score_*: what sections read


class Lengths(NamedTuple):
    words: pl.DataFrame  # words per row of each payload field (a column each), on one row in `step`
    step: int


def _read(folder: Location, files: list[dict[str, Any]], rows: int | None = None
          ) -> tuple[pl.LazyFrame | None, Lengths | None]:
    """What the sections read of `files`, each file read once: their small columns (SMALL and the scores) for
    every row, and, given the files' `rows`, the words per row of each payload field on an even spread of at
    most LENGTH_ROWS rows (rows 0, step, 2 step, ... of the files in order), counted file by file, so that no
    more than a file's text is in memory. On an object store 4 files are read at once (a request each)."""
    present = [f for f in files if f["rows"]]
    if not present:
        return None, None
    scans = [storage.scan_parquet(storage.join(folder, f["path"])) for f in present]
    schema = dict(scans[0].collect_schema())  # a release's files share one schema (release.unified_schema)
    small = [c for c, t in schema.items() if c in SMALL or _is_score(c, t)]
    first = pl.concat(scans[:1 + int(np.searchsorted(np.cumsum([f["rows"] for f in present]), PROSE_ROWS))])
    words = [_words(c, schema[c], schema).alias(c) for c in _payload_columns(first, schema)] if rows else []
    needed = list(dict.fromkeys([*small, *(name for w in words for name in w.meta.root_names())]))
    step = max(1, math.ceil((rows or 0) / LENGTH_ROWS))
    starts = np.cumsum([0] + [f["rows"] for f in present[:-1]])

    def one(scan: pl.LazyFrame, start: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        frame = scan.select(needed).collect()
        return frame.select(small), frame.gather_every(step, int(-start % step)).select(words)

    with ThreadPoolExecutor(4 if storage.is_remote(folder) else 1) as pool:
        read = list(pool.map(one, scans, starts))
    data = pl.concat([frame for frame, _ in read], rechunk=False).lazy()
    return data, Lengths(pl.concat([w for _, w in read]), step) if words else None


def _is_score(column: str, dtype: pl.DataType) -> bool:
    return column.startswith("score_") and (dtype.is_numeric() or dtype == pl.Boolean)


def _columns(frame: pl.LazyFrame | None) -> dict[str, pl.DataType]:
    return dict(frame.collect_schema()) if frame is not None else {}


def _words(column: str, dtype: pl.DataType, schema: dict[str, pl.DataType] | None = None) -> pl.Expr:
    """Words per row of a string column, or of all `content` fields of a messages list. A `score_words_<column>`
    already in the data (the length filter's, same definition) is reused rather than counted again."""
    if schema and f"score_words_{column}" in schema:
        return pl.col(f"score_words_{column}")
    if dtype == pl.String:
        return plain_word_count(pl.col(column).fill_null(""))
    return pl.col(column).list.eval(plain_word_count(pl.element().struct.field("content").fill_null(""))).list.sum()


def _payload_columns(data: pl.LazyFrame, schema: dict[str, pl.DataType]) -> list[str]:
    """Known payload fields, plus any other string column that holds prose (median of 5 or more words)."""
    strings = [c for c, t in schema.items() if t == pl.String and c not in NOT_PAYLOAD]
    if _is_messages(schema.get("messages")):
        strings.append("messages")
    others = [c for c in strings if c not in PAYLOAD]
    head = data.head(PROSE_ROWS)
    medians = head.select(_words(c, schema[c]).median().alias(c) for c in others).collect().row(0) if others else ()
    prose = {c for c, m in zip(others, medians) if m is not None and m >= 5}
    return [c for c in strings if c in PAYLOAD or c in prose]


def _is_messages(dtype: pl.DataType | None) -> bool:
    return (isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct)
            and "content" in {f.name for f in dtype.inner.fields})


# --- sections ----------------------------------------------------------------------------------------


def _waterfall_section(manifest: dict[str, Any]) -> str:
    ledger = Ledger.from_json(manifest["stages"])
    if not ledger.stages:
        return ""
    steps = [("rows read", 0, ledger.stages[0].rows_in, KEPT)]
    level = ledger.stages[0].rows_in
    for stage in ledger.stages:
        if stage.consumed:  # a generator: its seeds go, the candidates it made come (its rejects go below)
            steps.append((f"{stage.stage}: seeds used", level - stage.consumed, level, ACCENT))
            level -= stage.consumed
            steps.append((f"{stage.stage}: generated", level, level + stage.added, KEPT))
            level += stage.added
        for reason, n in sorted(stage.dropped.items(), key=lambda kv: -kv[1]):
            if n:
                steps.append((reason, level - n, level, UNSAMPLED if reason.split(":")[-1] in NOT_SAMPLED else REJECTED))
                level -= n
        if stage.added and not stage.consumed:  # up-sampling
            steps.append((f"{stage.stage}: copies added", level, level + stage.added, KEPT))
            level += stage.added
    steps.append(("released", 0, level, ACCENT))
    kept = level / steps[0][2] if steps[0][2] else 0
    caption = (f"From {steps[0][2]:,} rows read to {level:,} released ({kept:.1%} kept); each red bar is the rows "
               f"one rule dropped (stage:rule)" + (", each grey bar the rows a sampler did not select."
                                                   if any(color == UNSAMPLED for *_, color in steps) else "."))
    return _section("Where rows went", caption, [_waterfall_svg(steps)], wide=True)


def _length_section(lengths: Lengths | None, rows: int) -> str:
    if lengths is None:
        return ""
    figures, stats = [], []
    for field in lengths.words.columns:
        values = lengths.words[field].drop_nulls().to_numpy()
        empty = int((values == 0).sum())
        figures.append(_figure(f"{field}: words per row", _histogram_svg(values[values > 0], "words", log_ok=True),
                               f"{empty:,} empty rows not shown" if empty else ""))
        stats.append(_stats_row(field, values))
    table = _table(("field", "rows", "empty", "min", "median", "mean", "p95", "max"), stats)
    caption = "Words per row (whitespace-separated tokens) in each text field of the release."
    if lengths.step > 1:
        caption += f" Counted on one row in {lengths.step:,} ({len(lengths.words):,} of {rows:,})."
    return _section("Lengths", caption, figures, table)


def _stats_row(field: str, values: np.ndarray) -> tuple[str, ...]:
    if not len(values):
        return (field, "0", "0", "-", "-", "-", "-", "-")
    q = np.percentile(values, [50, 95])
    return (field, f"{len(values):,}", f"{int((values == 0).sum()):,}", f"{values.min():,}", f"{q[0]:,.0f}",
            f"{values.mean():,.1f}", f"{q[1]:,.0f}", f"{values.max():,}")


def _score_section(data: pl.LazyFrame | None, rejects: pl.LazyFrame | None, manifest: dict[str, Any]) -> str:
    """A histogram per score (kept, rejected by the stages that threshold it, not sampled), with its thresholds;
    a table of the scores that are only 0 or 1 (flags) and one of the scores that are the same on every row."""
    data_schema, reject_schema = _columns(data), _columns(rejects)
    scores = [c for c, t in data_schema.items() if _is_score(c, t)]
    if not scores:
        return ""
    marks = thresholds(manifest, scores)
    kept_all = data.select(scores).collect()  # one pass over the shards for every score
    rejected_scores = [c for c in scores if c in reject_schema]
    stage, rule = (pl.col("reason").str.split(":").list.get(i, null_on_oob=True) for i in (0, -1))
    rejected_all = rejects.select(stage.alias("stage"), rule.alias("rule"), *rejected_scores).collect() \
        if rejected_scores else None  # each reject's stage and rule split out once, not once per score
    figures, flags, constants = [], [], []
    for col in scores:
        kept = kept_all[col].drop_nulls().cast(pl.Float64).to_numpy()
        stage_names = sorted({mark.stage for mark in marks.get(col, [])})
        rejected, unsampled = _rejected_values(rejected_all, col, stage_names)
        every = np.concatenate([kept, rejected, unsampled])
        if len(every) and np.all(np.isin(every, (0, 1))) and not np.all(every == every[0]):
            flags.append((col, *map(_true_share, (kept, rejected, unsampled))))
        elif len(every) and np.all(every == every[0]):
            who = f"rejected by {', '.join(stage_names)}" if stage_names else "rejected (any stage)"
            constants.append((col, _num(every[0]), _rows_phrase(len(kept), len(rejected) + len(unsampled), who)))
        else:
            figures.append(_score_figure(col, kept, rejected, unsampled, marks.get(col, []), stage_names))
    tables = ""
    if flags:
        tables += "<h3>Scores that are only 0 or 1 (false or true): rows at 1</h3>" + _table(
            ("score", "released rows", "rejected rows (as in the plots)", "rows not sampled"), flags)
    if constants:
        tables += "<h3>Scores that are the same on every row</h3>" + _table(("score", "value", "rows"), constants)
    return _section("Scores", "Distribution of each score over the released rows (blue), the rows the stages that "
                    "threshold it rejected (red) and, after a sampler, the rows it did not select (grey); dashed lines "
                    "are the thresholds the operators applied, defaults included.", figures, tables)


def _rejected_values(rejected_all: pl.DataFrame | None, col: str, stage_names: list[str]) -> tuple[np.ndarray, ...]:
    """(rejected, not sampled) values of `col`: rejects of the stages that threshold it, else of any stage,
    with the rows a sampler or mix did not select apart."""
    if rejected_all is None or col not in rejected_all.columns:
        return np.array([]), np.array([])
    wanted = rejected_all.filter(pl.col("stage").is_in(stage_names) if stage_names else pl.lit(True))
    unsampled = pl.col("rule").is_in(NOT_SAMPLED)
    values = [wanted.filter(which)[col].drop_nulls().cast(pl.Float64).to_numpy() for which in (~unsampled, unsampled)]
    return values[0], values[1]


def _score_figure(col: str, kept: np.ndarray, rejected: np.ndarray, unsampled: np.ndarray, marks: list[Mark],
                  stage_names: list[str]) -> str:
    who = f"rejected by {', '.join(stage_names)}" if stage_names else "rejected (any stage)"
    lines = [(m.value, m.label, m.side) for m in marks]
    svg = _histogram_svg(kept, col.removeprefix("score_"), stacks=[(rejected, REJECTED, who),
                                                                     (unsampled, UNSAMPLED, "not sampled")],
                         lines=lines, log_ok=True)
    every = np.concatenate([kept, rejected, unsampled])
    shown = "; ".join(m.label + (" (below every row)" if m.value < every.min() else " (above every row)"
                                 if m.value > every.max() else "") for m in marks)
    return _figure(col, svg, f"thresholds: {shown}" if shown else "no threshold: a score kept for information")


def _true_share(values: np.ndarray) -> str:
    return f"{int(values.sum()):,} of {len(values):,}" if len(values) else "-"


def _rows_phrase(kept: int, rejected: int, who: str) -> str:
    return f"all {kept:,} released rows" + (f" and {rejected:,} row{'s' * (rejected != 1)} {who}" if rejected else "")


class Mark(NamedTuple):
    value: float
    label: str  # "stage.param=value"
    stage: str
    side: str  # "min": rows below fail; "max": rows above fail


def thresholds(manifest: dict[str, Any], score_columns: list[str]) -> dict[str, list[Mark]]:
    """score column -> its thresholds, as the operators declared them (manifest["thresholds"])."""
    marks: dict[str, list[Mark]] = {}
    for t in manifest.get("thresholds", []):
        if t["column"] in score_columns:
            label = f"{t['stage']}.{t['param']}={t['value']:g}"
            marks.setdefault(t["column"], []).append(Mark(float(t["value"]), label, t["stage"], t["side"]))
    return marks


def _duplicate_section(rejects: pl.LazyFrame | None) -> str:
    if rejects is None or not {"reason", "detail"} <= _columns(rejects).keys():
        return ""
    clusters = (rejects.filter(pl.col("reason").str.split(":").list.last().str.contains("dup")
                               & pl.col("detail").is_not_null())
                .group_by("reason", "detail").agg(pl.len().alias("size") + 1).collect())
    if clusters.is_empty():
        return ""
    figures = []
    for reason in sorted(clusters["reason"].unique()):
        sizes = clusters.filter(pl.col("reason") == reason)["size"].to_numpy()
        caption = (f"{_count(len(sizes), 'cluster')}, {_count(int(sizes.sum() - len(sizes)), 'row')} dropped; "
                   f"largest {int(sizes.max()):,} rows")
        counts = np.unique(sizes, return_counts=True)[1]
        svg = _histogram_svg(sizes, "rows per cluster (kept + dropped)", log_ok=True, unit="cluster",
                             log_y=counts.max() >= 30 * counts.min())  # many pairs, few big clusters
        figures.append(_figure(f"{reason}: cluster sizes", svg, caption))
    return _section("Duplicate clusters", "How many rows each kept row stood for: one kept, the others dropped as "
                    "its duplicates (sizes from the rejects' `detail`).", figures)


def _contamination_section(data: pl.LazyFrame | None, rejects: pl.LazyFrame | None) -> str:
    """Rows matching a benchmark item, by benchmark: dropped (rejects whose rule names contamination, `detail`
    = "benchmark:item") and flagged but kept (a non-null `contamination` column in the data)."""
    figures = []
    if rejects is not None and {"reason", "detail"} <= _columns(rejects).keys():
        dropped = rejects.filter(pl.col("reason").str.split(":").list.last().str.contains("contamin"))
        figures += _benchmark_bars(dropped, "detail", "dropped rows by benchmark")
    if data is not None and _columns(data).get("contamination") == pl.String:
        figures += _benchmark_bars(data, "contamination", "kept rows flagged, by benchmark")
    if not figures:
        return ""
    return _section("Benchmark contamination", "Rows that contain an item of an evaluation benchmark.", figures)


def _benchmark_bars(frame: pl.LazyFrame, column: str, title: str) -> list[str]:
    counts = (frame.filter(pl.col(column).is_not_null())
              .group_by(pl.col(column).str.split(":").list.first().alias("benchmark")).len()
              .sort("len", "benchmark", descending=[True, False]).collect())
    if counts.is_empty():
        return []
    return [_figure(f"{title} ({counts['len'].sum():,})", _bars_svg(_top(counts["benchmark"].to_list(),
                                                                         counts["len"].to_list()), REJECTED))]


def _category_section(data: pl.LazyFrame | None, column: str, title: str, caption: str) -> str:
    if data is None or column not in _columns(data):
        return ""
    counts = data.group_by(column).len().sort("len", column, descending=[True, False]).collect()
    if counts.is_empty():
        return ""
    labels = ["(missing)" if v is None else str(v) for v in counts[column]]
    return _section(title, caption, [_figure(f"{column} ({len(labels)} distinct)",
                                             _bars_svg(_top(labels, counts["len"].to_list())))])


def _diversity_section(manifest: dict[str, Any]) -> str:
    """What the diversity stages recorded in their stats (samplers: budget, metrics before and after, cluster
    sizes; mix: the realised mixture), and `manifest["diversity"]` when a release carries one: what
    `diversity_metrics` returns (nested numbers listed as dotted names), plus `cluster_sizes`."""
    figures, tables = [], []
    for stage in manifest.get("stages", []):
        stats = stage.get("stats") or {}
        name, op = stage.get("stage", "?"), stage.get("op", "?")
        name = name if name == op else f"{name} ({op})"
        if isinstance(stats.get("diversity"), dict):
            tables.append(_before_after_table(name, stats))
        if stats.get("cluster_sizes"):
            sizes, kept = (np.array(stats.get(k) or [], dtype=float) for k in ("cluster_sizes", "cluster_kept"))
            figures.append(_figure(f"{name}: rows per cluster", _histogram_svg(sizes, "rows per cluster", log_ok=True,
                                                                               unit="cluster"),
                                   f"{len(sizes):,} clusters of the stage's input" + (
                                       f"; kept {int(kept.min()):,}-{int(kept.max()):,} rows per cluster" if len(kept) else "")))
        if isinstance(stats.get("mixture"), dict):
            tables.append(_mixture_table(name, stats))
    diversity = dict(manifest.get("diversity") or {})
    sizes = np.array(diversity.pop("cluster_sizes", None) or [], dtype=float)
    metrics = _numbers(diversity)
    if metrics:
        tables.append(_table(("metric", "value"), [(k, f"{v:,.4g}") for k, v in metrics.items()]))
    if len(sizes):
        figures.append(_figure("rows per cluster", _histogram_svg(sizes, "rows per cluster", log_ok=True, unit="cluster"),
                               f"{len(sizes):,} clusters"))
    if not figures and not tables:
        return ""
    return _section("Diversity", "Diversity metrics of the released rows and the sizes of their clusters; for each "
                    "sampler the rows before and after it (large sets measured on a seeded sample), for each "
                    "mix the mixture it realised.", figures, "".join(tables))


def _before_after_table(name: str, stats: dict[str, Any]) -> str:
    diversity = stats["diversity"]
    before, after = (headline(diversity.get(k) or {}) for k in ("before", "after"))
    rows = [(label, _metric(before.get(label)), _metric(after.get(label))) for label in before]
    budget = f"budget {stats['budget']:,}: " if isinstance(stats.get("budget"), int) else ""
    title = f"{name}: {budget}{_metric(stats.get('rows_in'))} rows in, {_metric(stats.get('selected'))} selected"
    return f"<h3>{_esc(title)}</h3>" + _table(("metric", "before", "after"), rows)


def _mixture_table(name: str, stats: dict[str, Any]) -> str:
    rows = []
    for source, m in stats["mixture"].items():
        tokens = f"{m['tokens']:,} ({m['share_tokens']:.1%})" if "tokens" in m else "-"
        rows.append((source, f"{m.get('target_share', 0):.1%}", f"{m.get('available_rows', 0):,}",
                     f"{m.get('rows', 0):,} ({m.get('share_rows', 0):.1%})", tokens, f"{m.get('copies', 0):,}"))
    title = f"{name}: mixture by {stats.get('unit', 'rows')}, at most {stats.get('max_repeat', 1)} copies of a row"
    return f"<h3>{_esc(title)}</h3>" + _table(("source", "target share", "rows available", "rows (share)",
                                               "tokens (share)", "repeated copies"), rows)


def _metric(value: float | int | None) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def _numbers(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric leaves of nested dicts: {"cluster": {"coverage": 0.9}} -> {"cluster.coverage": 0.9}."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_numbers(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out


def _generation_section(data: pl.LazyFrame | None, manifest: dict[str, Any]) -> str:
    usage = generation_usage(manifest)
    figures, table = [], ""
    if usage:
        counters = sorted({k for c in usage.values() for k in c})
        table = _table(("model", *counters), [(m, *(f"{c.get(k, 0):,}" for k in counters)) for m, c in usage.items()])
        tokens = {m: c.get("prompt_tokens", 0) + c.get("completion_tokens", 0) for m, c in usage.items()}
        if any(tokens.values()):
            figures.append(_figure("tokens per model", _bars_svg(_top(list(tokens), list(tokens.values())))))
    if data is not None and "gen_model" in _columns(data):
        counts = data.group_by("gen_model").len().sort("len", descending=True).collect()
        labels = ["(not generated)" if v is None else str(v) for v in counts["gen_model"]]
        figures.append(_figure("released rows by generating model", _bars_svg(_top(labels, counts["len"].to_list()))))
    if not figures and not table:
        return ""
    totals = generation_totals(manifest)
    caption = "Rows made by language models and the tokens they cost." + (f" Requests: {'; '.join(totals)}." if totals else "")
    return _section("Generation", caption, figures, table)


def _language_drops_section(manifest: dict[str, Any]) -> str:
    header, rows = language_table(manifest)
    if not rows:
        return ""
    return _section("Rows and drops per language", "Rows per language (the lang column) from the first stage that "
                    "had it to the release, and the rows each stage dropped.", [], _table(header, rows))


def _stages_section(manifest: dict[str, Any]) -> str:
    ledger = Ledger.from_json(manifest["stages"])
    params = {s["name"]: s for s in manifest.get("config", {}).get("stages", [])}
    rows = []
    for s in ledger.stages:
        p = params.get(s.stage, {})
        text = ", ".join(f"{k}={json.dumps(v)}" for k, v in p.items() if k not in ("name", "op")) or "-"
        rows.append((s.stage, s.op, f"{s.rows_in:,}", f"{s.rows_out:,}", *s.seconds(), s.reasons(), text))
    return _section("Stages", "Each stage balances: rows in + copies added = rows out + rows dropped. Seconds: wall "
                    "clock and CPU of the run's process (a resumed stage is quick).", [],
                    _table(("stage", "operator", "rows in", "rows out", "wall s", "cpu s", "dropped by reason",
                            "parameters"), rows))


def _top(labels: list[str], values: list[float]) -> list[tuple[str, float]]:
    pairs = list(zip(labels, values))
    if len(pairs) > TOP:
        pairs = pairs[:TOP - 1] + [(f"other ({len(pairs) - TOP + 1})", sum(v for _, v in pairs[TOP - 1:]))]
    return pairs


# --- SVG ---------------------------------------------------------------------------------------------

W, H = 560, 230
LEFT, RIGHT, TOP_M, BOTTOM = 56, 16, 26, 42


def _histogram_svg(values: np.ndarray, xlabel: str, stacks: list[tuple[np.ndarray, str, str]] = (),
                   lines: list[tuple[float, str, str]] = (), log_ok: bool = False, log_y: bool = False,
                   unit: str = "row") -> str:
    """Bars of `values` (blue, "kept"), with each of `stacks` (values, color, label) piled on top, and
    dashed `lines` (value, label, side "min"/"max") with their labels stacked so they never overlap.
    `unit` is what the bars count (the y axis). One value everywhere is said in words, not drawn."""
    series = [(values, KEPT, "kept"), *((v, c, label) for v, c, label in stacks if len(v))]
    every = np.concatenate([v for v, _, _ in series]).astype(float)
    if not len(every):
        return _empty_svg("no values")
    if np.all(every == every[0]):
        return _empty_svg(f"{'all ' * (len(every) > 1)}{_count(len(every), unit)}: {xlabel} = {_num(every[0])}")
    edges, log_x = _bins(every, log_ok)
    if near := [value for value, _, _ in lines if _near(value, every, log_x)]:  # widen the axis to show them
        edges, log_x = _bins(np.concatenate([every, near]), log_ok)
    counts = [np.histogram(v, edges)[0] for v, _, _ in series]
    lo, hi = edges[0], edges[-1]
    x = _scale(lo, hi, LEFT, W - RIGHT, log_x)
    top = max(int(sum(counts).max()), 1)
    y = _scale(1 if log_y else 0, top * 1.08, H - BOTTOM, TOP_M, log_y and top > 1)
    parts = [_axes(x, y, lo, hi, 1 if log_y else 0, top, log_x, log_y and top > 1, xlabel, f"{unit}s")]
    for i in range(len(edges) - 1):
        x0, x1 = x(edges[i]), x(edges[i + 1])
        span = f"{_num(edges[i])}–{_num(edges[i + 1])}"
        base = 0
        for (_, color, what), n in zip(series, (c[i] for c in counts)):
            if n:
                y0, y1 = y(max(base, 1 if log_y else 0)), y(base + n)
                parts.append(f'<rect x="{x0 + 0.5:.1f}" y="{y1:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
                             f'height="{max(y0 - y1, 0.5):.1f}" fill="{color}"><title>{span}: {n:,} {what}</title></rect>')
            base += n
    whole = bool(np.all(every == np.round(every)))
    shown = sorted((min(max(_edge(value, side, whole), lo), hi), label) for value, label, side in lines
                   if lo <= value <= hi)
    for row, (value, label) in enumerate(shown):
        px = x(value)
        anchor, dx = ("end", -4) if px > W / 2 else ("start", 4)
        parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP_M - 4}" y2="{H - BOTTOM}" stroke="{INK}" '
                     f'stroke-dasharray="4 3" stroke-width="1.4"/>'
                     f'<text x="{px + dx:.1f}" y="{TOP_M + 8 + 13 * row}" text-anchor="{anchor}" font-size="11" '
                     f'stroke="#fff" stroke-width="3" paint-order="stroke">{_esc(label)}</text>')
    if len(series) > 1:
        parts.append(_legend([(color, label) for _, color, label in series]))
    return _svg("".join(parts))


def _near(value: float, values: np.ndarray, log: bool) -> bool:
    """Whether a threshold outside the data is close enough to draw: the axis at most triples."""
    if log and value <= 0:
        return False
    lo, hi, v = (np.log10([values.min(), values.max(), value]) if log else (values.min(), values.max(), value))
    return hi > lo and max(hi, v) - min(lo, v) <= 3 * (hi - lo)


def _edge(value: float, side: str, whole: bool) -> float:
    """Where a threshold's line goes: on whole-number bins, the edge between the failing and passing bins."""
    if whole and value == round(value):
        return value - 0.5 if side == "min" else value + 0.5
    return value


def _bins(values: np.ndarray, log_ok: bool) -> tuple[np.ndarray, bool]:
    lo, hi = float(values.min()), float(values.max())
    integers = bool(np.all(values == np.round(values)))
    if integers and hi - lo <= 40:
        return np.arange(lo - 0.5, hi + 1.5), False
    if log_ok and lo > 0 and hi / lo >= 50:
        if integers:  # whole-number edges: no empty slivers between 1, 2, 3 words
            return np.unique(np.round(np.geomspace(lo, hi + 1, 36))) - 0.5, True
        return np.geomspace(lo, hi * 1.0001, 36), True
    if hi == lo:
        return np.array([lo - 0.5, hi + 0.5]), False
    return np.linspace(lo, hi, 41), False


def _scale(lo: float, hi: float, a: float, b: float, log: bool):
    if log:
        lo, hi = math.log10(lo), math.log10(hi)
    span = (hi - lo) or 1.0
    return lambda v: a + (((math.log10(max(v, 1e-12)) if log else v) - lo) / span) * (b - a)


def _axes(x, y, xlo: float, xhi: float, ylo: float, yhi: float, log_x: bool, log_y: bool, xlabel: str,
          ylabel: str = "rows") -> str:
    parts = []
    for t in _ticks(ylo, yhi, log_y):
        if not float(t).is_integer():
            continue  # y counts rows: no 0.5 rows
        py = y(t)
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{py:.1f}" y2="{py:.1f}" stroke="{GRID}"/>'
                     f'<text x="{LEFT - 6}" y="{py + 4:.1f}" text-anchor="end" font-size="11">{_num(t)}</text>')
    for t in _ticks(xlo, xhi, log_x):
        px = x(t)
        parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{H - BOTTOM}" y2="{H - BOTTOM + 4}" stroke="{INK}"/>'
                     f'<text x="{px:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" font-size="11">{_num(t)}</text>')
    parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{H - BOTTOM}" y2="{H - BOTTOM}" stroke="{INK}"/>'
                 f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 6}" text-anchor="middle" font-size="12">'
                 f'{_esc(xlabel)}{" (log scale)" if log_x else ""}</text>'
                 f'<text x="14" y="{(TOP_M + H - BOTTOM) / 2}" text-anchor="middle" font-size="12" '
                 f'transform="rotate(-90 14 {(TOP_M + H - BOTTOM) / 2})">{_esc(ylabel)}</text>')
    return "".join(parts)


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        steps = (1,) if len(decades) > 3 else (1, 2, 5)
        return [m * 10**d for d in decades for m in steps if lo <= m * 10**d <= hi]
    span = hi - lo or 1.0
    step = 10 ** math.floor(math.log10(span / 5))
    step *= next(m for m in (1, 2, 5, 10) if span / (step * m) <= 6)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _bars_svg(pairs: list[tuple[str, float]], color: str = KEPT) -> str:
    """Horizontal bars, largest first, with value and share at the end of each bar."""
    row, label_w = 20, 170
    height = TOP_M + row * len(pairs) + 8
    total = sum(v for _, v in pairs) or 1
    top = max(v for _, v in pairs) or 1
    width = W - label_w - RIGHT - 90
    parts = []
    for i, (label, value) in enumerate(pairs):
        py = TOP_M + i * row
        bar = width * value / top
        parts.append(f'<text x="{label_w - 6}" y="{py + 14}" text-anchor="end" font-size="12">{_esc(_clip(label))}'
                     f'<title>{_esc(label)}</title></text>'
                     f'<rect x="{label_w}" y="{py + 3}" width="{max(bar, 1):.1f}" height="{row - 6}" fill="{color}">'
                     f'<title>{_esc(label)}: {value:,.0f}</title></rect>'
                     f'<text x="{label_w + bar + 5:.1f}" y="{py + 14}" font-size="11">{_num(value)} '
                     f'({value / total:.1%})</text>')
    return _svg("".join(parts), height)


def _waterfall_svg(steps: list[tuple[str, int, int, str]]) -> str:
    """One horizontal bar per step, spanning [start, end] rows; drops float at the level they left from."""
    row, label_w, width = 24, 260, 1080
    height = TOP_M + row * len(steps) + BOTTOM
    top = max(end for _, _, end, _ in steps) or 1
    x = _scale(0, top, label_w, width - 110, False)
    parts = []
    for t in _ticks(0, top, False):
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{TOP_M - 4}" y2="{height - BOTTOM}" stroke="{GRID}"/>'
                     f'<text x="{x(t):.1f}" y="{height - BOTTOM + 16}" text-anchor="middle" font-size="11">{_num(t)}</text>')
    for i, (label, start, end, color) in enumerate(steps):
        py = TOP_M + i * row
        n = end - start
        text = f"−{n:,}" if color in (REJECTED, UNSAMPLED) else f"{n:,}"
        parts.append(f'<text x="{label_w - 8}" y="{py + 16}" text-anchor="end" font-size="12">{_esc(_clip(label, 38))}'
                     f'<title>{_esc(label)}</title></text>'
                     f'<rect x="{x(start):.1f}" y="{py + 4}" width="{max(x(end) - x(start), 1.5):.1f}" height="{row - 8}" '
                     f'fill="{color}"><title>{_esc(label)}: {n:,} rows</title></rect>'
                     f'<text x="{x(end) + 6:.1f}" y="{py + 16}" font-size="11">{text}</text>')
    parts.append(f'<text x="{(label_w + width - 110) / 2}" y="{height - 6}" text-anchor="middle" font-size="12">rows</text>')
    return _svg("".join(parts), height, width)


def _legend(items: list[tuple[str, str]]) -> str:
    parts, px = [], LEFT + 8
    for color, label in items:
        parts.append(f'<rect x="{px}" y="6" width="10" height="10" fill="{color}"/>'
                     f'<text x="{px + 14}" y="15" font-size="11">{_esc(label)}</text>')
        px += 24 + 7 * len(label)
    return "".join(parts)


def _empty_svg(message: str) -> str:
    return _svg(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" font-size="13" fill="#777">{_esc(message)}</text>')


def _svg(body: str, height: int = H, width: int = W) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
            f'role="img" font-family="system-ui, sans-serif" fill="{INK}">{body}</svg>')


def _num(v: float) -> str:
    """Short axis numbers: 950, 1.2k, 3.4M, 0.25."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 100 or float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _count(n: int, unit: str) -> str:
    return f"{n:,} {unit}{'s' * (n != 1)}"


def _clip(label: str, n: int = 24) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def _esc(text: object) -> str:
    return html.escape(str(text))


# --- HTML --------------------------------------------------------------------------------------------


def _figure(title: str, svg: str, caption: str = "") -> str:
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f"<figure><h3>{_esc(title)}</h3>{svg}{cap}</figure>"


def _section(title: str, caption: str, figures: list[str], table: str = "", wide: bool = False) -> str:
    grid = f'<div class="{"wide" if wide else "grid"}">{"".join(figures)}</div>' if figures else ""
    return f"<section><h2>{_esc(title)}</h2><p>{_esc(caption)}</p>{grid}{table}</section>"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _page(manifest: dict[str, Any], body: str) -> str:
    size = sum(s["bytes"] for s in manifest["shards"])
    read = manifest["stages"][0]["rows_in"] if manifest["stages"] else manifest["rows"]
    tiles = [("rows released", f"{manifest['rows']:,}"), ("rows rejected", f"{manifest['rejected_rows']:,}"),
             ("kept", f"{manifest['rows'] / read:.1%}" if read else "-"), ("inputs", f"{len(manifest['inputs'])}"),
             ("shards", f"{len(manifest['shards'])} ({size / 2**20:,.1f} MiB)")]
    tiles_html = "".join(f'<div class="tile"><b>{_esc(v)}</b><span>{_esc(k)}</span></div>' for k, v in tiles)
    code = manifest.get("code_version", {})
    title = f"{manifest['dataset']} {manifest['version']}"
    description = manifest.get("config", {}).get("release", {}).get("description", "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}: release report</title>
<style>{CSS}</style></head><body>
<header><h1>{_esc(title)}</h1><p>{_esc(description)}</p>
<p class="meta">created {_esc(manifest.get('created_at', '?'))} · sluice {_esc(code.get('sluice', '?'))}
· commit {_esc((code.get('git_commit') or 'unknown')[:12])} · config sha256 {_esc(manifest.get('config_hash', '')[:16])}</p>
<div class="tiles">{tiles_html}</div></header>
<main>{body}</main>
<footer>Generated by Sluice from manifest.json and the release's Parquet files. Hover a bar for its exact count.</footer>
</body></html>
"""


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;background:#f6f7f9;margin:0}
header,main,footer{max-width:1200px;margin:0 auto;padding:0 24px}
header{padding-top:18px}h1{margin:.2em 0;font-size:26px}h2{margin:0 0 .2em;font-size:20px}
h3{margin:0 0 4px;font-size:14px;font-weight:600;overflow-wrap:anywhere}
.meta{color:#666;font-size:12px}
.tiles{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.tile{background:#fff;border:1px solid #e2e4e8;border-radius:8px;padding:10px 16px;min-width:130px}
.tile b{display:block;font-size:22px}.tile span{color:#666;font-size:12px}
section{background:#fff;border:1px solid #e2e4e8;border-radius:8px;padding:16px 20px;margin:16px 0}
section>p{color:#555;margin:0 0 10px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:16px}
figure{margin:0}figcaption{color:#666;font-size:12px}
table{border-collapse:collapse;margin-top:12px;font-size:13px;width:100%}
th,td{border-bottom:1px solid #eee;padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#fafafa}
footer{color:#888;font-size:12px;padding-bottom:24px}
"""
