"""`sluice filter IN OUT --rules ...`: quality filters as one-off stages (scores kept as columns)."""

from __future__ import annotations

import argparse
import json

from pydantic import ValidationError

from operators import get
from operators.base import Operator
from operators.errors import ConfigError
from pipelines.oneoff import add_io_arguments, run_job

DEFAULT_RULES = "langid,gopher_repetition,gopher_quality,c4,fineweb"  # FineWeb's order: cheap and decisive first
ALIASES = {"instruction": "instruction_filter", "judge": "judge_filter", "classifier": "quality_classifier",
           "length": "length_filter", "lang": "langid"}
EXAMPLES = f"""examples:
  sluice filter web.jsonl web.clean.parquet                                  the web defaults: {DEFAULT_RULES}
  sluice filter web.jsonl out.parquet --rules gopher_quality,c4 --set gopher_quality.min_words=20
  sluice filter docs.parquet out.parquet --rules langid --languages en,de --text-field body
  sluice filter alpaca.json out.jsonl --rules instruction                    instruction-data rules
  sluice filter web.jsonl out.parquet --rules quality_classifier --set quality_classifier.keep_top=0.3
  sluice filter judged.parquet out.parquet --rules judge --set judge_filter.min_score=4

rules: gopher_quality, gopher_repetition, c4, c4_lines (rewrites text), fineweb, langid, instruction,
quality_classifier, judge, length (any registered filter name works; see `sluice operators`).
Every rule's scores stay as columns; dropped rows go to OUT's .rejects.parquet as <rule>:<reason>.
"""


def add_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "filter", help="quality-filter rows (Gopher, C4, FineWeb, language ID, instruction rules, classifier, judge)",
        description="Score rows with the chosen quality rules, in order, and drop those that fail a threshold. "
                    "Scores stay as columns; every dropped row is a reject with its rule.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_io_arguments(p)
    p.add_argument("--rules", default=DEFAULT_RULES, metavar="A,B",
                   help=f"filters to run, in order (default: {DEFAULT_RULES})")
    p.add_argument("--languages", metavar="xx,yy", help="langid: languages to keep (ISO 639-1; 'any' keeps all; default en)")
    p.add_argument("--set", action="append", default=[], metavar="RULE.PARAM=VALUE", dest="settings",
                   help="a rule's parameter (VALUE as JSON, else a string); repeatable, e.g. c4.min_sentences=3")
    p.set_defaults(handler=_filter)


def _filter(args: argparse.Namespace) -> int:
    names = [ALIASES.get(n.strip(), n.strip()) for n in args.rules.split(",") if n.strip()]
    if not names:
        raise ConfigError("--rules: name at least one filter")
    settings = _settings(args.settings, names)
    if args.languages and "langid" in names:
        settings["langid"]["languages"] = None if args.languages == "any" else args.languages.split(",")
    operators = [_operator(name, settings[name], args.text_field) for name in names]
    run_job(args, operators, fields=sorted({f for op in operators for f in _needed_fields(op)}))
    return 0


def _settings(pairs: list[str], names: list[str]) -> dict[str, dict]:
    settings: dict[str, dict] = {n: {} for n in names}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        rule, dot, param = key.partition(".")
        rule = ALIASES.get(rule, rule)
        if not sep or not dot or not param:
            raise ConfigError(f"--set {pair!r}: expected RULE.PARAM=VALUE, e.g. gopher_quality.min_words=20")
        if rule not in settings:
            raise ConfigError(f"--set {pair!r}: {rule!r} is not among --rules ({', '.join(names)})")
        try:
            settings[rule][param] = json.loads(raw)
        except json.JSONDecodeError:
            settings[rule][param] = raw
    return settings


def _operator(name: str, params: dict, text_field: str) -> Operator:
    cls = get(name)
    if "field" in cls.Params.model_fields:
        params = {"field": text_field} | params
    try:
        return cls(**params)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"--set for {name}: {problems} (see `sluice operators`)") from None


def _needed_fields(op: Operator) -> list[str]:
    """The input columns `op` reads: each must be a non-empty string (else a counted read reject)."""
    p = op.params
    if hasattr(p, "output_field"):  # instruction rules: the output and the instruction
        return [p.instruction_field, p.output_field]
    return [p.field] if hasattr(p, "field") else []
