"""Deduplication: exact (normalised-text hash), near-duplicate (MinHash LSH), repeated lines/paragraphs/sentence
spans (boilerplate), benchmark decontamination, semantic (SemDeDup: embeddings, k-means, near neighbours inside
clusters)."""

from operators.dedup.decontam import Decontaminate
from operators.dedup.exact import ExactDedup, content_hash
from operators.dedup.lines import LineDedup
from operators.dedup.minhash import MinHashDedup
from operators.dedup.semantic import SemanticDedup

__all__ = ["Decontaminate", "ExactDedup", "LineDedup", "MinHashDedup", "SemanticDedup", "content_hash"]
