"""Benchmark runners: the rows of a merging benchmark (evaluate, merge, realign) over one expert pool."""

from simo_merge.bench.classification import ClassificationBench

__all__ = ["ClassificationBench"]
