"""The demo's fits under smaller budgets: what a shorter ``ascale demo`` would give up.

On the demo's data and split (CCC, 200 prompts, 70/30, seed 0; sites attn_out+mlp_out at every
position), fits each of the demo's interventions once per budget, one at a time, and keeps
its steps, fit seconds and test-split results:

- ``scalars`` (proximal, the demo's sparse map) and ``vectors`` at batch 32 (`fit`'s default)
  and 16, each with `fit`'s stop rule (the flip target, then as many settling steps), and the
  scalars at batch 32 with 10 and 5 settling steps;
- ``circuit`` (`fit_circuit`) at 120 steps of 16 prompts (its default), fewer steps, and
  larger batches, each scored as a circuit on the test split (counterfactual ablation, no
  random baseline).

Run (one process at the demo's 2 threads, nothing else running; ~10 minutes; ``--only
circuit --circuit 2 4`` for some rows)::

    .venv/bin/python -m benchmarks studies.demo_budget

Writes ``benchmarks/studies/results/demo_budget.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch

import ascale
from ascale.interventions import build
from benchmarks import common

SITES = "attn_out,mlp_out"
# (method, batch size, settling steps: None is `fit`'s own, as many as reaching the target took)
STEERING = [
    ("scalars", 32, None),
    ("scalars", 16, None),
    ("scalars", 32, 10),
    ("scalars", 32, 5),
    ("vectors", 32, None),
    ("vectors", 16, None),
]
# (steps, batch size): fit_circuit's default is 120 at 16
CIRCUIT = [(120, 16), (80, 16), (60, 16), (40, 16), (40, 32), (30, 32), (40, 24)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="demo_budget")
    parser.add_argument("--only", nargs="*", help="these methods only (scalars, vectors, circuit)")
    parser.add_argument("--circuit", type=int, nargs="*", help="only these rows of CIRCUIT")
    args = parser.parse_args(argv)
    model = ascale.load_model()
    data = ascale.tasks.ccc(model, n=200, seed=0)
    corrupted = ascale.tasks.ccc_corrupt(data, model, seed=0)
    (train, test), (ctrain, ctest) = (d.split(test_size=0.3, seed=0) for d in (data, corrupted))
    rows: list[dict[str, Any]] = []
    for method, batch_size, settle in STEERING:
        if args.only and method not in args.only:
            continue
        iv = build(method, model, sites=SITES, positions="all", n_pos=data.n_pos)
        sparsity = "proximal" if method == "scalars" else None
        result = ascale.fit(
            model, iv, train, batch_size=batch_size, sparsity=sparsity, settle=settle, seed=0,
            progress=False,
        )  # fmt: skip
        start = time.perf_counter()
        metrics = ascale.evaluate(model, iv, test)
        row = {
            "method": method,
            "batch_size": batch_size,
            "settle": settle,
            "steps_run": result.steps_run,
            "fit_s": round(result.wall_time_s, 1),
            "evaluate_test_s": round(time.perf_counter() - start, 1),
            "flip_forward": round(metrics.flip_rate_forward, 3),
            "flip_backward": round(metrics.flip_rate_backward, 3),
            "kl": round(metrics.faithfulness_kl, 3),
            "n_active": metrics.n_active,
        }
        rows.append(row)
        print(row, flush=True)
    chosen = [CIRCUIT[i] for i in args.circuit] if args.circuit else CIRCUIT
    for steps, batch_size in chosen if not args.only or "circuit" in args.only else ():
        circuit = ascale.CircuitScalars(model, sites=SITES, positions="all", n_pos=data.n_pos)
        result = ascale.fit_circuit(
            model, circuit, train, ctrain, steps=steps, batch_size=batch_size, progress=False
        )
        scored = ascale.score_circuits(
            model, test, {"circuit": ascale.rank_components(circuit)},
            grid=ascale.Grid.of(circuit), corrupted=ctest, n_random=0,
        )  # fmt: skip
        summary = scored.summary().loc["circuit"]
        row = {
            "method": "circuit",
            "steps_run": steps,
            "batch_size": batch_size,
            "fit_s": round(result.wall_time_s, 1),
            "cpr": round(float(summary["cpr"]), 3),
            "cmd": round(float(summary["cmd"]), 3),
        }
        rows.append(row)
        print(row, flush=True)
    common.write_result(
        args.name,
        {
            "study": "the demo's fits under smaller budgets (CCC, 140 train / 60 test, seed 0)",
            "torch_threads": torch.get_num_threads(),
            "load_average_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
            "rows": rows,
            "machine": common.machine_info(),
        },
        common.RECORD,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
