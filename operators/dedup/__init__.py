"""Deduplication: exact (normalised-text hash); near-duplicates and decontamination build on it."""

from operators.dedup.exact import ExactDedup, content_hash

__all__ = ["ExactDedup", "content_hash"]
