"""Mappers that clean text without dropping rows."""

from operators.clean.normalize import Normalize, for_matching, normalize_text

__all__ = ["Normalize", "for_matching", "normalize_text"]
