"""Progress: a bar with rows/s and ETA on a terminal, plain periodic lines in logs/CI, quiet for short work."""

from __future__ import annotations

import io
import re
import pytest

from conftest import ROOT
from pipelines import progress
from pipelines.progress import Progress, default_mode


class FakeClock:
    def __init__(self, monkeypatch) -> None:
        self.now = 1000.0
        monkeypatch.setattr(progress.time, "monotonic", lambda: self.now)


def test_bar_shows_share_rate_and_eta(monkeypatch):
    clock, out = FakeClock(monkeypatch), io.StringIO()
    p = Progress("normalize", total=10_000, mode="bar", stream=out)
    clock.now += 2.0
    p.advance(4_000)
    assert out.getvalue() == "\r\x1b[Knormalize [########------------]  40% 4,000/10,000 rows 2,000 rows/s ETA 0:03"
    clock.now += 0.1
    p.advance(100)  # within 0.2 s of the last redraw: not redrawn
    assert out.getvalue().count("\r") == 1
    clock.now += 2.9
    p.advance(5_900)
    p.close()
    assert out.getvalue().endswith("[####################] 100% 10,000/10,000 rows 2,000 rows/s ETA 0:00\n")


def test_plain_lines_only_for_long_stages(monkeypatch):
    clock, out = FakeClock(monkeypatch), io.StringIO()
    quick = Progress("read", mode="plain", stream=out, interval=30)
    clock.now += 5
    quick.advance(500)
    quick.close()
    assert out.getvalue() == ""  # a 5-second stage leaves the log clean

    slow = Progress("exact_dedup.index", total=90_000, mode="plain", stream=out, interval=30)
    for _ in range(9):
        clock.now += 10
        slow.advance(10_000)
    slow.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "exact_dedup.index [#######-------------]  33% 30,000/90,000 rows 1,000 rows/s ETA 1:00",
        "exact_dedup.index [#############-------]  67% 60,000/90,000 rows 1,000 rows/s ETA 0:30",
        "exact_dedup.index [####################] 100% 90,000/90,000 rows 1,000 rows/s ETA 0:00",
        "exact_dedup.index: done, 90,000 rows in 1:30 (1,000 rows/s)",
    ]
    assert not any("\r" in line or "\x1b" in line for line in lines)  # nothing a log viewer would garble


def test_off_is_silent(monkeypatch):
    clock, out = FakeClock(monkeypatch), io.StringIO()
    p = Progress("x", total=10, mode="off", stream=out, interval=0)
    clock.now += 100
    p.advance(10)
    p.close()
    assert out.getvalue() == "" and not p.enabled


@pytest.mark.parametrize("tty, env, expected", [
    (True, {}, "bar"), (False, {}, "plain"), (True, {"CI": "true"}, "plain"),
    (False, {"SLUICE_PROGRESS": "bar"}, "bar"), (True, {"SLUICE_PROGRESS": "off"}, "off"),
])
def test_mode_follows_terminal_ci_and_override(monkeypatch, tty, env, expected):
    for name in ("CI", "SLUICE_PROGRESS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    stream = io.StringIO()
    stream.isatty = lambda: tty
    assert default_mode(stream) == expected


def test_a_real_run_logs_plain_progress(sluice, monkeypatch, tmp_path):
    """`sluice run` with stderr captured (not a terminal, as in CI): each stage ends with one plain line."""
    monkeypatch.delenv("SLUICE_PROGRESS", raising=False)
    monkeypatch.setenv("SLUICE_PROGRESS_INTERVAL", "0")
    code, _, err = sluice("run", ROOT / "configs" / "demo.yaml", "--no-prefect", "--releases", tmp_path / "releases")
    assert code == 0, err
    done = re.findall(r"^(\S+): done, ([\d,]+) rows in \d+:\d\d \([\d,]+ rows/s\)$", err, re.M)
    row_stages = "url_filter+html_extract+normalize+length_filter+langid+gopher_repetition+gopher_quality+bad_words"
    # (no index steps: the tasks before each dedup cached its index, engine.Ahead)
    assert [label for label, _ in done] == ["read", row_stages, "exact_dedup.decide", "exact_dedup.apply",
                                            "minhash_dedup.decide", "minhash_dedup.apply", "decontaminate+pii_redact",
                                            "release.data", "release.rejects"]
    # read: the rows known before reading (the plain JSONL files' 70 lines; the WARC and gzipped files' records,
    # 162 in all with them, are not counted ahead); the row stages: 82 WARC records + 80 documents
    assert dict(done)["read"] == "70" and dict(done)[row_stages] == "117"
    assert int(dict(done)["release.data"].replace(",", "")) + int(dict(done)["release.rejects"].replace(",", "")) == 162
