"""Deduplication: exact (normalised-text hash) and near-duplicate (MinHash LSH)."""

from operators.dedup.exact import ExactDedup, content_hash
from operators.dedup.minhash import MinHashDedup

__all__ = ["ExactDedup", "MinHashDedup", "content_hash"]
