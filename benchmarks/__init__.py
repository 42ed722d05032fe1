"""Benchmarks and the reproduction of the paper's tables, each run as `python -m benchmarks.<name>`.

What they share (protocols, run bookkeeping, tables, commits of results, timing helpers) is in `benchmarks.common`.
"""
