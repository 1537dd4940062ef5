"""Dynamic scalars on prompts of unseen token lengths, against position-tied scalars (SmolLM2).

For CCC and IOI, `DynamicScalars` are trained on prompts of some token lengths and evaluated on
prompts of *other* lengths only; `ActivationScalars` (tied to positions) are trained and evaluated
on a same-length split, the only setting they support. Both use the sites ``attn_out,mlp_out`` at
every layer and the default `Objective`. The dynamic runs are made with ``detach_input=True`` and
``False``; the variants (with ``detach_input=True``) change one setting at a time: learning rate,
sites, the unnormalised probe ``w . h + b``.

A job takes about 33 s on an H100 (12 jobs, ~7 min with ``--device cuda``); on a shared 2-core
CPU a job of 200 steps takes tens of minutes, so run ``--only main --task ccc`` there, or fewer.

Usage::

    .venv/bin/python benchmarks/studies/dynamic_generalisation.py            # everything
    .venv/bin/python benchmarks/studies/dynamic_generalisation.py --only main  # the acceptance runs
    .venv/bin/python benchmarks/studies/dynamic_generalisation.py --device cuda --save-dir out/

Writes ``benchmarks/studies/results/dynamic_generalisation.json`` (metrics per job, flip rates per test
length, wall times, versions and device) and prints a summary table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

import ascale
from ascale import ContrastSet
from benchmarks import common

RESULTS = common.RECORD / "dynamic_generalisation.json"
SITES = "attn_out,mlp_out"
STEPS, BATCH, N_MAX = 200, 32, 160
LR = {"scalars": 0.05, "dynamic": 0.01}


def length_split(data: ContrastSet, train_max: int, test_min: int) -> tuple[Any, Any]:
    """Prompts of at most `train_max` tokens to train on, of at least `test_min` to test on."""
    train = data.subset((data.lengths <= train_max).nonzero().flatten()[:N_MAX])
    test = data.subset((data.lengths >= test_min).nonzero().flatten()[:N_MAX])
    return train, test


def datasets(model: Any) -> dict[str, dict[str, Any]]:
    """Mixed-length sets split by length (dynamic) and one-length sets split at random (tied)."""
    ccc = ascale.tasks.ccc(model, n=1000, seed=0, length=None, template="all")
    ioi = ascale.tasks.ioi(model, n=1000, seed=0, length=None, templates="all")
    return {
        "ccc": {
            "lengths": length_split(ccc, train_max=14, test_min=16),
            "same_length": ascale.tasks.ccc(model, n=200, seed=0).split(0.3, seed=0),
        },
        "ioi": {
            "lengths": length_split(ioi, train_max=15, test_min=17),
            "same_length": ascale.tasks.ioi(model, n=200, seed=0).split(0.3, seed=0),
        },
    }


def jobs() -> dict[str, dict[str, Any]]:
    """name -> settings; ``group`` is ``main`` (acceptance) or ``variant``."""
    out: dict[str, dict[str, Any]] = {}
    for task in ("ccc", "ioi"):
        for detach in (True, False):
            out[f"dynamic/{task}/detach_{str(detach).lower()}"] = {
                "group": "main", "task": task, "method": "dynamic", "detach_input": detach,
            }  # fmt: skip
        out[f"scalars/{task}/same_length"] = {"group": "main", "task": task, "method": "scalars"}
        out[f"dynamic/{task}/lr_0.05"] = {
            "group": "variant", "task": task, "method": "dynamic", "lr": 0.05,
        }  # fmt: skip
        out[f"dynamic/{task}/heads"] = {
            "group": "variant", "task": task, "method": "dynamic", "sites": "heads",
        }  # fmt: skip
        out[f"dynamic/{task}/unnormalised"] = {
            "group": "variant", "task": task, "method": "dynamic", "normalize": False,
            "lr": 1e-4,
        }  # fmt: skip
    return out


def run_job(model: Any, data: dict[str, Any], spec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    method, sites = spec["method"], spec.get("sites", SITES)
    lr = spec.get("lr", LR[method])
    if method == "dynamic":
        train, test = data[spec["task"]]["lengths"]
        iv: Any = ascale.DynamicScalars(
            model,
            sites=sites,
            detach_input=spec.get("detach_input", True),
            normalize=spec.get("normalize", True),
        )
    else:
        train, test = data[spec["task"]]["same_length"]
        iv = ascale.ActivationScalars(model, sites=sites, n_pos=train.n_pos)
    torch.manual_seed(0)
    result = ascale.fit(model, iv, train, steps=STEPS, lr=lr, batch_size=BATCH, progress=False)
    test_metrics = ascale.evaluate(model, iv, test)
    per_length = {}
    for n in sorted(set(test.lengths.tolist())):
        m = ascale.evaluate(model, iv, test.with_length(n))
        per_length[n] = {
            "n": m.n_prompts,
            "flip_forward": round(m.flip_rate_forward, 4),
            "flip_backward": round(m.flip_rate_backward, 4),
        }
    record = {
        **{k: v for k, v in spec.items() if k != "group"},
        "group": spec["group"],
        "sites": sites,
        "lr": lr,
        "train_lengths": sorted(set(train.lengths.tolist())),
        "test_lengths": sorted(set(test.lengths.tolist())),
        "steps_run": result.steps_run,
        "stopped_early": result.stopped_early,
        "fit_wall_s": round(result.wall_time_s, 1),
        "train": ascale.evaluate(model, iv, train).to_dict(),
        "test": test_metrics.to_dict(),
        "test_per_length": per_length,
    }
    return iv, record


def summary(records: dict[str, dict[str, Any]]) -> list[str]:
    head = f"{'job':34}{'test lengths':>14}{'flip +1':>9}{'flip -1':>9}{'KL':>9}{'params':>9}"
    lines = [head]
    for name, r in records.items():
        t = r["test"]
        span = f"{r['test_lengths'][0]}-{r['test_lengths'][-1]}"
        lines.append(
            f"{name:34}{span:>14}{t['flip_rate_forward']:>9.2f}{t['flip_rate_backward']:>9.2f}"
            f"{t['faithfulness_kl']:>9.4f}{t['n_params']:>9,}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["main", "variant"], default=None)
    parser.add_argument("--task", choices=["ccc", "ioi"], default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--save-dir", type=Path, default=None, help="save the main dynamic runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = ascale.load_model(device=args.device)
    data = datasets(model)
    records: dict[str, dict[str, Any]] = {}
    for name, spec in jobs().items():
        if (args.only and spec["group"] != args.only) or (args.task and spec["task"] != args.task):
            continue
        iv, records[name] = run_job(model, data, spec)
        print(f"{name}: {records[name]['test']} ({records[name]['fit_wall_s']} s)", flush=True)
        if args.save_dir and spec["group"] == "main" and spec.get("detach_input") is True:
            ascale.save(iv, args.save_dir / name.replace("/", "_"), metadata={"job": name})
        write(args, model, records, start)  # after every job: a cut-off run keeps what it did
    print("\n".join(summary(records)))
    print(f"wrote {args.out} in {round(time.perf_counter() - start, 1)} s")
    return 0


def write(args: argparse.Namespace, model: Any, records: dict[str, Any], start: float) -> None:
    result = {
        "description": __doc__.splitlines()[0],
        "model": model.cfg.model_name,
        "settings": {"sites": SITES, "steps": STEPS, "batch_size": BATCH, "lr": LR, "n_max": N_MAX},
        "objective": vars(ascale.Objective()),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "jobs": records,
        "machine": common.machine_info(args.device),  # device, GPU name, threads, versions
    }
    common.write_result(args.out.stem, result, folder=args.out.parent)


if __name__ == "__main__":
    raise SystemExit(main())
