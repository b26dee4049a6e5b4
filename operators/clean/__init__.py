"""Cleaning: text normalisation, HTML main-content extraction, URL filtering, PII redaction, bad words."""

from operators.clean.bad_words import BadWords
from operators.clean.html_extract import HtmlExtract
from operators.clean.pii import PiiRedact
from operators.clean.url_filter import UrlFilter
from operators.clean.normalize import Normalize, for_matching, normalize_text

__all__ = ["BadWords", "HtmlExtract", "Normalize", "PiiRedact", "UrlFilter", "for_matching", "normalize_text"]
