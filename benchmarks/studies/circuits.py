"""Every ranking scored as a circuit on SmolLM2 (issue 8's acceptance): CPR, CMD, f(k).

For each setting, `ascale.compare` splits the task's prompts 50/50, fits sparse scalars
(``scalars``), dense scalars (``scalars_dense``), steering vectors (by norm) and dynamic scalars
on the training half, patches the first 16 training prompts (activation and attribution
patching), and scores every ranking and a random baseline (mean of 5) as circuits on the test
half with counterfactual ablation (``docs/circuits.md``), ``k = max(1, round(p * n))``.

Settings:

- ``ioi_last``: IOI, every head at the last position (270 components);
- ``ioi_all``: IOI, every head at every position (3,780 components);
- ``ccc``: CCC, attn_out and mlp_out at every position (720 components).

Run (tens of minutes on 2 CPU cores; one setting at a time)::

    .venv/bin/python -m benchmarks.studies.circuits ioi_last
    .venv/bin/python -m benchmarks.studies.circuits ccc --methods scalars,activation_patching,random
    .venv/bin/python -m benchmarks.studies.circuits ioi_last --reuse   # fit only what is not saved

Writes ``benchmarks/studies/results/circuits_{setting}.json`` and prints the summary.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import ascale
from ascale.analysis.compare import METHODS as ALL_METHODS
from ascale.analysis.compare_methods import SPARSE_MAP
from benchmarks import common

SETTINGS: dict[str, dict[str, Any]] = {
    "ioi_last": {"task": "ioi", "sites": "heads", "positions": [-1]},
    "ioi_all": {"task": "ioi", "sites": "heads", "positions": "all"},
    "ccc": {"task": "ccc", "sites": "attn_out,mlp_out", "positions": "all"},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("setting", choices=sorted(SETTINGS))
    parser.add_argument("--methods", default=",".join(ALL_METHODS))
    parser.add_argument("--n", type=int, default=96, help="prompts (split 50/50)")
    parser.add_argument("--lambda-min", type=float, default=None, help="sparse scalars' L1 weight")
    parser.add_argument("--refit", default="10", help="sizes of the refit curve, e.g. 5,10")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="use the interventions a previous run saved beside the result (same split and "
        "grid) instead of fitting them again",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    setting = SETTINGS[args.setting]
    started = time.perf_counter()
    model = ascale.load_model()
    build = getattr(ascale.tasks, setting["task"])
    corrupt = getattr(ascale.tasks, f"{setting['task']}_corrupt")
    data = build(model, n=args.n, seed=0)
    corrupted = corrupt(data, model)
    options: dict[str, dict[str, Any]] = {
        "scalars_dense": {"sparsity": "l1", "stop": "train", "steps": 60, "batch_size": 32},
        "vectors": {"stop": "train", "steps": 60, "batch_size": 32},
        "dynamic": {"stop": "none", "steps": 60, "batch_size": 32},
    }
    if args.lambda_min is not None:
        options["scalars"] = {
            **SPARSE_MAP,
            "objective": ascale.Objective(lambda_min=args.lambda_min),
        }
    refit = [int(k) for k in args.refit.split(",") if k]
    folder = common.RECORD / f"circuits_{args.setting}"
    fitted = {
        method: ascale.load(folder / method, model)
        for method in args.methods.split(",")
        if args.reuse and (folder / method / "intervention.json").exists()
    }
    if fitted:
        print(f"reusing the saved {', '.join(fitted)} from {folder}", flush=True)
    result = ascale.compare(
        model,
        data,
        corrupted,
        methods=args.methods.split(","),
        sites=setting["sites"],
        positions=setting["positions"],
        fit_options=options,
        refit_ks=refit if "scalars" in args.methods.split(",") else (),
        fitted=fitted,
    )
    summary = result.summary()
    print(summary.round(3).to_string())
    print(result.circuits.curves.pivot_table(index="k", columns="method", values="f_abs").round(3))
    if not result.refit.empty:
        print(result.refit.round(3))
    for method, iv in result.interventions.items():  # small: rescore without refitting
        ascale.save(iv, folder / method)
    payload = {
        "setting": args.setting,
        **setting,
        "n_prompts": len(data),
        "k_rule": "max(1, round(p * n))",
        "wall_time_s": round(time.perf_counter() - started, 1),
        "reused": sorted(fitted),
        "result": result.to_dict(),
        "machine": common.machine_info(),
    }
    common.write_result(f"circuits_{args.setting}", payload, common.RECORD)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
