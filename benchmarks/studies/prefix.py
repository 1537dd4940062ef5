"""Prefix reuse: a training step, and activation patching, with and without it, in one process.

When every hook an intervention edits sits at layer >= l0, the blocks below l0 see the clean
prompt; ascale computes the residual entering block l0 once and runs only blocks l0.. each step
(`ascale._tl.Prefix`). Activation patching does the same per pass (a component at layer l
only needs blocks l..).

Training step (SmolLM2-135M fp32, CCC prompts, batch 32 = 64 rows with both signs of beta, scalars
on every head's z and MLP output; seconds per step from ``fit``'s own clock, which starts after
the clean distributions and the prefix are computed; runners called round-robin):

- ``floor``: the hand-written plain Hugging Face step (``benchmarks/floor.py``), every layer;
- ``floor_upper``: the floor with scalars on the upper half of the layers only (it still runs
  the whole model: the floor has no prefix reuse);
- ``ascale``: ``ascale.fit``, every layer (no prefix to reuse);
- ``ascale_upper``: ``ascale.fit`` on the upper half, with prefix reuse;
- ``ascale_upper_full``: the same without prefix reuse (``ascale.training._passes.clean_prefix``
  switched off).

Patching: ``activation_patching`` of the demo's grid (attn_out, mlp_out x every position) on
`--patch-n` CCC prompts with their corruptions, with and without prefix reuse
(``_tl.prefix_layers`` switched off), alternating.

Run: ``.venv/bin/python -m benchmarks studies.prefix [--rounds 5] [--threads 2]``; writes
studies/results/prefix.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch

import ascale
from ascale import _tl
from ascale.training import _passes
from benchmarks import common, setups


def _upper_sites(n_layers: int) -> str:
    upper = range(n_layers // 2, n_layers)
    return ",".join(
        [f"blocks.{layer}.attn.hook_z" for layer in upper]
        + [f"blocks.{layer}.hook_mlp_out" for layer in upper]
    )


def _without_prefix(runner: setups.Runner) -> setups.Runner:
    def run() -> float:
        saved = _passes.clean_prefix
        _passes.clean_prefix = lambda *args, **kwargs: None  # fit calls it through the module
        try:
            return runner()
        finally:
            _passes.clean_prefix = saved

    return run


def _patching(model: Any, clean: Any, corrupted: Any, reuse: bool) -> float:
    saved = _tl.prefix_layers
    if not reuse:
        _tl.prefix_layers = lambda model, layers: []  # type: ignore[assignment]
    try:
        start = time.perf_counter()
        ascale.activation_patching(model, clean, corrupted, sites="attn_out,mlp_out")
        return time.perf_counter() - start
    finally:
        _tl.prefix_layers = saved  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per round and config")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--patch-n", type=int, default=8)
    parser.add_argument("--patch-rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--name", default="prefix")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = setups.load_all(plain_bridge=False, sdpa=False)
    bridge, hf = loaded["bridge"], loaded["hf_eager"]
    data = setups.ccc_data(bridge, 64)
    upper = _upper_sites(bridge.cfg.n_layers)
    k, b = args.steps, args.batch
    runners = {
        "floor": setups.floor_runner(hf, data, k, b, last_only=True),
        "floor_upper": setups.floor_runner(hf, data, k, b, last_only=True, sites=upper),
        "ascale": setups.ascale_runner(bridge, data, k, b),
        "ascale_upper": setups.ascale_runner(bridge, data, k, b, sites=upper),
        "ascale_upper_full": _without_prefix(setups.ascale_runner(bridge, data, k, b, sites=upper)),
    }
    machine = common.machine_info()
    load_start = [round(x, 2) for x in os.getloadavg()]
    samples = common.interleaved(runners, rounds=args.rounds)

    full = ascale.tasks.ccc(bridge, n=200, seed=0)
    corrupted = ascale.tasks.ccc_corrupt(full, bridge, seed=0)
    rows = range(args.patch_n)
    clean, source = full.subset(rows), corrupted.subset(rows)
    patch = {"with_prefix": [], "full_forward": []}  # type: dict[str, list[float]]
    for r in range(args.patch_rounds):
        order = [True, False] if r % 2 == 0 else [False, True]
        for reuse in order:
            seconds = _patching(bridge, clean, source, reuse)
            patch["with_prefix" if reuse else "full_forward"].append(seconds)
            print(f"patching round {r + 1}: prefix={reuse} {seconds:.1f} s", flush=True)

    result = {
        "benchmark": "prefix reuse: training step and activation patching, with and without",
        "machine": machine,
        "load_average_at_start": load_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "setup": {
            "model": "SmolLM2-135M-Instruct fp32",
            "task": "CCC",
            "n_pos": data.n_pos,
            "batch_prompts": b,
            "rows_per_forward": 2 * b,
            "sites_all": setups.ALL_SITES,
            "sites_upper": f"heads and mlp_out at layers {bridge.cfg.n_layers // 2}.."
            f"{bridge.cfg.n_layers - 1}",
            "rounds": args.rounds,
            "steps_per_round": k,
            "patch_prompts": args.patch_n,
            "patch_grid": "attn_out,mlp_out x every position",
        },
        "seconds_per_step": {n: common.summary(v) for n, v in samples.items()},
        "ratio_to_floor": common.ratios(samples, "floor"),
        "paired_ratio_to_floor": common.paired_ratios(samples, "floor"),
        "paired_ratio_upper_prefix_to_full": statistics.median(
            a / c
            for a, c in zip(samples["ascale_upper"], samples["ascale_upper_full"], strict=True)
        ),
        "patching_seconds": {n: common.summary(v) for n, v in patch.items()},
        "patching_ratio_prefix_to_full": statistics.median(patch["with_prefix"])
        / statistics.median(patch["full_forward"]),
    }
    common.write_result(args.name, result, common.RECORD)
    for n, v in samples.items():
        print(f"{n:20s} {statistics.median(v):.3f} s/step  x{result['ratio_to_floor'][n]:.3f}")
    print(f"patching: prefix/full {result['patching_ratio_prefix_to_full']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
