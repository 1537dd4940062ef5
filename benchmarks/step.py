"""Training-step time of ascale against the plain Hugging Face floor, in one process, interleaved.

Scalars on every head's ``blocks.{l}.attn.hook_z`` and every ``blocks.{l}.hook_mlp_out``,
position-tied, SmolLM2-135M (fp32, CPU), CCC prompts, batch 32 (64 rows: both signs of beta).

Configurations (all in this process, called round-robin so machine load hits them alike):

- ``floor``: plain ``LlamaForCausalLM`` (eager attention, as the Bridge uses) with torch hooks,
  logits at the last position only (``logits_to_keep=1``), the same trick ascale uses;
- ``floor_full_logits``: the same, computing logits at every position;
- ``floor_sdpa``: the floor with PyTorch's fused attention;
- ``ascale``: ``ascale.fit`` on ``ascale.load_model()`` (compatibility mode: folded weights);
- ``ascale_plain_bridge``: ``ascale.fit`` on ``ascale.load_model(compatibility_mode=False)``;
- ``fwd_*``: one no-hook, no-grad forward pass of the same 64 rows (full logits) on Hugging
  Face, the plain Bridge and the compatibility-mode Bridge: the Bridge's own overhead.

Run: ``.venv/bin/python -m benchmarks.step [--rounds 7] [--wait]``; writes results/step.json.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from benchmarks import common, setups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="steps per round and config")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n-prompts", type=int, default=64)
    parser.add_argument("--wait", action="store_true", help="wait for a quiet machine first")
    parser.add_argument("--name", default="step")
    parser.add_argument("--quick", action="store_true", help="floor and ascale only")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)

    models = setups.load_all(plain_bridge=not args.quick, sdpa=not args.quick)
    bridge, hf = models["bridge"], models["hf_eager"]
    data = setups.ccc_data(bridge, args.n_prompts)
    k, b = args.steps, args.batch
    runners = {
        "floor": setups.floor_runner(hf, data, k, b, last_only=True),
        "ascale": setups.ascale_runner(bridge, data, k, b),
        "floor_full_logits": setups.floor_runner(hf, data, k, b, last_only=False),
    }
    if not args.quick:
        runners["floor_sdpa"] = setups.floor_runner(models["hf_sdpa"], data, k, b, last_only=True)
        runners["ascale_plain_bridge"] = setups.ascale_runner(models["bridge_plain"], data, k, b)
        rows = data.tokens[:b].repeat(2, 1)
        runners["fwd_hf"] = setups.forward_runner(hf, rows, 2, hf=True)
        runners["fwd_bridge_plain"] = setups.forward_runner(
            models["bridge_plain"], rows, 2, hf=False
        )
        runners["fwd_bridge_compat"] = setups.forward_runner(bridge, rows, 2, hf=False)

    load = common.wait_for_quiet() if args.wait else None
    machine = common.machine_info()
    samples = common.interleaved(runners, rounds=args.rounds)
    step_names = [n for n in samples if not n.startswith("fwd_")]
    fwd_names = [n for n in samples if n.startswith("fwd_")]
    result = {
        "benchmark": "training step (forward + backward + Adam), seconds per step",
        "machine": machine,
        "load_average_after_wait": load,
        "load_average_at_end": [round(x, 2) for x in __import__("os").getloadavg()],
        "setup": {
            "model": "SmolLM2-135M-Instruct fp32",
            "task": "CCC",
            "n_pos": data.n_pos,
            "batch_prompts": b,
            "rows_per_forward": 2 * b,
            "sites": setups.ALL_SITES,
            "n_params": hf.config.num_hidden_layers
            * (hf.config.num_attention_heads + 1)
            * data.n_pos,
            "rounds": args.rounds,
            "steps_per_round": k,
        },
        "seconds_per_step": {n: common.summary(samples[n]) for n in step_names},
        "ratio_to_floor": {
            n: r for n, r in common.ratios(samples, "floor").items() if n in step_names
        },
        "paired_ratio_to_floor": {
            n: r for n, r in common.paired_ratios(samples, "floor").items() if n in step_names
        },
    }
    if fwd_names:
        result["forward_no_hooks_seconds"] = {n: common.summary(samples[n]) for n in fwd_names}
        base = statistics.median(samples["fwd_hf"])
        result["forward_ratio_to_hf"] = {n: statistics.median(samples[n]) / base for n in fwd_names}
    common.write_result(args.name, result)
    for n in step_names:
        print(f"{n:22s} {statistics.median(samples[n]):.3f} s  x{result['ratio_to_floor'][n]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
