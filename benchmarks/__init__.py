"""Benchmark scripts (not tests): ``python -m benchmarks NAME [args]`` runs one (see
``__main__.py``). The maintained suite (the modules here) is what is re-run to check a claim and
writes under ``results/``; one-off studies (``studies/``) and GPU runs (``gpu/``) write their
dated results to the record, ``studies/results/``; all through ``common.write_result``."""
