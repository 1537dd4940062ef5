"""Localisation cost: wall time to rank every component of a grid, three ways (IOI, SmolLM2).

On the same IOI prompts (the task's ABC corruption for patching) and the same grid:

- **scalars**: ``ascale.fit`` to convergence (early stop once every prompt flips by the margin
  both ways, at most ``--steps``), then ``ascale.rank_components``; the clean pass is included;
- **activation patching**: ``ascale.activation_patching`` (noising; many components per
  batched forward pass, ``max_batch`` rows);
- **attribution patching**: ``ascale.attribution_patching`` (one forward and backward on the
  clean prompts, one forward on the corrupted ones, per batch).

Grids: ``heads@last`` is every head at the last position (270 components); ``blocks@all`` is
``attn_out`` and ``mlp_out`` at every layer and position (60 x n_pos). For reference, TransformerLens'
``get_act_patch_*`` does one forward pass per component (see DESIGN.md: ~8 minutes for 420).

Run: ``.venv/bin/python -m benchmarks.studies.localisation_cost [--grids heads@last,blocks@all]``;
writes studies/results/localisation_cost.json.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import ascale
from ascale.analysis.results import AttributionResult
from ascale.training.fit import FitResult
from benchmarks import common

GRIDS: dict[str, dict[str, Any]] = {
    "heads@last": {"sites": "heads", "positions": [-1]},
    "blocks@all": {"sites": "attn_out,mlp_out", "positions": "all"},
}


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def grid_cost(
    model: Any, clean: ascale.ContrastSet, corrupted: ascale.ContrastSet, grid: str, args: Any
) -> dict[str, Any]:
    spec = GRIDS[grid]
    scalars = ascale.ActivationScalars(model, sites=spec["sites"], positions=spec["positions"])

    def fit_and_rank() -> tuple[FitResult, AttributionResult]:
        result = ascale.fit(
            model, scalars, clean, steps=args.steps, batch_size=args.batch, progress=False
        )
        return result, ascale.rank_components(scalars)

    (fitted, ranking), fit_s = timed(fit_and_rank)
    print(f"{grid}: fit {fit_s:.1f} s ({fitted.steps_run} steps)", flush=True)
    metrics = ascale.evaluate(model, scalars, clean)
    patched, patch_s = timed(
        lambda: ascale.activation_patching(
            model, clean, corrupted, like=scalars, max_batch=args.max_batch
        )
    )
    print(f"{grid}: activation patching {patch_s:.1f} s", flush=True)
    estimated, attr_s = timed(
        lambda: ascale.attribution_patching(
            model, clean, corrupted, like=scalars, batch_size=args.batch
        )
    )
    print(f"{grid}: attribution patching {attr_s:.1f} s", flush=True)
    agree = ascale.agreement([ranking, patched, estimated], k=10)
    return {
        "grid": grid,
        "sites": spec["sites"],
        "positions": spec["positions"],
        "components": len(ranking),
        "seconds": {
            "scalars_fit_to_convergence": round(fit_s, 2),
            "activation_patching": round(patch_s, 2),
            "attribution_patching": round(attr_s, 2),
        },
        "fit": {
            "steps_run": fitted.steps_run,
            "stopped_early": fitted.stopped_early,
            "flip_rate_forward": metrics.flip_rate_forward,
            "flip_rate_backward": metrics.flip_rate_backward,
        },
        "patching_forward_passes": -(-len(ranking) // max(1, args.max_batch // len(clean))),
        "agreement": agree.to_dict(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grids", default="heads@last,blocks@all")
    parser.add_argument("--n", type=int, default=32, help="IOI prompts (fit and patching)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200, help="at most, with early stop")
    parser.add_argument("--max-batch", type=int, default=128, help="rows per patching pass")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--wait", action="store_true", help="wait for a quiet machine first")
    parser.add_argument("--name", default="localisation_cost")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ascale.load_model()
    clean = ascale.tasks.ioi(model, n=args.n, seed=0)
    corrupted = ascale.tasks.ioi_corrupt(clean, model, seed=0)
    load = common.wait_for_quiet() if args.wait else None
    machine = common.machine_info()
    rows = [grid_cost(model, clean, corrupted, g, args) for g in args.grids.split(",")]
    common.write_result(
        args.name,
        {
            "benchmark": "wall time to rank every component of a grid (IOI, SmolLM2-135M)",
            "machine": machine,
            "load_average_after_wait": load,
            "load_average_at_end": [round(x, 2) for x in __import__("os").getloadavg()],
            "setup": {
                "prompts": len(clean),
                "n_pos": clean.n_pos,
                "fit_batch": args.batch,
                "fit_max_steps": args.steps,
                "patching_max_batch": args.max_batch,
                "example": {"clean": clean.prompts[0], "corrupted": corrupted.prompts[0]},
            },
            "grids": rows,
        },
        common.RECORD,
    )
    for row in rows:
        print(row["grid"], row["components"], row["seconds"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
