"""Deduplication: exact (normalised-text hash), near-duplicate (MinHash LSH), repeated lines/paragraphs/sentence
spans (boilerplate), benchmark decontamination."""

from operators.dedup.decontam import Decontaminate
from operators.dedup.exact import ExactDedup, content_hash
from operators.dedup.lines import LineDedup
from operators.dedup.minhash import MinHashDedup

__all__ = ["Decontaminate", "ExactDedup", "LineDedup", "MinHashDedup", "content_hash"]
