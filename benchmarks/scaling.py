"""How the training step scales: batch size, prompt length, number of sites (ascale and floor).

Each point times ``ascale.fit`` and the hand-written floor (`benchmarks.floor`) in this process,
interleaved round by round, and reports both medians and their ratio. Defaults otherwise as in
`benchmarks.step`: SmolLM2, CCC, scalars on every head's z and every MLP output, batch 32.

- batch: 8, 16, 32, 64 prompts (twice as many rows: both signs of beta);
- prompt length: CCC prompts after 0, 1, 3 and 7 copies of a neutral sentence (12 to ~68 tokens);
- sites: one hook at the first layer (the backward still runs through every layer), one at the
  last layer, all 30 ``hook_z`` (270 heads), all 30 ``hook_mlp_out``, and both (60 hooks).

Run: ``.venv/bin/python -m benchmarks.scaling [--only batch,length,sites]``; writes
results/scaling.json.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

import ascale
from benchmarks import common, setups

SITES = {
    "one (layer 0 mlp_out)": "blocks.0.hook_mlp_out",
    "one (layer 29 mlp_out)": "blocks.29.hook_mlp_out",
    "heads (30 hooks)": "heads",
    "mlp_out (30 hooks)": "mlp_out",
    "heads + mlp_out (60 hooks)": "heads,mlp_out",
}


def point(
    bridge: Any,
    hf: Any,
    data: ascale.ContrastSet,
    batch: int,
    sites: str,
    rounds: int,
    steps: int,
) -> dict[str, Any]:
    runners = {
        "floor": setups.floor_runner(hf, data, steps, batch, last_only=True, sites=sites),
        "ascale": setups.ascale_runner(bridge, data, steps, batch, sites=sites),
    }
    samples = common.interleaved(runners, rounds=rounds)
    runners["floor"].trainer.scalars.remove()  # type: ignore[attr-defined]  # hf is reused
    floor, ours = statistics.median(samples["floor"]), statistics.median(samples["ascale"])
    return {
        "n_pos": data.n_pos,
        "batch_prompts": batch,
        "sites": sites,
        "floor_s": round(floor, 4),
        "ascale_s": round(ours, 4),
        "ratio": round(ours / floor, 3),
        "paired_ratio": round(common.paired_ratios(samples, "floor")["ascale"], 3),
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="batch,length,sites")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="steps per round and config")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--wait", action="store_true", help="wait for a quiet machine first")
    parser.add_argument("--name", default="scaling")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = setups.load_all(plain_bridge=False, sdpa=False)
    bridge, hf = models["bridge"], models["hf_eager"]
    load = common.wait_for_quiet() if args.wait else None
    machine = common.machine_info()
    out: dict[str, list[dict[str, Any]]] = {}
    only = args.only.split(",")
    r, k = args.rounds, args.steps
    if "batch" in only:
        out["batch"] = []
        for b in (8, 16, 32, 64):
            print(f"-- batch {b}", flush=True)
            data = setups.ccc_data(bridge, b)
            out["batch"].append(point(bridge, hf, data, b, setups.ALL_SITES, r, k))
    if "length" in only:
        out["length"] = []
        for repeats in (0, 1, 3, 7):
            data = setups.ccc_data(bridge, 32, prefix_repeats=repeats)
            print(f"-- length {data.n_pos}", flush=True)
            out["length"].append(point(bridge, hf, data, 32, setups.ALL_SITES, r, k))
    if "sites" in only:
        out["sites"] = []
        data = setups.ccc_data(bridge, 32)
        for label, sites in SITES.items():
            print(f"-- sites {label}", flush=True)
            out["sites"].append({"label": label, **point(bridge, hf, data, 32, sites, r, k)})
    common.write_result(
        args.name,
        {
            "benchmark": "training step scaling: seconds per step, ascale and the floor",
            "machine": machine,
            "load_average_after_wait": load,
            "setup": {"rounds": r, "steps_per_round": k, "model": "SmolLM2-135M fp32"},
            **out,
        },
    )
    for axis, rows in out.items():
        for row in rows:
            print(axis, row.get("label", ""), row["batch_prompts"], row["n_pos"], row["ratio"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
