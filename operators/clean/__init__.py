"""Cleaning: text normalisation, HTML main-content extraction, URL filtering, PII redaction, bad words."""

from operators.clean.html_extract import HtmlExtract
from operators.clean.pii import PiiRedact
from operators.clean.normalize import Normalize, for_matching, normalize_text

__all__ = ["HtmlExtract", "Normalize", "PiiRedact", "for_matching", "normalize_text"]
