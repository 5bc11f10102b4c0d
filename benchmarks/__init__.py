"""Benchmarks of hcc-exp (one script per benchmark; ``make bench`` runs them all).

Scripts are run as files (``python benchmarks/bench_preprocess.py``) or through
``benchmarks/run_all.py``; this file only makes ``benchmarks.common`` importable
from the repository root (for the scripts themselves and for ``tests/benchmarks``).
"""
