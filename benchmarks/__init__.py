"""Benchmark scripts (not tests): run as ``python -m benchmarks.<name>``; results go to results/."""
