"""Deduplication: exact (normalised-text hash), near-duplicate (MinHash LSH), benchmark decontamination."""

from operators.dedup.decontam import Decontaminate
from operators.dedup.exact import ExactDedup, content_hash
from operators.dedup.minhash import MinHashDedup

__all__ = ["Decontaminate", "ExactDedup", "MinHashDedup", "content_hash"]
