"""`sluice generate CONFIG`: run a generation job (see pipelines/generation.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_command(commands: argparse._SubParsersAction) -> None:
    text = ("Generate rows with an LLM (Self-Instruct, Evol-Instruct, responses, pretraining grids, judge, "
            "preference pairs) and write them, their rejects, failures and usage beside the config's output. "
            "With no endpoint configured (and no OPENAI_BASE_URL) the embedded local model is started.")
    parser = commands.add_parser("generate", help="generate rows with an LLM from a generation config", description=text)
    parser.add_argument("config", type=Path, help="generation YAML, e.g. configs/generate_demo.yaml")
    parser.set_defaults(handler=_generate)


def _generate(args: argparse.Namespace) -> int:
    from pipelines.generation import load, run_generation, summary

    job = load(args.config)
    outcome = run_generation(job)
    print(summary(outcome, job))
    return 0
