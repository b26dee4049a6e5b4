"""Quality filters: score columns, then thresholds as rules."""

from operators.quality.length import LengthFilter

__all__ = ["LengthFilter"]
