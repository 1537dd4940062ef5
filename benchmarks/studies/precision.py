"""Reduced precision on this CPU: one of SmolLM2's MLP matmuls in float32, bfloat16 and autocast.

A training step on SmolLM2 is mostly matmuls of this shape (64 rows x 12 positions against
576 x 1536 weights). Where the CPU has no bfloat16 instructions (``avx512_bf16`` / AMX),
PyTorch emulates them and bfloat16 is far slower than float32; there, ascale's steps stay in
float32 (``load_model(dtype=...)`` remains available for GPUs). Interleaved, in one process.

Run: ``.venv/bin/python -m benchmarks.studies.precision [--rounds 5]``; writes studies/results/precision.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from benchmarks import common


def _per_call(fn: Callable[[], object], calls: int) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) / calls

    return run


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            line = next(x for x in f if x.startswith("flags"))
    except (OSError, StopIteration):
        return []
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")
    return [flag for flag in line.split(":", 1)[1].split() if flag in wanted]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, w = torch.randn(768, 576), torch.randn(576, 1536)
    xb, wb = x.bfloat16(), w.bfloat16()

    def autocast() -> object:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return x @ w

    runners = {
        "float32": _per_call(lambda: x @ w, 20),
        "bfloat16": _per_call(lambda: xb @ wb, 2),
        "autocast_bfloat16": _per_call(autocast, 2),
    }
    samples = common.interleaved(runners, rounds=args.rounds)
    error = float(((xb @ wb).float() - x @ w).abs().max() / (x @ w).abs().max())
    result = {
        "benchmark": "matmul [768 x 576] @ [576 x 1536] (one SmolLM2 MLP projection of a step)",
        "machine": common.machine_info(),
        "cpu_flags": _cpu_flags(),
        "threads": args.threads,
        "seconds": {n: common.summary(v) for n, v in samples.items()},
        "paired_ratio_to_float32": common.paired_ratios(samples, "float32"),
        "bfloat16_max_relative_error": error,
    }
    common.write_result("precision", result, common.RECORD)
    for n, v in samples.items():
        ratio = result["paired_ratio_to_float32"][n]
        print(f"{n:18s} {statistics.median(v) * 1e3:9.2f} ms  x{ratio:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
