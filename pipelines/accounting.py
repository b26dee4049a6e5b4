"""Row accounting: for every stage, rows_in + added = rows_out + sum(dropped by reason) + consumed, or the run fails.

`added` counts rows a stage created on purpose (copies made by up-sampling; every candidate a generator made);
`consumed` counts the seed rows a generator used up (seeds are inputs to a generator, not rows it passes on).
Both are 0 for every other stage."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from operators.errors import AccountingError


@dataclass
class StageCount:
    stage: str
    op: str
    rows_in: int = 0
    rows_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    added: int = 0
    consumed: int = 0
    stats: dict[str, Any] = field(default_factory=dict)  # the operator's own summary (Operator.stats)
    languages: dict[str, dict[str, int]] = field(default_factory=dict)  # lang -> {"out": n, "dropped": n}
    wall_seconds: float | None = None  # how long the stage took (None: not recorded, an older manifest)
    cpu_seconds: float | None = None  # CPU time of this process meanwhile (all its threads; not Dask workers)

    def add(self, rows_in: int, rows_out: int, reasons: dict[str, int]) -> None:
        self.rows_in += rows_in
        self.rows_out += rows_out
        self.dropped.update(reasons)

    def reasons(self, quote: str = "") -> str:
        """"r1 12, r2 3" by reason (each wrapped in `quote`), plus the copies an up-sampling stage added."""
        text = ", ".join(f"{quote}{r}{quote} {n:,}" for r, n in sorted(self.dropped.items())) or "-"
        if self.consumed:
            return text + f" ({self.consumed:,} seeds used, {self.added:,} candidates generated)"
        return text + (f" (+{self.added:,} copies added)" if self.added else "")

    @property
    def balanced(self) -> bool:
        return self.rows_in + self.added == self.rows_out + sum(self.dropped.values()) + self.consumed

    def to_json(self) -> dict[str, Any]:
        data = {"stage": self.stage, "op": self.op, "rows_in": self.rows_in, "rows_out": self.rows_out,
                "dropped": dict(sorted(self.dropped.items()))}
        if self.added:
            data["added"] = self.added
        if self.consumed:
            data["consumed"] = self.consumed
        if self.stats:
            data["stats"] = self.stats
        if self.languages:
            data["languages"] = self.languages
        if self.wall_seconds is not None:
            data["wall_seconds"], data["cpu_seconds"] = round(self.wall_seconds, 3), round(self.cpu_seconds or 0, 3)
        return data

    def timed(self, wall: float, cpu: float) -> None:
        """Add `wall` and `cpu` seconds to the stage's time."""
        self.wall_seconds = (self.wall_seconds or 0) + wall
        self.cpu_seconds = (self.cpu_seconds or 0) + cpu

    def seconds(self) -> tuple[str, str]:
        """("12.3", "20.1") for the tables; ("-", "-") when not recorded."""
        if self.wall_seconds is None:
            return "-", "-"
        return f"{self.wall_seconds:,.1f}", f"{self.cpu_seconds or 0:,.1f}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageCount:
        return cls(data["stage"], data["op"], data["rows_in"], data["rows_out"], Counter(data["dropped"]),
                   data.get("added", 0), data.get("consumed", 0), data.get("stats", {}), data.get("languages", {}),
                   data.get("wall_seconds"), data.get("cpu_seconds"))


@dataclass
class Ledger:
    """The stages of one run, in order; the first is reading."""

    stages: list[StageCount] = field(default_factory=list)

    def stage(self, name: str, op: str) -> StageCount:
        count = StageCount(name, op)
        self.stages.append(count)
        return count

    @property
    def total_dropped(self) -> int:
        return sum(sum(s.dropped.values()) for s in self.stages)

    def check(self) -> None:
        """Raise if any stage loses or invents rows, or a stage's input is not the previous stage's output."""
        previous = None
        for s in self.stages:
            if not s.balanced:
                added = f" + {s.added} added" if s.added else ""
                consumed = f" + {s.consumed} seeds consumed" if s.consumed else ""
                raise AccountingError(
                    f"stage {s.stage!r}: rows do not balance: {s.rows_in} in{added} != {s.rows_out} out + "
                    f"{sum(s.dropped.values())} dropped {dict(s.dropped)}{consumed}"
                )
            if previous is not None and s.rows_in != previous.rows_out:
                raise AccountingError(
                    f"stage {s.stage!r} received {s.rows_in} rows but {previous.stage!r} passed on {previous.rows_out}"
                )
            previous = s

    def table(self) -> str:
        rows = [("stage", "op", "rows in", "rows out", "dropped", "wall s", "cpu s", "reasons")]
        for s in self.stages:
            rows.append((s.stage, s.op, f"{s.rows_in:,}", f"{s.rows_out:,}", f"{sum(s.dropped.values()):,}",
                         *s.seconds(), s.reasons()))
        widths = [max(len(r[i]) for r in rows) for i in range(7)]
        lines = []
        for r in rows:
            cells = [r[i].ljust(widths[i]) if i < 2 else r[i].rjust(widths[i]) for i in range(7)]
            lines.append("  ".join(cells) + "  " + r[7])
        return "\n".join(lines)

    def to_json(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self.stages]

    @classmethod
    def from_json(cls, data: list[dict[str, Any]]) -> Ledger:
        return cls([StageCount.from_json(d) for d in data])
