"""Diversity: samplers that keep the rows that teach the most, source mixing, and diversity metrics."""

from operators.diversity.dsir import DsirSample
from operators.diversity.metrics import (ReferenceClusters, cluster_diversity, distinct_n, diversity_metrics,
                                         pairwise_similarity, verb_object_coverage)
from operators.diversity.mix import Mix, mixture
from operators.diversity.samplers import ClusterSample, DeitaSample, KCenterSample, RandomSample, Sampler

__all__ = ["ClusterSample", "DeitaSample", "DsirSample", "KCenterSample", "Mix", "RandomSample", "ReferenceClusters",
           "Sampler", "cluster_diversity", "distinct_n", "diversity_metrics", "mixture", "pairwise_similarity",
           "verb_object_coverage"]
