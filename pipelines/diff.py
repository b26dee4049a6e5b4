"""`sluice release diff A B`: what changed between two releases (or any two Parquet tables).

Rows are matched by `id`: added (only in B), removed (only in A), changed (same id, a different value in a
column both share with the same type), unchanged. Schema changes are listed apart, so adding a score
column does not mark every row changed. With two releases the manifests are compared too: row counts,
drops by reason, inputs and config. Added and removed rows are split by cause: the input changed (the
other release never read the row: a new, deleted or edited input row) or the selection changed (both read it,
one dropped it), the latter with the other release's reject reasons (e.g. "removed: B rejected them as
length_filter:too_few_words 12"). Releases of different datasets get a warning; content-hash ids (inputs
without an `id`) are pointed out, since an edited row then shows as one removed and one added.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from operators.base import REASON
from operators.errors import ConfigError
from pipelines.inspection import Table, open_table

_B = "__b"
NOT_READ = "(not in its input)"  # neither kept nor rejected by the other release: it never read the row


def diff_tables(a: Table, b: Table, examples: int = 5) -> dict[str, Any]:
    schema_a, schema_b = a.schema, b.schema
    for table, schema in ((a, schema_a), (b, schema_b)):
        if "id" not in schema:
            raise ConfigError(f"{table.label}: no `id` column, so rows cannot be matched")
        _check_unique_ids(table)
    compared = [c for c in schema_a if c != "id" and schema_b.get(c) == schema_a[c]]
    hashes_a = a.frame.select("id", *(pl.col(c).hash().alias(c) for c in compared))
    hashes_b = b.frame.select("id", *(pl.col(c).hash().alias(c) for c in compared))
    added = hashes_b.join(hashes_a, on="id", how="anti").select("id").sort("id").collect()["id"]
    removed = hashes_a.join(hashes_b, on="id", how="anti").select("id").sort("id").collect()["id"]
    changed_per_column, changed = _changes(hashes_a, hashes_b, compared)
    rows_a, rows_b = (t.frame.select(pl.len()).collect().item() for t in (a, b))
    result: dict[str, Any] = {
        "a": a.label, "b": b.label,
        "rows": {"a": rows_a, "b": rows_b, "added": len(added), "removed": len(removed), "changed": len(changed),
                 "unchanged": rows_a - len(removed) - len(changed)},
        "schema": _schema_changes(schema_a, schema_b),
        "changed_columns": changed_per_column,
        "examples": {"added": added.head(examples).to_list(), "removed": removed.head(examples).to_list(),
                     "changed": changed.head(examples).to_list()},
    }
    if a.manifest and b.manifest:
        result["why"] = {"removed": _rejected_as(b, removed), "added": _rejected_as(a, added)}
        result["kinds"] = _kinds(result["why"])
        if a.manifest.get("dataset") != b.manifest.get("dataset"):
            result["warnings"] = [f"A is dataset {a.manifest.get('dataset')!r}, B is {b.manifest.get('dataset')!r}: "
                                  "two different datasets; rows match only where their ids happen to agree"]
        result["metrics"] = _metrics(a.manifest, b.manifest)
        result["inputs"] = _input_changes(a.manifest, b.manifest)
        result["config"] = _config_changes(a.manifest.get("config", {}), b.manifest.get("config", {}))
    if _content_hash_ids(a) or _content_hash_ids(b):
        result["content_hash_ids"] = True
    return result


def _kinds(why: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Added and removed rows split by cause: the input changed (the row is not in the other release's
    input at all: a new, deleted or edited input row) or the selection changed (the row was read by both,
    and one of them dropped it: a threshold, a sampler's choice, dedup)."""
    def split(reasons: dict[str, int]) -> tuple[int, int]:
        outside = reasons.get(NOT_READ, 0)
        return outside, sum(reasons.values()) - outside

    (in_added, sel_added), (in_removed, sel_removed) = split(why["added"]), split(why["removed"])
    return {"input_changed": {"added": in_added, "removed": in_removed},
            "selection_changed": {"added": sel_added, "removed": sel_removed}}


_HASH_ID = r"^[0-9a-f]{16}(-\d+)?$"  # what readers.IdRegistry gives a row without an id


def _content_hash_ids(table: Table) -> bool:
    """Whether most ids look made by Sluice from the row's content (the input had no `id`)."""
    sample = table.frame.select(pl.col("id").head(1000).str.contains(_HASH_ID).mean()).collect().item()
    return bool(sample is not None and sample > 0.9)


def _check_unique_ids(table: Table) -> None:
    counts = table.frame.select(pl.len().alias("rows"), pl.col("id").n_unique().alias("ids")).collect().row(0)
    if counts[0] != counts[1]:
        raise ConfigError(f"{table.label}: {counts[0] - counts[1]:,} rows repeat an id; rows are matched by id, "
                          f"so a diff needs unique ids")


def _changes(hashes_a: pl.LazyFrame, hashes_b: pl.LazyFrame, compared: list[str]) -> tuple[dict[str, int], pl.Series]:
    if not compared:
        return {}, pl.Series("id", [], pl.String)
    both = hashes_a.join(hashes_b, on="id", how="inner", suffix=_B)
    differs = {c: pl.col(c).ne_missing(pl.col(c + _B)) for c in compared}
    marked = both.select("id", *(d.alias(c) for c, d in differs.items())).collect()
    per_column = {c: int(marked[c].sum()) for c in compared if marked[c].any()}
    changed = marked.filter(pl.any_horizontal(compared))["id"].sort()
    return per_column, changed


def _schema_changes(a: dict[str, pl.DataType], b: dict[str, pl.DataType]) -> dict[str, Any]:
    return {"added": {c: str(t) for c, t in b.items() if c not in a},
            "removed": {c: str(t) for c, t in a.items() if c not in b},
            "retyped": {c: [str(a[c]), str(b[c])] for c in a if c in b and a[c] != b[c]}}


def _rejected_as(other: Table, ids: pl.Series) -> dict[str, int]:
    """How `other` release's rejects explain these ids: reason -> rows (rows it never saw: "(not in its rejects)")."""
    if not len(ids):
        return {}
    rejects = open_table(str(other.folder), rejects=True).frame
    if REASON not in rejects.collect_schema():
        return {NOT_READ: len(ids)}
    found = (rejects.filter(pl.col("id").is_in(ids.implode())).group_by(REASON).len()
             .sort("len", REASON, descending=[True, False]).collect())
    why = {str(r): n for r, n in found.iter_rows()}
    if missing := len(ids) - sum(why.values()):
        why[NOT_READ] = missing
    return why


def _metrics(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    drops_a, drops_b = _drops(a), _drops(b)
    return {"rows": [a["rows"], b["rows"]], "rejected_rows": [a["rejected_rows"], b["rejected_rows"]],
            "rows_read": [_read(a), _read(b)],
            "drops": {r: [drops_a.get(r, 0), drops_b.get(r, 0)] for r in sorted(drops_a.keys() | drops_b.keys())}}


def _drops(manifest: dict[str, Any]) -> dict[str, int]:
    return {reason: n for stage in manifest["stages"] for reason, n in stage["dropped"].items()}


def _read(manifest: dict[str, Any]) -> int:
    return manifest["stages"][0]["rows_in"] if manifest["stages"] else manifest["rows"]


def _input_changes(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Inputs matched by content (sha256), so a file read from a differently spelled path is the same input."""
    paths_a = {i["sha256"]: i["path"] for i in a["inputs"]}
    paths_b = {i["sha256"]: i["path"] for i in b["inputs"]}
    return ([f"+ {p} (sha256 {h[:12]})" for h, p in paths_b.items() if h not in paths_a]
            + [f"- {p} (sha256 {h[:12]})" for h, p in paths_a.items() if h not in paths_b])


def _config_changes(a: dict[str, Any], b: dict[str, Any]) -> list[list[Any]]:
    """[path, value in A, value in B] for every setting that differs (stages are matched by name)."""
    flat_a, flat_b = _flatten(a), _flatten(b)
    missing = "(absent)"
    return [[k, flat_a.get(k, missing), flat_b.get(k, missing)] for k in sorted(flat_a.keys() | flat_b.keys())
            if flat_a.get(k, missing) != flat_b.get(k, missing)]


def _flatten(config: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key == "stages" and isinstance(value, list):
            for stage in value:
                for param, v in stage.items():
                    flat[f"stages.{stage.get('name')}.{param}"] = v
        elif isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in _flatten(value).items()})
        else:
            flat[key] = value
    return flat


def format_diff(d: dict[str, Any]) -> str:
    r = d["rows"]
    lines = [f"A {d['a']}: {r['a']:,} rows", f"B {d['b']}: {r['b']:,} rows", "",
             f"rows: +{r['added']:,} added, -{r['removed']:,} removed, ~{r['changed']:,} changed, "
             f"{r['unchanged']:,} unchanged"]
    lines = [f"warning: {w}" for w in d.get("warnings", [])] + lines
    if k := d.get("kinds"):
        i, sel = k["input_changed"], k["selection_changed"]
        lines.append(f"  input changed:     +{i['added']:,} rows not in A's input, -{i['removed']:,} rows not in B's input")
        lines.append(f"  selection changed: +{sel['added']:,} rows A had dropped, -{sel['removed']:,} rows B dropped")
    why = d.get("why", {})
    for kind, verb in (("removed", "B rejected them as"), ("added", "A had rejected them as")):
        if reasons := {r: n for r, n in why.get(kind, {}).items() if r != NOT_READ}:
            lines.append(f"  {kind}: {verb} " + ", ".join(f"{reason} {n:,}" for reason, n in reasons.items()))
    if d["changed_columns"]:
        lines.append("  changed columns: " + ", ".join(f"{c} {n:,}" for c, n in d["changed_columns"].items()))
    for kind, ids in d["examples"].items():
        if ids:
            more = r[kind] - len(ids)
            lines.append(f"  e.g. {kind}: " + ", ".join(ids) + (f" (+{more:,} more)" if more else ""))
    if d.get("content_hash_ids"):
        lines.append("  ids: content hashes (the input rows have no `id`), so an edited input row is one row removed "
                     "and one added; give the input an `id` field to see edits as changed rows")
    s = d["schema"]
    if any(s.values()):
        lines += ["", "schema:"]
        lines += [f"  + {c} {t}" for c, t in s["added"].items()] + [f"  - {c} {t}" for c, t in s["removed"].items()]
        lines += [f"  ~ {c} {ta} -> {tb}" for c, (ta, tb) in s["retyped"].items()]
    else:
        lines += ["", "schema: unchanged"]
    if m := d.get("metrics"):
        lines += ["", "metrics (A -> B):"]
        named = [("rows read", m["rows_read"]), ("rows released", m["rows"]), ("rows rejected", m["rejected_rows"])]
        named += [(f"  {reason}", pair) for reason, pair in m["drops"].items()]
        width = max(len(n) for n, _ in named)
        lines += [f"  {n:<{width}}  {va:>9,} -> {vb:>9,}  ({vb - va:+,})" for n, (va, vb) in named]
    if "inputs" in d:
        lines += ["", "inputs: " + ("the same (by sha256)" if not d["inputs"] else "")]
        lines += [f"  {note}" for note in d["inputs"]]
    if "config" in d:
        lines += ["", "config: " + ("unchanged" if not d["config"] else "")]
        lines += [f"  {path}: {va!r} -> {vb!r}" for path, va, vb in d["config"]]
    return "\n".join(lines)
