"""Circuit scalars: where the scores start (random noise, or attribution patching's order).

Fits `ascale.fit_circuit`'s loop twice on one grid and split, once from scores drawn as tiny
noise and once from the first-order start `fit_circuit` uses (the gradient of the logit
difference at the clean model, scaled to 0.01), and scores both as circuits on the test split
(counterfactual ablation, no random baseline). The split and settings are those of
``benchmarks.circuits`` (96 prompts, 50/50, seed 0; 120 SGD steps, lr 0.3, batch 16).

Run (one process, 1 thread; IOI every position takes ~10 minutes on a quiet machine)::

    .venv/bin/python -m benchmarks studies.circuit_start ioi_all

Writes ``benchmarks/results/circuit_start_{setting}.json``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import ascale
from ascale.analysis import circuit_fit
from ascale.interventions import soft_top_k
from benchmarks import common
from benchmarks.circuits import SETTINGS


def _fit(model: Any, circuit: Any, train: Any, source: Any, gap: float, start: str) -> float:
    """The loop of `fit_circuit` from the given start; returns its wall time."""
    t0 = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    if start == "first-order":
        circuit_fit._first_order_start(model, circuit, train, source, gap)
    else:
        noise = 1e-2 * torch.randn(len(circuit.grid), generator=generator)
        with torch.no_grad():
            for name, value in circuit.grid.to_params(noise).items():
                circuit.params[name].copy_(value)
    sizes, weights = circuit_fit._sizes(len(circuit.grid))
    optimizer = torch.optim.SGD(list(circuit.parameters()), lr=0.3)
    order, cursor = torch.randperm(len(train), generator=generator), 0
    for _ in range(120):
        if cursor >= len(train):
            order, cursor = torch.randperm(len(train), generator=generator), 0
        rows = order[cursor : cursor + 16]
        cursor += 16
        k = sizes[int(torch.multinomial(weights, 1, generator=generator))]
        keep = soft_top_k(circuit.scores(), k, 0.5)
        batch = {n: a[rows] for n, a in source.items()}
        m = circuit_fit._masked_m(model, circuit, train.subset(rows), batch, keep)
        loss = -m.mean() / gap
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - t0


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
        source = circuit_fit._ablated(model, circuit, train, ctrain)
        _, gap = circuit_fit._clean(model, circuit, train, source)
        seconds[start] = round(_fit(model, circuit, train, source, gap, start), 1)
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
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
