"""Quality filters: score columns, then thresholds as rules."""

from operators.quality.classifier import QualityClassifier
from operators.quality.gopher import GopherQuality, GopherRepetition
from operators.quality.instruction import InstructionFilter
from operators.quality.judge import JudgeFilter
from operators.quality.langid import LanguageId
from operators.quality.length import LengthFilter
from operators.quality.web import C4Filter, C4Lines, FineWebFilter

__all__ = ["C4Filter", "C4Lines", "FineWebFilter", "GopherQuality", "GopherRepetition", "InstructionFilter",
           "JudgeFilter", "LanguageId", "LengthFilter", "QualityClassifier"]
