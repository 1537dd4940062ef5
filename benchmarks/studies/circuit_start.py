"""Circuit scalars: where the scores start (random noise, or attribution patching's order).

Runs `ascale.fit_circuit` twice on one grid and split, once with its start swapped for scores
drawn as tiny noise and once from the first-order start it uses (the gradient of the logit
difference at the clean model, scaled to 0.01), and scores both as circuits on the test split
(counterfactual ablation, no random baseline). The split and settings are those of
``benchmarks.studies.circuits`` (96 prompts, 50/50, seed 0; 120 SGD steps, lr 0.3, batch 16).

Run (one process, 1 thread; IOI every position takes ~10 minutes on a quiet machine)::

    .venv/bin/python -m benchmarks studies.circuit_start ioi_all

Writes ``benchmarks/studies/results/circuit_start_{setting}.json``.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any
from unittest import mock

import torch

import ascale
from ascale.training import circuit as circuit_fit
from benchmarks import common
from benchmarks.studies.circuits import SETTINGS


def _noise_start(model: Any, scalars: Any, data: Any, source: Any, gap: float) -> None:
    """The start `fit_circuit` replaced: tiny seeded noise, in place of the first-order start."""
    noise = 1e-2 * torch.randn(len(scalars.grid), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for name, value in scalars.grid.to_params(noise).items():
            scalars.params[name].copy_(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("setting", choices=sorted(SETTINGS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    setting = SETTINGS[args.setting]
    model = ascale.load_model()
    data = getattr(ascale.tasks, setting["task"])(model, n=96, seed=0)
    corrupted = getattr(ascale.tasks, f"{setting['task']}_corrupt")(data, model)
    (train, test), (ctrain, ctest) = (d.split(test_size=0.5, seed=0) for d in (data, corrupted))
    rankings, seconds = {}, {}
    for start in ("noise", "first-order"):
        circuit = ascale.CircuitScalars(
            model, sites=setting["sites"], positions=setting["positions"], n_pos=data.n_pos
        )
        swap = (
            mock.patch.object(circuit_fit, "_first_order_start", _noise_start)
            if start == "noise"
            else contextlib.nullcontext()
        )
        with swap:  # fit_circuit itself, with only its start swapped
            result = ascale.fit_circuit(model, circuit, train, ctrain, progress=False)
        seconds[start] = round(result.wall_time_s, 1)
        rankings[start] = ascale.rank_components(circuit)
        print(f"{start}: {seconds[start]} s", flush=True)
    scored = ascale.score_circuits(
        model, test, rankings, grid=ascale.Grid.of(circuit), corrupted=ctest, n_random=0
    )
    summary = scored.summary()
    print(summary.round(3).to_string())
    common.write_result(
        f"circuit_start_{args.setting}",
        {
            "setting": args.setting,
            **setting,
            "summary": summary.reset_index().to_dict("records"),
            "fit_seconds": seconds,
            "machine": common.machine_info(),
        },
        common.RECORD,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
