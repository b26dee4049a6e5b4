"""`sluice sample IN OUT --method cluster|kcenter|deita|dsir|random --budget N`: keep N diverse rows."""

from __future__ import annotations

import argparse
import polars as pl
from pydantic import ValidationError

from operators.base import REASON
from operators.diversity import ClusterSample, DeitaSample, DsirSample, KCenterSample, RandomSample
from operators.diversity.metrics import ReferenceClusters, diversity_metrics
from operators.diversity.samplers import joined_text
from operators.errors import ConfigError
from pipelines.oneoff import add_io_arguments, run_job

METHODS = {"cluster": ClusterSample, "kcenter": KCenterSample, "deita": DeitaSample, "dsir": DsirSample,
           "random": RandomSample}
SCORED = ("cluster", "deita")

DESCRIPTION = """Keep BUDGET rows chosen for diversity; the others go to the rejects file as `not_selected`
with a detail (cluster, nearest kept row, similarity or weight). Methods:
  cluster  k-means over word 1-2-gram TF-IDF (SVD-reduced), the budget spread evenly over clusters (default)
  kcenter  k-center greedy: repeatedly keep the row farthest from everything kept
  deita    best --score-col first (default: longest text), skipping rows too similar to kept ones
  dsir     importance resampling toward the text of --target (e.g. a benchmark's questions)
  random   uniform random rows, the baseline
Deterministic for a given --seed, whatever the file's row order."""


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("sample", help="keep N diverse rows (cluster, k-center, Deita, DSIR, random)",
                                 description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_io_arguments(parser)
    parser.set_defaults(handler=run)
    parser.add_argument("--method", choices=list(METHODS), default="cluster", help="selection method (default: cluster)")
    parser.add_argument("--budget", type=int, required=True, metavar="N", help="rows to keep")
    parser.add_argument("--score-col", metavar="C", help="numeric column, higher is better (cluster, deita)")
    parser.add_argument("--target", metavar="FILE", help="dsir: file of text to resemble (JSONL, JSON, Parquet, CSV)")
    parser.add_argument("--target-field", metavar="F", help="dsir: text column(s) of --target (default: --text-field)")
    parser.add_argument("--clusters", type=int, metavar="K", help="cluster: number of clusters (default: budget/5)")
    parser.add_argument("--threshold", type=float, metavar="T", help="deita: max cosine similarity (default: 0.6)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--report", action="store_true",
                        help="print diversity metrics (distinct-n, clusters, pairwise similarity) before and after")


def run(args: argparse.Namespace) -> int:
    fields = [f.strip() for f in args.text_field.split(",") if f.strip()]
    sampler = build_sampler(args, fields)
    outcome = run_job(args, [sampler], fields=fields[:1])  # further fields may be empty (e.g. Alpaca's input)
    if args.report:
        kept = pl.concat(outcome.shards, how="diagonal_relaxed")
        dropped = [r.filter(pl.col(REASON).str.ends_with(":not_selected")) for r in outcome.rejects]
        pool = pl.concat([kept, *dropped], how="diagonal_relaxed")
        pool_text = joined_text(pool, fields)
        clusters = ReferenceClusters(pool_text, seed=args.seed)
        before = diversity_metrics(pool_text, clusters, seed=args.seed)
        after = diversity_metrics(joined_text(kept, fields), clusters, seed=args.seed)
        print("\n" + report_table(before, after))
    return 0


REPORTED = [("rows", ("rows",)), ("distinct-1", ("distinct_1",)), ("distinct-2", ("distinct_2",)),
            ("cluster coverage", ("cluster", "coverage")), ("cluster entropy (norm.)", ("cluster", "entropy_normalized")),
            ("pairwise ROUGE-L mean", ("pairwise", "rouge_l", "mean")),
            ("pairwise Jaccard mean", ("pairwise", "jaccard", "mean"))]


def report_table(before: dict, after: dict) -> str:
    """Diversity before and after sampling, one metric a line (lexical metrics favour smaller sets)."""
    def get(metrics: dict, path: tuple) -> str:
        for key in path:
            metrics = metrics[key]
        return f"{metrics:,}" if isinstance(metrics, int) else f"{metrics:.4f}"

    lines = [f"{'diversity':<26}{'before':>12}{'after':>12}"]
    lines += [f"{name:<26}{get(before, path):>12}{get(after, path):>12}" for name, path in REPORTED]
    return "\n".join(lines)


def build_sampler(args: argparse.Namespace, fields: list[str]):
    if args.score_col and args.method not in SCORED:
        raise ConfigError(f"--score-col applies to --method {' or '.join(SCORED)}, not {args.method}")
    if args.method == "dsir" and not args.target:
        raise ConfigError("--method dsir needs --target FILE: text of the kind you want more of")
    if args.target and args.method != "dsir":
        raise ConfigError(f"--target applies to --method dsir, not {args.method}")
    options = {"budget": args.budget, "fields": fields, "seed": args.seed, "score_col": args.score_col,
               "clusters": args.clusters, "threshold": args.threshold, "target": args.target,
               "target_fields": args.target_field.split(",") if args.target_field else None}
    cls = METHODS[args.method]
    params = {k: v for k, v in options.items() if v is not None and k in cls.Params.model_fields}
    try:
        return cls(**params)
    except ValidationError as err:
        problem = err.errors()[0]
        raise ConfigError(f"sample --method {args.method}: {'.'.join(map(str, problem['loc']))}: {problem['msg']}") from None
