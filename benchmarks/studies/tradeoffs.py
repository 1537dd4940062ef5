"""The paper's trade-offs: scalars and steering vectors over a grid of ``lambda_min``, CCC and IOI.

For each task (SmolLM2-135M, ``ascale.tasks.<task>(model, n, seed=0)`` split 70/30 with seed 0,
sites ``attn_out,mlp_out`` at every position), `ascale.sweep` fits scalars and vectors at every
``lambda_min`` of the grid (``lambda_faith`` 1, margin 2) on the training split and evaluates
both splits. Every fit runs the same steps and batch without early stopping, with the proximal
L1 step (`ascale.training.optim.ProximalAdamax`), which leaves exact zeros: so ``n_active`` (scalars
above 0.01; vectors by norm) shows what each weight buys. The learning rate is each method's
proximal default (`ascale.interventions.FitDefaults.rate`, 0.1 for both: this sweep chose it) unless
``--lr`` sets it. The proximal step moves only the parameter with the largest gradient by ``lr``
and every other in proportion, so Adam's rate for vectors (0.01) under-trains them (see
``docs/benchmarks.md``).

The question (issue 8, from the paper): do scalars reach vectors' effectiveness and
faithfulness with >= 100x fewer parameters, on training and on test prompts?

Writes ``benchmarks/studies/results/tradeoffs.json`` (one table row per task, method, weight and split;
tasks already in the file and not run again are kept)
and ``docs/img/tradeoffs_<task>.png`` (`ascale.plot.plot_tradeoffs`, drawn by headless Chromium).

Run (tens of minutes on 2 CPU cores; the budget is per fit)::

    .venv/bin/python -m benchmarks studies.tradeoffs                       # CCC and IOI, 8 weights
    .venv/bin/python -m benchmarks studies.tradeoffs --tasks ioi --methods scalars --lr scalars=0.3 \\
        --steps 40                                    # one method again; the other's rows stay
    .venv/bin/python -m benchmarks studies.tradeoffs --tasks ccc --steps 2 --lambda-min 1e-3,1 \\
        --out /tmp/smoke                                            # smoke: a minute
"""

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

import ascale
from ascale.analysis.sweep import sweep
from ascale.interventions import METHODS
from benchmarks import common

ROOT = common.ROOT
DOCS_IMG = ROOT / "docs" / "img"
LAMBDAS = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
SITES = "attn_out,mlp_out"
CLAIM_FIELDS = ("lambda_min", "effectiveness", "faithfulness_kl", "n_params", "n_active")


def run_task(
    model: Any,
    task: str,
    n: int,
    lambdas: list[float],
    steps: int,
    batch: int,
    lrs: dict[str, float],
) -> dict[str, Any]:
    """One task's sweep (each method at its own learning rate, `lrs`) and its summary."""
    data = getattr(ascale.tasks, task)(model, n=n, seed=0)
    train, test = data.split(test_size=0.3, seed=0)
    tables, walls = [], {}
    for method, lr in lrs.items():
        start = time.perf_counter()
        options = {"steps": steps, "batch_size": batch, "stop": "none", "sparsity": "proximal"}
        tables.append(
            sweep(
                model,
                train,
                test,
                methods=[method],
                lambda_min=lambdas,
                sites=SITES,
                fit_options={**options, "lr": lr},
                progress=True,
            )
        )
        walls[method] = round(time.perf_counter() - start, 1)
    table = pd.concat(tables, ignore_index=True)
    return {
        "task": task,
        "n_train": len(train),
        "n_test": len(test),
        "n_pos": data.n_pos,
        "wall_time_s": walls,
        "rows": json.loads(table.to_json(orient="records")),
        "table": table,
    }


def merged(previous: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """`new` with the rows and settings of the methods it did not run kept from `previous`
    (the same task's earlier entry), and the claim made over all of them."""
    methods = set(new["wall_time_s"])
    out = dict(new)
    kept = [r for r in (previous or {}).get("rows", []) if r["method"] not in methods]
    if kept:
        assert previous is not None
        # one method order in every file and figure (its colours follow it): scalars, vectors
        out["rows"] = sorted(kept + new["rows"], key=lambda r: str(r["method"]))
        out["earlier_wall_time_s"] = previous.get("wall_time_s")  # the run the kept rows are from
        before = previous.get("settings", {})
        per_method = before.get("per_method") or {
            m: {
                "steps": before.get("steps"),
                "batch_size": before.get("batch_size"),
                "lr": before["lr"][m] if isinstance(before.get("lr"), dict) else before.get("lr"),
            }
            for m in {r["method"] for r in kept}
        }
        kept_settings = {m: v for m, v in per_method.items() if m not in methods}
        out["settings"] = {"per_method": {**kept_settings, **new["settings"]["per_method"]}}
    table = pd.DataFrame(out["rows"])
    out["claim"] = claim(table)
    out["table"] = table
    return out


def claim(table: Any) -> list[dict[str, Any]]:
    """Per split: the best scalars setting (highest mean flip rate, then lowest KL) against
    the best vectors setting, and the parameter ratio between them (none without both)."""
    out: list[dict[str, Any]] = []
    if not {"scalars", "vectors"} <= set(table["method"]):
        return out
    frame = table.assign(
        effectiveness=(table["flip_rate_forward"] + table["flip_rate_backward"]) / 2
    )
    for split, part in frame.groupby("split", sort=False):
        best = {}
        for method, rows in part.groupby("method"):
            top = rows.sort_values(["effectiveness", "faithfulness_kl"], ascending=[False, True])
            best[method] = top.iloc[0]
        s, v = best["scalars"], best["vectors"]
        out.append(
            {
                "split": split,
                **{m: {k: _num(best[m][k]) for k in CLAIM_FIELDS} for m in ("scalars", "vectors")},
                "param_ratio_vectors_to_scalars": round(float(v["n_params"] / s["n_params"]), 1),
            }
        )
    return out


def _num(value: Any) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="ccc,ioi", help="comma-separated: ccc, ioi")
    parser.add_argument("--methods", default="scalars,vectors", help="scalars and/or vectors")
    parser.add_argument(
        "--lr",
        default="",
        help="per-method learning rates, e.g. scalars=0.3 (default: each method's proximal rate)",
    )
    parser.add_argument("--n", type=int, default=200, help="prompts per task (70/30 split)")
    parser.add_argument("--steps", type=int, default=20, help="steps per fit")
    parser.add_argument("--batch", type=int, default=16, help="prompts per step")
    parser.add_argument(
        "--lambda-min", default=",".join(map(str, LAMBDAS)), help="comma-separated weights"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=None, help="results folder (default studies/results/)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lambdas = [float(x) for x in args.lambda_min.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    if not methods or any(m not in ("scalars", "vectors") for m in methods):
        parser.error(f"--methods takes scalars and/or vectors, got {args.methods!r}")
    given = dict(pair.split("=", 1) for pair in args.lr.split(",") if pair)
    lrs = {m: float(given.get(m, METHODS[m].fit_defaults.rate("proximal"))) for m in methods}
    model = ascale.load_model()
    # tasks (and, within a task, methods) run before stay in the file
    path = (args.out or common.RECORD) / "tradeoffs.json"
    previous = json.loads(path.read_text()).get("tasks", {}) if path.exists() else {}
    results: dict[str, Any] = dict(previous)
    common_settings = {
        "sites": SITES,
        "positions": "all",
        "stop": "none",
        "sparsity": "proximal",
        "lambda_faith": 1.0,
        "margin": 2.0,
        "n": args.n,
        "threads": args.threads,
    }
    per_method = {m: {"steps": args.steps, "batch_size": args.batch, "lr": lrs[m]} for m in methods}

    def write() -> None:  # after each task and its figure: nothing measured is lost
        payload = {"description": __doc__.split("\n\n")[0], "settings": common_settings}
        common.write_result("tradeoffs", {**payload, "tasks": results}, args.out or common.RECORD)

    for task in args.tasks.split(","):
        result = run_task(model, task, args.n, lambdas, args.steps, args.batch, lrs)
        result["settings"] = {"per_method": per_method}
        result = merged(previous.get(task), result)
        table = result.pop("table")
        result["settings"] = {**common_settings, **result["settings"]}
        results[task] = {**result, "machine": common.machine_info()}
        for row in results[task]["claim"]:
            print(task, row, flush=True)
        write()
        figure = ascale.plot.plot_tradeoffs(table)
        figure.update_layout(title=f"{task.upper()}: scalars vs vectors over lambda_min")
        png = common.screenshot(figure, (args.out or DOCS_IMG) / f"tradeoffs_{task}.png", 1000, 420)
        results[task]["figure"] = os.path.relpath(png.resolve(), ROOT)
        write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
