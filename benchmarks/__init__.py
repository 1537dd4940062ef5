"""Benchmark scripts (not tests): ``python -m benchmarks NAME [args]`` runs one (see
``__main__.py``); each writes its results under ``results/`` through ``common.write_result``."""
