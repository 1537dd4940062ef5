"""Where to steer: scalars at every position, the last, the last 3, or shared over positions.

Issue 28: with scalars at every position (the default before it), the held-out prompts of the
small hand-written sets flipped 0.60-0.86 forward. A scalar tied to a position index meets a
different token in every prompt; the last position is where the next token is computed. This
study fits `ActivationScalars` on ``attn_out,mlp_out`` with fit's defaults on each set's 70/30
split (the splits, set loading and records of `benchmarks.studies.fit_defaults`) at each of:

- ``every``: ``positions="all"``, a scalar per site, layer and position;
- ``last``: ``positions=[-1]``, the last position only (a layer x site map);
- ``last3``: ``positions=[-3, -2, -1]``;
- ``shared``: ``positions="shared"``, one scalar per site and layer used at every position;

and `DynamicScalars` (any length: the mixed-length set) as fit trains them by default
(``dynamic``). Each record holds test flips both ways, KL, parameters, steps, wall time and
the fit's own report. The four small sets run first, then CCC and IOI (``--n-builtin``
prompts each, 100 by default to keep the run under ~40 minutes on 2 shared cores), then the
dynamic fit. Runs already in the result file for other sets or configs are kept.

Run::

    .venv/bin/python -m benchmarks.studies.positions                          # everything
    .venv/bin/python -m benchmarks.studies.positions --sets plural --configs last,every
    .venv/bin/python -m benchmarks.studies.positions --sets plural --configs last \\
        --steps 2 --out /tmp/positions.json                                    # smoke: seconds

Writes ``benchmarks/studies/results/positions.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

import ascale
from benchmarks import common
from benchmarks.studies.fit_defaults import (
    BUILTIN_SETS,
    SITES,
    SPLIT_SEED,
    TEST_SIZE,
    csv_arg,
    fit_report,
    jsonable,
    load_set,
    set_info,
)

RESULT = common.RECORD / "positions.json"
SMALL_SETS = ("pronouns", "plural", "antonyms", "country_language")
MIXED_SETS = ("pronouns_mixed",)
SETS = (*SMALL_SETS, *BUILTIN_SETS, *MIXED_SETS)
# name -> (method, positions); None: the method takes no positions (dynamic scalars)
CONFIGS: dict[str, tuple[str, Any]] = {
    "every": ("scalars", "all"),
    "last": ("scalars", [-1]),
    "last3": ("scalars", [-3, -2, -1]),
    "shared": ("scalars", "shared"),
    "dynamic": ("dynamic", None),
}
PLAN: dict[str, tuple[str, ...]] = {
    **{name: ("every", "last", "last3", "shared") for name in (*SMALL_SETS, *BUILTIN_SETS)},
    "pronouns_mixed": ("dynamic",),
}


def build(model: Any, config: str) -> ascale.Intervention:
    """A fresh, unfitted intervention of `config` on `SITES`."""
    method, positions = CONFIGS[config]
    if method == "dynamic":
        return ascale.DynamicScalars(model, sites=SITES)
    return ascale.ActivationScalars(model, sites=SITES, positions=positions)


def run_job(
    model: Any, train: ascale.ContrastSet, test: ascale.ContrastSet, config: str, steps: int | None
) -> dict[str, Any]:
    """Fit `config` on `train` with fit's defaults (`steps` overrides), evaluate both splits."""
    torch.manual_seed(0)
    intervention = build(model, config)
    kwargs = {} if steps is None else {"steps": steps}
    result = ascale.fit(model, intervention, train, **kwargs, progress=False)
    m_train = ascale.evaluate(model, intervention, train)
    m_test = ascale.evaluate(model, intervention, test)
    return {
        "config": config,
        "positions": jsonable(getattr(intervention, "positions", None)),
        "fit_kwargs": kwargs,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "steps_run": result.steps_run,
        "stopped_early": result.stopped_early,
        "wall_time_s": round(result.wall_time_s, 2),
        "train_flip_forward": round(m_train.flip_rate_forward, 4),
        "train_flip_backward": round(m_train.flip_rate_backward, 4),
        "test_flip_forward": round(m_test.flip_rate_forward, 4),
        "test_flip_backward": round(m_test.flip_rate_backward, 4),
        "test_kl": round(m_test.faithfulness_kl, 5),
        "n_active": m_test.n_active,
        "n_params": m_test.n_params,
        "train": m_train.to_dict(),
        "test": m_test.to_dict(),
        "fit": fit_report(result),
    }


def table(runs: dict[str, Any]) -> list[str]:
    head = (
        f"{'set':18}{'config':9}{'steps':>6}{'wall s':>8}{'test +1':>9}{'test -1':>9}"
        f"{'KL':>8}{'KL/every':>10}{'params':>8}"
    )
    lines = [head]
    for name, configs in runs.items():
        every = configs.get("every", {}).get("test_kl")
        for config, r in configs.items():
            if config == "_set":
                continue
            ratio = f"{r['test_kl'] / every:.2f}" if every else "-"
            lines.append(
                f"{name:18}{config:9}{r['steps_run']:>6}{r['wall_time_s']:>8.0f}"
                f"{r['test_flip_forward']:>9.2f}{r['test_flip_backward']:>9.2f}"
                f"{r['test_kl']:>8.3f}{ratio:>10}{r['n_params']:>8}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sets", type=lambda v: csv_arg(v, SETS, "set"), default=list(SETS),
        help=f"comma-separated subset of {','.join(SETS)}",
    )  # fmt: skip
    parser.add_argument(
        "--configs", type=lambda v: csv_arg(v, tuple(CONFIGS), "config"), default=list(CONFIGS),
        help=f"comma-separated subset of {','.join(CONFIGS)} (each set runs those of its plan)",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, help="override steps (smoke tests)")
    parser.add_argument("--n-builtin", type=int, default=100, help="CCC / IOI prompts (100)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    runs: dict[str, Any] = previous.get("runs", {})
    start = time.perf_counter()
    model = ascale.load_model()
    for name in args.sets:
        data = load_set(model, name, args.n_builtin)
        train, test = data.split(test_size=TEST_SIZE, seed=SPLIT_SEED)
        runs.setdefault(name, {})["_set"] = set_info(data, train, test)
        for config in (c for c in PLAN[name] if c in args.configs):
            record = run_job(model, train, test, config, args.steps)
            runs[name][config] = record
            print(
                f"{name}/{config}: {record['steps_run']} steps, {record['wall_time_s']} s, test "
                f"flips {record['test_flip_forward']:.2f} / {record['test_flip_backward']:.2f}, "
                f"KL {record['test_kl']:.3f}, {record['n_params']} parameters",
                flush=True,
            )
            payload = {
                "description": __doc__.splitlines()[0],
                "model": model.cfg.model_name,
                "sites": SITES,
                "split": {"test_size": TEST_SIZE, "seed": SPLIT_SEED},
                "n_builtin": args.n_builtin,
                "configs": jsonable(CONFIGS),
                "threads": args.threads,
                "runs": runs,
            }
            common.write_result(args.out.stem, payload, folder=args.out.parent)
    print("\n".join(table(runs)))
    print(f"done in {round(time.perf_counter() - start, 1)} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
