"""The `sluice` command line: help everywhere, exit codes 0/1/2, no tracebacks for user mistakes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

HELP_COMMANDS = [[], ["run"], ["operators"], ["deploy"], ["server"], ["release"], ["release", "list"], ["release", "show"],
                 ["release", "verify"], ["cache"], ["cache", "clear"]]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "sluice")
def test_help_on_every_command(sluice, command):
    with pytest.raises(SystemExit) as exit_:
        sluice(*command, "--help")
    assert exit_.value.code == 0


def test_no_command_is_bad_usage(sluice):
    code, out, _ = sluice()
    assert code == 2 and "commands:" in out


def test_run_show_verify_round_trip(sluice, write_config, tmp_path):
    cfg = write_config([{"path": str(ROOT / "data/web/dolma/*.jsonl"), "fields": {"text": "text"}}],
                       [{"op": "normalize"}, {"op": "length_filter", "min_words": 100}])
    code, out, err = sluice("run", cfg, "--no-prefect")
    assert code == 0, err
    assert "length_filter:too_few_words" in out and f"-> {tmp_path / 'releases' / 'test' / 'v0001'}" in out
    releases = tmp_path / "releases"
    code, out, _ = sluice("release", "list", "--releases", releases)
    assert code == 0 and out.startswith("test/v0001")
    code, out, _ = sluice("release", "show", "test", "--releases", releases)
    assert code == 0 and "read " in out and "cc_en_head-0091.jsonl" in out
    code, out, _ = sluice("release", "verify", "test/v0001", "--releases", releases)
    assert code == 0 and out.startswith("OK ")
    shard = releases / "test" / "v0001" / "data" / "part-00000.parquet"
    shard.chmod(0o644)
    shard.write_bytes(shard.read_bytes()[:-1] + b"X")
    code, _, err = sluice("release", "verify", "test/v0001", "--releases", releases)
    assert code == 1 and f"FAIL {shard}: sha256 differs" in err


def test_bad_config_exits_2_without_traceback(sluice, write_config):
    cfg = write_config([{"path": "nowhere/*.jsonl"}], [{"op": "dedupe"}])
    code, _, err = sluice("run", cfg, "--no-prefect")
    assert code == 2
    assert "inputs[0].path: no input file matches" in err and "stages[0].op: unknown operator 'dedupe'" in err
    assert "Traceback" not in err


def test_bad_input_row_exits_1_naming_file_and_line(sluice, write_config, tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "good row"}\n{"text": 3}\n')
    code, _, err = sluice("run", write_config([{"path": str(data), "fields": {"text": "text"}}]), "--no-prefect")
    assert code == 1 and f"{data}:2: field 'text' must be a string, got int" in err


def test_operators_lists_parameters_and_defaults(sluice):
    code, out, _ = sluice("operators")
    assert code == 0
    assert "length_filter  (Filter)" in out and "    min_words: int, default 1" in out
    assert "exact_dedup  (GlobalOperator)" in out and 'fields: list[str], default ["text"]' in out
    # A description that wraps in the docstring is shown whole, not cut at its first line.
    assert "(13-gram evidence confirmed by trigram overlap; short items matched whole)." in out
    summaries = [line.split(")  ", 1)[1] for line in out.splitlines() if not line.startswith(" ")]
    assert len(summaries) >= 20 and all(s.count("(") == s.count(")") and s.endswith(".") for s in summaries)


def test_console_script_is_installed():
    result = subprocess.run([Path(sys.executable).parent / "sluice", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: sluice" in result.stdout


def test_the_command_line_exits_without_a_last_garbage_collection(tmp_path):
    """`sluice` freezes the garbage collector at exit, after every other exit hook: the interpreter's last
    collection would walk every object Prefect, pydantic, Polars and Dask made (~0.7 s per run) for nothing."""
    code = ("import atexit, gc, sys; atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0)); "
            "from pipelines import cli; sys.exit(cli.main(['operators']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0 and done.stdout.rstrip().endswith("frozen True"), done.stderr[-2000:]
