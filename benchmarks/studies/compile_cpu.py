"""`torch.compile` on CPU: what the training step gains, and what compiling costs.

Issue 11 asks to measure `torch.compile` for the CPU step. This times the floor
(`benchmarks.floor`: a plain Hugging Face ``LlamaForCausalLM`` with torch hooks doing ascale's
scaling and loss) eagerly and with its decoder compiled (``hf.model.compile()``, inductor,
the hooks traced in), in one process, interleaved:

- ``floor``: eager, as `benchmarks.step` times it;
- ``floor_compiled``: the same model and hooks, ``hf.model`` compiled before the first step.

The floor is the best case for the compiler: one plain module tree, no TransformerLens hook
points, no ascale bookkeeping. What it gains bounds what compiling ascale's step could gain.
Also recorded: the seconds of the first compiled step (tracing, lowering and building the C++
kernels: the cost a fit pays once per process and shape), whether the loss matches eager, and
after how many steps the compile pays for itself. The inductor cache lives in
``TORCHINDUCTOR_CACHE_DIR``; ``--cold`` points it at an empty folder first, so the first step
pays the whole compile (a warm cache from an earlier process makes it cheaper: run without
``--cold`` right after to see).

Run: ``.venv/bin/python -m benchmarks.studies.compile_cpu [--cold] [--rounds 5]``; writes
``studies/results/compile_cpu.json`` (``--name`` to change). Takes ~7 minutes cold on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from benchmarks import common, setups
from benchmarks.floor import load_hf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="steps per round and config")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--cold", action="store_true", help="an empty inductor cache first")
    parser.add_argument("--wait", action="store_true", help="wait for a quiet machine first")
    parser.add_argument("--name", default="compile_cpu")
    args = parser.parse_args(argv)
    if args.cold:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ascale-inductor-")
    torch.manual_seed(0)

    import ascale

    folder = setups.smollm2_folder()
    data = setups.ccc_data(ascale.load_model(), 64)
    eager, compiled = load_hf(folder), load_hf(folder)
    for hf in (eager, compiled):
        hf.config.use_cache = False  # no KV cache object in the graph (a training step needs none)
    k, b = args.steps, args.batch
    runners = {
        "floor": setups.floor_runner(eager, data, k, b, last_only=True),
        "floor_compiled": setups.floor_runner(compiled, data, k, b, last_only=True),
    }
    # the loss of one batch, before any step (both trainers start from the same zeros)
    index = torch.arange(b)
    with torch.no_grad():
        loss_eager = float(runners["floor"].trainer.loss(index))  # type: ignore[attr-defined]
    load = common.wait_for_quiet() if args.wait else None
    machine = common.machine_info()
    compiled.model.compile()
    trainer = runners["floor_compiled"].trainer  # type: ignore[attr-defined]
    start = time.perf_counter()
    with torch.no_grad():
        loss_compiled = float(trainer.loss(index))  # compiles the no-grad graph
    compile_no_grad_s = time.perf_counter() - start
    start = time.perf_counter()
    trainer.step()  # compiles the forward and backward graphs
    first_step_s = time.perf_counter() - start
    print(
        f"compile: {compile_no_grad_s:.1f} s (no grad), first step {first_step_s:.1f} s; "
        f"loss eager {loss_eager:.6f}, compiled {loss_compiled:.6f}",
        flush=True,
    )
    samples = common.interleaved(runners, rounds=args.rounds)
    eager_s = statistics.median(samples["floor"])
    compiled_s = statistics.median(samples["floor_compiled"])
    saved = eager_s - compiled_s
    result = {
        "benchmark": "training step, eager floor vs the floor with hf.model compiled (CPU)",
        "machine": machine,
        "load_average_after_wait": load,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "setup": {
            "model": "SmolLM2-135M-Instruct fp32, use_cache=False",
            "task": "CCC",
            "n_pos": data.n_pos,
            "batch_prompts": b,
            "rows_per_forward": 2 * b,
            "sites": setups.ALL_SITES,
            "rounds": args.rounds,
            "steps_per_round": k,
            "compile": "hf.model.compile() (torch.compile, inductor, default mode)",
            "inductor_cache": "cold (empty folder)" if args.cold else "as found",
        },
        "seconds_per_step": {n: common.summary(v) for n, v in samples.items()},
        "ratio_to_floor": common.ratios(samples, "floor"),
        "paired_ratio_to_floor": common.paired_ratios(samples, "floor"),
        "compile_seconds": {
            "first_no_grad_call": round(compile_no_grad_s, 1),
            "first_training_step": round(first_step_s, 1),
        },
        "loss_first_batch": {"eager": loss_eager, "compiled": loss_compiled},
        "break_even_steps": (
            round((compile_no_grad_s + first_step_s - compiled_s) / saved) if saved > 0 else None
        ),
    }
    common.write_result(args.name, result, common.RECORD)
    print(
        f"floor {eager_s:.3f} s, compiled {compiled_s:.3f} s "
        f"(x{result['ratio_to_floor']['floor_compiled']:.3f}); break-even after "
        f"{result['break_even_steps']} steps",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
