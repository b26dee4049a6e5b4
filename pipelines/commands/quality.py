"""`sluice quality train --pos FILE --neg FILE -o MODEL`: train the fastText quality classifier that the
`quality_classifier` filter applies (DCLM-style: positives = curated text, negatives = raw web)."""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from operators.errors import ConfigError
from operators.quality.classifier import DEFAULT_MODEL, train
from pipelines.readers import IdRegistry, Source, detect_format, read_shards

EXAMPLES = """examples:
  sluice quality train --pos curated.jsonl --neg crawl.jsonl -o models/quality.bin
  sluice quality train --pos curated.jsonl --neg crawl.jsonl -o models/quality.ftz --quantize
  sluice quality train --pos alpaca.json --pos-field output --neg web.parquet -o q.bin --epoch 10
  sluice filter web.jsonl out.parquet --rules quality_classifier --set quality_classifier.model=q.bin
"""


def add_command(commands: argparse._SubParsersAction) -> None:
    quality = commands.add_parser("quality", help="train the fastText quality classifier",
                                  description="Quality classifier tools.")
    verbs = quality.add_subparsers(title="quality commands", metavar="VERB")
    p = verbs.add_parser(
        "train", help="train a fastText classifier: positives (curated) vs negatives (raw web)",
        description="Train a fastText quality classifier (DCLM-style) on two files of text. The model scores "
                    "P(like the positives) as score_quality in the quality_classifier filter.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pos", type=Path, required=True, metavar="FILE", help="positive examples (JSONL, JSON, Parquet, CSV)")
    p.add_argument("--neg", type=Path, required=True, metavar="FILE", help="negative examples")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="MODEL",
                   help=f"model file to write (the bundled default is {DEFAULT_MODEL.name}, made with --quantize)")
    p.add_argument("--pos-field", default="text", metavar="F", help="text column of --pos (default: text)")
    p.add_argument("--neg-field", default="text", metavar="F", help="text column of --neg (default: text)")
    p.add_argument("--epoch", type=int, default=25, help="training epochs (default 25)")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1; fastText can diverge above)")
    p.add_argument("--word-ngrams", type=int, default=2, help="word n-gram features (default 2)")
    p.add_argument("--dim", type=int, default=32, help="embedding size (default 32)")
    p.add_argument("--quantize", action="store_true",
                   help="product-quantise to a ~1 MB .ftz (minutes of CPU; default: a full-size .bin, seconds)")
    p.set_defaults(handler=_train)
    quality.set_defaults(handler=lambda a: (quality.print_help(), 2)[1])


def _train(args: argparse.Namespace) -> int:
    positives, negatives = _texts(args.pos, args.pos_field), _texts(args.neg, args.neg_field)
    info = train(positives, negatives, args.output, epoch=args.epoch, lr=args.lr, word_ngrams=args.word_ngrams,
                 dim=args.dim, quantize=args.quantize)
    print(f"trained on {info['positives']:,} positives and {info['negatives']:,} negatives -> "
          f"{args.output} ({info['bytes'] / 1e6:.1f} MB)")
    return 0


def _texts(path: Path, field: str) -> list[str]:
    """Every non-empty `field` value of the file; bad rows are skipped (and said so)."""
    fmt = detect_format(path)
    if fmt is None:
        raise ConfigError(f"{path}: cannot tell the format from the name (.jsonl, .json, .parquet, .csv; .gz too)")
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    texts, skipped = [], 0
    for shard in read_shards(Source(path, fmt, {field: field}, on_error="skip"), 50_000, IdRegistry()):
        texts += shard.rows[field].cast(pl.String).to_list()
        skipped += len(shard.rejects)
    if skipped:
        print(f"{path}: skipped {skipped:,} rows without a non-empty {field!r}")
    if not texts:
        raise ConfigError(f"{path}: no rows with a non-empty {field!r} (use --pos-field/--neg-field)")
    return texts
