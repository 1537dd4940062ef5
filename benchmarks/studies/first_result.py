"""A first result: ``ascale demo`` (warm model cache) in plain PyTorch training steps.

The yardstick is one plain training step of the same model, timed in the same run on the same
machine: SmolLM2-135M as a Hugging Face ``LlamaForCausalLM`` (fp32, eager attention, every
weight trainable), next-token cross-entropy on 64 rows of 12 tokens (the demo's CCC prompt
shape), backward, one SGD step. Steps are timed before and after the demo (after one warm-up
step each time) and their median is the unit, so a machine that got busier mid-run shows as a
spread between the two.

Targets (issue 26): the demo within 150 s on 2 cores and within 75 plain steps.

Run: ``python -m benchmarks studies.first_result [--wait] [--steps 5]``; writes
studies/results/first_result.json. Extra arguments after ``--`` go to ``ascale demo``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import common
from benchmarks.demo import run_demo
from benchmarks.floor import load_hf

TARGET_S = 150.0
TARGET_STEPS = 75.0


def plain_steps(hf: Any, n: int, rows: int = 64, tokens: int = 12, seed: int = 0) -> list[float]:
    """Seconds of each of `n` plain training steps (after one warm-up step)."""
    hf.requires_grad_(True)
    hf.train(False)  # no dropout in SmolLM2 either way; eval keeps it deterministic
    optimiser = torch.optim.SGD(hf.parameters(), lr=0.0)  # lr 0: the weights stay as loaded
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, hf.config.vocab_size, (rows, tokens), generator=gen)

    def step() -> float:
        start = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        loss = hf(input_ids=ids, labels=ids).loss
        loss.backward()
        optimiser.step()
        return time.perf_counter() - start

    step()
    return [step() for _ in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed plain steps, each side")
    parser.add_argument("--wait", action="store_true", help="wait for a quiet machine first")
    parser.add_argument("--name", default="first_result")
    parser.add_argument("demo_args", nargs="*", help="extra arguments for `ascale demo`")
    args = parser.parse_args(argv)
    load = common.wait_for_quiet() if args.wait else None
    from benchmarks.setups import smollm2_folder

    hf = load_hf(smollm2_folder())
    before = plain_steps(hf, args.steps)
    print(f"plain step before: {statistics.median(before):.2f} s", flush=True)
    root = Path(tempfile.mkdtemp(prefix="ascale-first-result-"))
    try:
        demo = run_demo(None, root / "out", args.demo_args, None)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"demo: {demo['seconds']} s", flush=True)
    after = plain_steps(hf, args.steps)
    step_s = statistics.median(before + after)
    in_steps = demo["seconds"] / step_s
    print(f"plain step after: {statistics.median(after):.2f} s; demo = {in_steps:.1f} steps")
    common.write_result(
        args.name,
        {
            "benchmark": "`ascale demo` (warm model cache) in plain training steps, same run",
            "plain_step": "HF LlamaForCausalLM fp32, 64 x 12 tokens, cross-entropy, backward, SGD",
            "load_average_after_wait": load,
            "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "command": ["ascale", "demo", *args.demo_args],
            "plain_step_s": {
                "before": [round(s, 3) for s in before],
                "after": [round(s, 3) for s in after],
                "median": round(step_s, 3),
            },
            "demo_s": demo["seconds"],
            "demo_in_plain_steps": round(in_steps, 1),
            "targets": {"seconds": TARGET_S, "plain_steps": TARGET_STEPS},
            "met": {
                "seconds": demo["seconds"] <= TARGET_S,
                "plain_steps": in_steps <= TARGET_STEPS,
            },
            "demo": demo,
        },
        common.RECORD,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
