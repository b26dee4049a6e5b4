"""The cost model: CPU seconds, bytes read and written and peak memory per million rows, per phase of a run.

    .venv/bin/python bench/cost/cost.py measure --rows 250000,1000000 [--out bench/cost/results.jsonl]
    .venv/bin/python bench/cost/cost.py measure --rows 5000000          # late, once: the check of the model
    .venv/bin/python bench/cost/cost.py model bench/cost/results.jsonl --fit 250000,1000000 --check 5000000 \
        [--commit C] [--meter M]     # only the runs of commit C / measured by meter M (the last one per size)

`measure` makes the input (below) under /tmp and runs `sluice run`'s in-process path (flow._run with the
local map, an empty shard cache, one fresh process per size) with every phase measured:
- a phase is each `map_fn` call of the engine (the per-shard tasks of a stage: `normalize+length_filter`,
  `exact_dedup.index`, `minhash_dedup.apply`, ...), each `decide` (the driver's part of a global stage), the
  read of the inputs and the release writer; what a stage does outside those (its books, summaries) is
  `<stage> (books)`; the release's data and rejects files are tasks (`release.data`, `release.rejects`),
  the rest of the release (card, report, side tables, manifest) is `release (driver)`;
- CPU seconds of the process (all threads), wall seconds, peak RSS during the phase (the kernel's high-water
  mark, reset at the phase start via /proc/self/clear_refs) and the RSS at its start;
- bytes read: the Parquet files of the shards a phase's tasks read (the input file for the read; every
  index file once per decide task, as each scans the whole index for its partition); bytes
  written: what the phase added to the shard cache (and the release folder, for the release). These are the
  bytes a cluster moves through its object store. (Not counted as read: what `release (driver)` scans for
  the report and the side tables.)
`model` fits cost = a + b * rows per phase and metric through the `--fit` sizes, prints the table per million
rows, the `--check` size's prediction against its measurement, and projections to 100M and 1B rows on N
workers (tasks spread over the workers; read, decide, books and the release's driver part stay in the driver).

Input: synthetic documents of 20-60 words drawn from the word frequencies of Alpaca's outputs (../shared/data,
CC BY-NC: generated under /tmp, never committed), 10% of them near-copies (1-3 words changed) of a recent
document. Real corpora re-use no document, so neither may the input: joining Alpaca records, as the dedup
scale sets do, makes every record recur rows/52k times, and near-duplicate candidates grow with the square of
the rows (a cost model of the generator, not of Sluice). The pipeline is the issue's: normalize ->
length_filter -> exact_dedup -> minhash_dedup, 50k-row shards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ALPACA = ROOT.parent / "shared" / "data" / "instructions" / "alpaca_52k" / "alpaca_data_en_52k.json"
STAGES = [{"op": "normalize"}, {"op": "length_filter", "min_words": 3}, {"op": "exact_dedup"},
          {"op": "minhash_dedup"}]
SHARD_ROWS = 50_000
METER = "decide-reads"  # changes with what the meter counts (this one: decide tasks charged their index reads)
METRICS = ("cpu_s", "wall_s", "read_bytes", "written_bytes", "peak_rss", "start_rss")


# --- the input -----------------------------------------------------------------------------------------


def make_input(path: Path, rows: int, seed: int = 7, chunk: int = 100_000) -> Path:
    """`rows` documents (id, text) as Parquet; seeded, so a size is the same file every time."""
    import numpy as np
    import polars as pl
    import pyarrow.parquet as pq

    words = pl.read_json(ALPACA).select(pl.col("output").str.split(" ").explode().alias("w")) \
        .filter(pl.col("w").str.len_chars() > 0).group_by("w").len().sort("len", "w", descending=[True, False])
    vocab, p = words["w"], (words["len"] / words["len"].sum()).to_numpy()
    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        idx = rng.choice(len(vocab), size=(n, 60), p=p).astype(np.int32)
        length = rng.integers(20, 61, size=n)
        copies = np.flatnonzero(rng.random(n) < 0.1)
        copies = copies[copies > 0]
        source = (copies - 1 - rng.integers(0, 1000, size=len(copies))).clip(0)  # a recent earlier document
        idx[copies], length[copies] = idx[source], length[source]
        for _ in range(3):  # 1-3 words of each copy changed
            change = copies[rng.random(len(copies)) < 0.7]
            idx[change, rng.integers(0, 20, size=len(change))] = rng.integers(0, len(vocab), size=len(change))
        grid = vocab.gather(idx.ravel()).reshape((n, 60)).arr.to_list()
        frame = pl.DataFrame({"id": [f"d{i:09d}" for i in range(start, start + n)], "words": grid, "n": length}) \
            .select("id", pl.col("words").list.head(pl.col("n")).list.join(" ").alias("text"))
        table = frame.to_arrow()
        writer = writer or pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table)
    writer.close()
    return path


# --- measuring one run -----------------------------------------------------------------------------------


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)


def _folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder`, a hard-linked file once (the read's cache entry links its shards)."""
    sizes = {}
    for f in folder.rglob("*") if folder.is_dir() else []:
        try:
            stat = f.stat()
        except FileNotFoundError:  # removed while we looked
            continue
        if f.is_file():
            sizes[stat.st_ino] = stat.st_size
    return sum(sizes.values())


class Meter:
    """Phases of one run, each with its CPU, wall, bytes and peak memory. A phase's own peak (`own_peak`) is
    its high-water mark outside its nested phases: the mark is read before a nested phase resets it and reset
    again when that one ends; its `peak_rss` is the larger of its own and its nested phases' peaks."""

    def __init__(self, watched: list[Path]) -> None:
        self.watched = watched  # folders whose growth is a phase's bytes written (cache, release)
        self.phases: list[dict[str, Any]] = []
        self.stack: list[dict[str, Any]] = []

    @contextmanager
    def phase(self, name: str, kind: str, read_bytes: int = 0) -> Iterator[None]:
        record = {"phase": name, "kind": kind, "depth": len(self.stack), "read_bytes": read_bytes, "own_peak": 0}
        if self.stack:  # the enclosing phase's own peak so far, before this one resets the mark
            self.stack[-1]["own_peak"] = max(self.stack[-1]["own_peak"], _status("VmHWM"))
        self.stack.append(record)
        written = sum(_folder_bytes(f) for f in self.watched)
        start_rss = _status("VmRSS")
        _reset_peak()
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            own_peak = max(record["own_peak"], _status("VmHWM"))
            record.update(cpu_s=time.process_time() - cpu, wall_s=time.perf_counter() - wall, own_peak=own_peak,
                          peak_rss=max(own_peak, record.get("peak_rss", 0)), start_rss=start_rss,
                          written_bytes=sum(_folder_bytes(f) for f in self.watched) - written)
            self.stack.pop()
            if self.stack:
                self.stack[-1]["peak_rss"] = max(self.stack[-1].get("peak_rss", 0), record["peak_rss"])
                _reset_peak()  # the enclosing phase's own peak starts again
            self.phases.append(record)


def _part_bytes(part: Any) -> int:
    if pieces := getattr(part, "pieces", None):  # a release file's task: its share of each part it copies
        return sum(_part_bytes(piece) * rows // max(piece.rows, 1) for piece, _, rows in pieces)
    path = getattr(part, "path", None)
    if path is not None:
        try:
            return os.path.getsize(path)
        except (OSError, TypeError):
            return 0
    frame = getattr(part, "frame", None)
    return int(frame.estimated_size()) if frame is not None else 0


def task_read_bytes(jobs: list, index: Any = ()) -> int:
    """Bytes a phase's tasks read: each job's rows and, for a partitioned decide (engine.decide_part), every
    shard's index, once per task (each task scans all of it and keeps its own partition)."""
    return sum(_part_bytes(j.part) for j in jobs) + len(jobs) * sum(_part_bytes(p) for p in index)


def measure_run(data: Path, work: Path) -> dict[str, Any]:
    """One in-process run of the pipeline over `data` with every phase measured (see the module doc)."""
    from pipelines import config, engine, flow

    cfg = work / "cost.yaml"
    cfg.write_text(json.dumps({"dataset": "cost", "inputs": [{"path": str(data), "fields": {"text": "text"}}],
                               "shard_rows": SHARD_ROWS, "stages": STAGES,
                               "release": {"dir": str(work / "releases"), "rows_per_file": 250_000}}))
    pipeline = config.load(cfg)
    root = work / "releases"
    meter = Meter([root / "cost"])

    def measured_map(fn: Callable, jobs: list, label: str, cache: Any = None, inline: bool = False, **kwargs: Any):
        with meter.phase(label, "tasks", task_read_bytes(jobs, kwargs.get("index", ()))):
            return engine.map_local(fn, jobs, label, cache, inline, **kwargs)

    def wrap(module: Any, name: str, label: Callable[..., str], kind: str,
             read: Callable[..., int] = lambda *a, **k: 0) -> None:
        if not hasattr(module, name):  # the engine changed shape: measure what is there
            return
        original = getattr(module, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with meter.phase(label(*args, **kwargs), kind, read(*args, **kwargs)):
                return original(*args, **kwargs)

        setattr(module, name, wrapper)

    wrap(engine, "read_inputs", lambda *a, **k: "read (driver)", "driver",
         lambda sources, *a, **k: sum(os.path.getsize(s.path) for s in sources if os.path.exists(str(s.path))))
    wrap(engine, "decide", lambda *a, **k: f"{k.get('stage', a[1] if len(a) > 1 else None).name}.decide (driver)", "driver")
    wrap(engine, "run_stage", lambda stage, *a, **k: f"{stage.name} (books)", "driver")
    wrap(engine, "run_fused", lambda group, *a, **k: f"{'+'.join(s.name for s in group)} (books)", "driver")
    wrap(flow, "publish", lambda *a, **k: "release (driver)", "driver")  # its files are tasks (release.data, ...)
    wall, cpu = time.perf_counter(), time.process_time()
    folder, outcome = flow._run(pipeline, root, measured_map)
    total = {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall,
             "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}  # see process_peak
    manifest = json.loads((folder / "manifest.json").read_text())
    return {"rows": manifest["stages"][0]["rows_in"], "released": sum(s["rows"] for s in manifest["shards"]),
            "phases": _self_costs(meter.phases), "total": total}


def _self_costs(phases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each phase with what its nested phases did taken off (a stage's books = the stage minus its tasks)."""
    out = []
    for i, phase in enumerate(phases):
        children = []
        for earlier in reversed(phases[:i]):  # children end before their parent, at depth + 1
            if earlier["depth"] <= phase["depth"]:
                break
            if earlier["depth"] == phase["depth"] + 1:
                children.append(earlier)
        own = dict(phase)
        for metric in ("cpu_s", "wall_s", "written_bytes"):
            own[metric] = phase[metric] - sum(c[metric] for c in children)
        own["peak_rss"] = phase["own_peak"]  # outside its nested phases (their peaks are theirs)
        out.append(own)
    return out


# --- the model -------------------------------------------------------------------------------------------


def fit(runs: list[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """phase -> metric -> (a, b) of a + b * rows, through the runs (least squares; exact for two)."""
    import numpy as np

    names = list(dict.fromkeys(p["phase"] for r in runs for p in r["phases"]))
    model = {}
    for name in names:
        model[name] = {"kind": next(p["kind"] for r in runs for p in r["phases"] if p["phase"] == name)}
        rows = np.array([r["rows"] for r in runs], dtype=float)
        for metric in METRICS:
            values = np.array([sum(p[metric] for p in r["phases"] if p["phase"] == name) if metric not in
                               ("peak_rss", "start_rss") else
                               max([p[metric] for p in r["phases"] if p["phase"] == name], default=0)
                               for r in runs], dtype=float)
            b, a = np.polyfit(rows, values, 1) if len(set(rows)) > 1 else (values[0] / rows[0], 0.0)
            model[name][metric] = (float(a), float(b))
    return model


def predict(model: dict, rows: float) -> dict[str, dict[str, float]]:
    return {name: {m: model[name][m][0] + model[name][m][1] * rows for m in METRICS} | {"kind": model[name]["kind"]}
            for name in model}


def totals(phases: dict[str, dict[str, float]]) -> dict[str, float]:
    return {"cpu_s": sum(p["cpu_s"] for p in phases.values()),
            "read_bytes": sum(p["read_bytes"] for p in phases.values()),
            "written_bytes": sum(p["written_bytes"] for p in phases.values()),
            "peak_rss": max(p["peak_rss"] for p in phases.values())}


def observed(run: dict[str, Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for p in run["phases"]:
        o = out.setdefault(p["phase"], {m: 0.0 for m in METRICS} | {"kind": p["kind"]})
        for m in ("cpu_s", "wall_s", "read_bytes", "written_bytes"):
            o[m] += p[m]
        o["peak_rss"], o["start_rss"] = max(o["peak_rss"], p["peak_rss"]), max(o["start_rss"], p["start_rss"])
    return out


def project(model: dict, rows: float, workers: int, cores: int = 2) -> dict[str, float]:
    """Wall seconds (tasks spread over `workers` x `cores`, driver phases serial), driver and worker memory."""
    phases = predict(model, rows)
    tasks = [p for p in phases.values() if p["kind"] == "tasks"]
    driver = [p for p in phases.values() if p["kind"] == "driver"]
    shard_peak = max(model[n]["peak_rss"][0] + model[n]["peak_rss"][1] * min(rows, SHARD_ROWS * cores)
                     for n in model if model[n]["kind"] == "tasks")  # a worker holds `cores` shards at a time
    return {"wall_s": sum(p["cpu_s"] for p in tasks) / (workers * cores) + sum(p["cpu_s"] for p in driver),
            "driver_cpu_s": sum(p["cpu_s"] for p in driver), "task_cpu_s": sum(p["cpu_s"] for p in tasks),
            "driver_peak": max(p["peak_rss"] for p in driver), "worker_peak": shard_peak,
            "store_bytes": sum(p["read_bytes"] + p["written_bytes"] for p in phases.values())}


def process_peak(run: dict[str, Any]) -> int:
    """The run's peak RSS: its largest phase peak, or getrusage's if larger. getrusage's alone is not it: each
    reset of the high-water mark (a phase start, via clear_refs) resets the mark it reads too (checked on this
    machine: 410 MB -> 10 MB), so it is the peak since the meter's last reset."""
    return max(run["total"]["peak_rss"], *(p["peak_rss"] for p in run["phases"]))


def select(runs: list[dict[str, Any]], commit: str | None = None,
           meter: str | None = None) -> dict[int, dict[str, Any]]:
    """Target rows -> the last run of that size, among the runs of `commit` and `meter` where given."""
    return {r["target_rows"]: r for r in runs
            if (commit is None or r.get("commit") == commit) and (meter is None or r.get("meter") == meter)}


def report(results: Path, fit_rows: list[int], check: int | None, commit: str | None = None,
           meter: str | None = None) -> None:
    import numpy as np

    runs = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    by_rows = select(runs, commit, meter)
    if missing := [n for n in [*fit_rows, *([check] if check else [])] if n not in by_rows]:
        raise SystemExit(f"no run of {', '.join(f'{n:,}' for n in missing)} rows in {results}"
                         f"{f' of commit {commit}' if commit else ''}{f' with meter {meter}' if meter else ''}")
    model = fit([by_rows[n] for n in fit_rows])
    million = predict(model, 1e6)
    zero = predict(model, 0)
    print(f"fitted on {', '.join(f'{n:,}' for n in fit_rows)} rows (commit {by_rows[fit_rows[-1]]['commit']})\n")
    print("| phase | where | CPU s / M rows | MB read / M | MB written / M | peak RSS at 1M (GiB) | + GiB / M rows |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, p in million.items():
        slope = model[name]["peak_rss"][1] * 1e6
        print(f"| {name} | {p['kind']} | {p['cpu_s'] - zero[name]['cpu_s']:.1f} | "
              f"{(p['read_bytes'] - zero[name]['read_bytes']) / 1e6:.0f} | "
              f"{(p['written_bytes'] - zero[name]['written_bytes']) / 1e6:.0f} | {p['peak_rss'] / 2**30:.2f} | "
              f"{slope / 2**30:.3f} |")
    if check and check in by_rows:
        got, want = observed(by_rows[check]), predict(model, by_rows[check]["rows"])
        print(f"\ncheck at {by_rows[check]['rows']:,} rows: predicted vs measured")
        print("| phase | CPU s pred / meas | MB written pred / meas | peak GiB pred / meas |")
        print("|---|---:|---:|---:|")
        for name in want:
            g = got.get(name, {m: 0 for m in METRICS})
            print(f"| {name} | {want[name]['cpu_s']:.1f} / {g['cpu_s']:.1f} | {want[name]['written_bytes'] / 1e6:.0f} / "
                  f"{g['written_bytes'] / 1e6:.0f} | {want[name]['peak_rss'] / 2**30:.2f} / {g['peak_rss'] / 2**30:.2f} |")
        tw, tg = totals(want), totals(got)
        for m in ("cpu_s", "read_bytes", "written_bytes", "peak_rss"):
            print(f"total {m}: predicted {tw[m]:.4g}, measured {tg[m]:.4g}, error {100 * (tw[m] - tg[m]) / tg[m]:+.1f}%")
        fitted = [by_rows[n] for n in fit_rows]  # the process's peak, fitted on its own
        b, a = np.polyfit([r["rows"] for r in fitted], [process_peak(r) for r in fitted], 1)
        peak, measured = a + b * by_rows[check]["rows"], process_peak(by_rows[check])
        print(f"process peak RSS: predicted {peak / 2**30:.2f} GiB, measured {measured / 2**30:.2f} GiB, "
              f"error {100 * (peak - measured) / measured:+.1f}%")
        print(f"measured run total: {by_rows[check]['total']}")
    print("\n| rows | workers | wall (h) | driver CPU s | task CPU s | driver peak GiB | worker peak GiB | object store TB moved |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rows in (1e8, 1e9):
        for workers in (1, 10, 100):
            p = project(model, rows, workers)
            print(f"| {rows:.0e} | {workers} | {p['wall_s'] / 3600:.1f} | {p['driver_cpu_s']:.0f} | {p['task_cpu_s']:.0f} | "
                  f"{p['driver_peak'] / 2**30:.1f} | {p['worker_peak'] / 2**30:.2f} | {p['store_bytes'] / 1e12:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--rows", default="250000,1000000")
    m.add_argument("--out", type=Path, default=ROOT / "bench" / "cost" / "results.jsonl")
    m.add_argument("--commit", help="the code's commit, for a run from a `git archive` (no .git to ask)")
    one = sub.add_parser("one")  # internal: one run in this process
    one.add_argument("data", type=Path)
    one.add_argument("work", type=Path)
    r = sub.add_parser("model")
    r.add_argument("results", type=Path)
    r.add_argument("--fit", default="250000,1000000")
    r.add_argument("--check", type=int)
    r.add_argument("--commit", help="only the runs of this commit (default: any; the last run per size counts)")
    r.add_argument("--meter", help=f"only the runs measured with this meter (this cost.py's: {METER})")
    args = parser.parse_args()
    if args.cmd == "one":
        print(json.dumps(measure_run(args.data, args.work)))
    elif args.cmd == "model":
        report(args.results, [int(n) for n in args.fit.split(",")], args.check, args.commit, args.meter)
    else:
        commit = args.commit or subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                               capture_output=True, text=True).stdout.strip()
        for rows in (int(n) for n in args.rows.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                data = make_input(Path(tmp) / "input.parquet", rows)
                load = os.getloadavg()
                done = subprocess.run([sys.executable, __file__, "one", str(data), tmp], capture_output=True,
                                      text=True, env=os.environ | {"SLUICE_PROGRESS": "off", "PYTHONPATH": str(ROOT)})
                if done.returncode:
                    raise SystemExit(done.stderr[-3000:])
                result = json.loads(done.stdout.strip().splitlines()[-1])
                result |= {"target_rows": rows, "commit": commit, "meter": METER, "load_before": load,
                           "load_after": os.getloadavg(), "input_bytes": data.stat().st_size, "host": platform.node(),
                           "cpus": os.cpu_count(),
                           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(result) + "\n")
                print(json.dumps({k: v for k, v in result.items() if k != "phases"}), flush=True)


if __name__ == "__main__":
    main()
