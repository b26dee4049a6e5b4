"""Nothing lost without a loud word (issue 15), one table per behaviour, on real Alpaca rows:

- an empty mapped field names `optional: [field]`; `sluice run --on-error skip` exists;
- a read stage that rejects more than `max_reject_share` of a file, or a release of 0 rows, fails naming the
  input and the top reasons (unless allowed);
- Ctrl-C (SIGINT to the process group) and SIGTERM end a run, with and without Prefect: one line, exit 130/143,
  no Prefect chatter, no server left behind, and the next run resumes from the cache;
- output to a closed pipe ends quietly with exit 0.
Real processes and real signals; the 5-second target is measured in bench/interrupts, not here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SLUICE = Path(sys.executable).parent / "sluice"
ALPACA_FIELDS = {"instruction": "instruction", "input": "input", "output": "output"}


@pytest.fixture(scope="module")
def alpaca_head(tmp_path_factory, alpaca) -> Path:
    """The first 3,000 Alpaca rows (2/3 of them have an empty `input`), as the JSON array Alpaca ships as."""
    path = tmp_path_factory.mktemp("alpaca") / "alpaca_head.json"
    path.write_text(json.dumps(alpaca[:3000]))
    return path


def _input(path: Path, **extra) -> dict:
    return {"path": str(path), "fields": ALPACA_FIELDS} | extra


# --- messages and the loss guard ----------------------------------------------------------------------------

# (input settings, extra config, extra CLI args) -> (exit code, fragments of the one-line error or of stdout)
CASES = {
    "empty field names optional": ({}, {}, [], 1, ["item 1: field 'input' is empty", "`optional: [input]`",
                                                  "`on_error: skip`"]),
    "--on-error skip hits the loss guard": ({}, {}, ["--on-error", "skip"], 1,
                                            ["reading rejected 1,746 of 3,000 rows (58.2%)", "more than this input's max_reject_share 10%",
                                             "read:empty_field", "e.g.", "item 1: field 'input' is empty"]),
    "a higher max_reject_share accepts the loss": ({"max_reject_share": 0.9}, {}, ["--on-error", "skip"], 0,
                                                   ["read:empty_field"]),
    "optional: [input] loses nothing": ({"optional": ["input"], "on_error": "skip"}, {}, [], 0,
                                        ["released 2,996 rows"]),
    "an empty release fails": ({"optional": ["input"], "on_error": "skip"},
                               {"stages": [{"op": "length_filter", "field": "output", "min_words": 100_000}]}, [], 1,
                               ["the release would hold 0 rows", "length_filter:too_few_words 2,996",
                                "alpaca_head.json", "allow_empty: true"]),
    "allow_empty publishes it": ({"optional": ["input"], "on_error": "skip"},
                                 {"stages": [{"op": "length_filter", "field": "output", "min_words": 100_000}],
                                  "release": {"allow_empty": True}}, [], 0, ["released 0 rows"]),
}


@pytest.mark.parametrize("case", CASES)
def test_loss_is_never_silent(case, alpaca_head, write_config, sluice, tmp_path):
    settings, extra, args, code, fragments = CASES[case]
    if "release" in extra:
        extra = extra | {"release": {"dir": str(tmp_path / "releases"), **extra["release"]}}
    config = write_config([_input(alpaca_head, **settings)], **extra)
    got, out, err = sluice("run", config, "--no-prefect", *args)
    assert got == code, out + err
    text = out if code == 0 else err
    if code:
        assert err.startswith("sluice: error: ") and len(err.strip().splitlines()) == 1, err
        assert not list((tmp_path / "releases").glob("test/v*"))  # nothing published
    for fragment in fragments:
        assert fragment in text, text


# --- closed pipes -------------------------------------------------------------------------------------------


def test_output_to_a_closed_pipe_ends_quietly(tmp_path):
    """`sluice operators | head -0`: the reader is gone before the first line; exit 0, nothing on stderr."""
    proc = subprocess.Popen([SLUICE, "operators"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader leaves at once
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and err == "", err


# --- interrupts ---------------------------------------------------------------------------------------------

# (use Prefect, signal, to the whole process group as a terminal's Ctrl-C does?) -> exit code, the one line
SIGNALS = {
    "no-prefect ctrl-c": (False, signal.SIGINT, True, 130, "sluice: interrupted"),
    "no-prefect sigterm": (False, signal.SIGTERM, False, 143, "sluice: terminated"),
    "prefect ctrl-c": (True, signal.SIGINT, True, 130, "sluice: interrupted"),
    "prefect sigterm": (True, signal.SIGTERM, False, 143, "sluice: terminated"),
    "prefect sigkill": (True, signal.SIGKILL, False, -signal.SIGKILL, None),  # nothing to say; the server goes too
}


@pytest.mark.parametrize("case", SIGNALS)
def test_a_signal_ends_the_run_with_one_line_and_the_next_run_resumes(case, alpaca_head, write_config, tmp_path):
    prefect, signum, group, code, line = SIGNALS[case]
    config = write_config([_input(alpaca_head, optional=["input"], on_error="skip")],
                          [{"op": "normalize", "fields": ["instruction", "output"]}], shard_rows=500)
    paused = tmp_path / "paused"
    temp = tmp_path / "temp"
    temp.mkdir()
    env = os.environ | {"SLUICE_PAUSE_AT": f"cache.put:3:{paused}", "SLUICE_TEST_RUN": str(tmp_path),
                        "TMPDIR": str(temp)}
    args = [SLUICE, "run", config] + ([] if prefect else ["--no-prefect"])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    deadline = time.monotonic() + 240
    while not paused.exists():  # the run is inside a stage, three shard results in the cache
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    assert bool(list(temp.glob("sluice-prefect-*"))) == prefect  # the server's database folder, there to be removed
    os.killpg(proc.pid, signum) if group else os.kill(proc.pid, signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code and err.decode() == (f"{line}\n" if line else ""), err.decode()[-3000:]
    # The run does not wait for its server's exit (nor, since it does not hold the run's stdout, does communicate);
    # the server ends moments later: asked by the run, or after a SIGKILL by the kernel (seconds under load)
    for _ in range(300):
        if not (left := _processes_of(tmp_path)):
            break
        time.sleep(0.1)
    assert left == []  # Prefect's temporary server did not outlive the run
    assert not list(temp.glob("sluice-prefect-*"))  # nor its database's folder, also after a SIGKILL of the run
    assert not (tmp_path / "releases" / "test" / "v0001").exists()

    again = subprocess.run([SLUICE, "run", config, "--no-prefect"], capture_output=True, text=True,
                           env=os.environ | {"SLUICE_TEST_RUN": str(tmp_path)}, timeout=240)
    assert again.returncode == 0, again.stderr
    reused = re.search(r"resumed: (\d+) shard results reused from the cache", again.stdout)
    assert reused and int(reused[1]) >= 3, again.stdout  # the cache survived intact


def _processes_of(tmp_path: Path) -> list[str]:
    """Command lines of live processes started for this test (they carry SLUICE_TEST_RUN in the environment)."""
    mark = f"SLUICE_TEST_RUN={tmp_path}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and mark in (proc / "environ").read_bytes().split(b"\0"):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


def test_a_sluice_error_under_prefect_is_one_line(alpaca_head, write_config):
    config = write_config([_input(alpaca_head)])
    result = subprocess.run([SLUICE, "run", config], capture_output=True, text=True, timeout=240)
    assert result.returncode == 1
    assert result.stderr.startswith("sluice: error: ") and len(result.stderr.splitlines()) == 1, result.stderr
    assert "`optional: [input]`" in result.stderr


# --- unchanged re-runs --------------------------------------------------------------------------------------

# what changes before the next run -> the version it publishes (None: nothing, the latest holds the result)
RERUNS = [("nothing", None), ("--force", "v0002"), ("a stage parameter", "v0003"), ("nothing", None),
          ("an input row", "v0004")]


def test_an_unchanged_rerun_publishes_nothing_and_names_the_version(alpaca, write_config, sluice, tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in alpaca[:200]))
    stages = [{"op": "length_filter", "field": "output", "min_words": 1}]
    inputs = [_input(data, optional=["input"], on_error="skip")]
    config = write_config(inputs, stages)
    assert sluice("run", config, "--no-prefect")[0] == 0
    dataset = tmp_path / "releases" / "test"
    for change, version in RERUNS:
        args = ["--force"] if change == "--force" else []
        if change == "a stage parameter":
            config = write_config(inputs, [{"op": "length_filter", "field": "output", "min_words": 2}])
        if change == "an input row":
            rows = alpaca[:7] + [alpaca[7] | {"output": alpaca[7]["output"] + " Edited."}] + alpaca[8:200]
            data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        published = sorted(p.name for p in dataset.glob("v*"))
        code, out, err = sluice("run", config, "--no-prefect", *args)
        assert code == 0, err
        if version is None:
            assert f"unchanged: test/{published[-1]} already holds this result" in out, out
            assert sorted(p.name for p in dataset.glob("v*")) == published
        else:
            assert f"-> {dataset / version}" in out and sorted(p.name for p in dataset.glob("v*"))[-1] == version
