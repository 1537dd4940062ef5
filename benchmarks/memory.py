"""Peak memory of the training step: one fresh process per configuration, resident set size.

torch's CPU allocator has no peak counter (``tracemalloc`` sees none of torch's buffers), so
each configuration runs in a new Python process that loads its model, builds the data and
trainer, then trains a few steps, and reports

- ``peak_rss_mb``: the process's high-water resident set (``resource.getrusage`` ``ru_maxrss``),
  model loading included;
- ``ready_rss_mb``: resident set once everything is built, before the first training step;
- ``step_peak_mb``: the highest resident set sampled (every 2 ms, psutil) during the steps,
  and ``step_extra_mb`` = ``step_peak_mb - ready_rss_mb``: what training adds on top of the
  loaded model (activations kept for backward, logits, gradients, Adam state).

Run: ``.venv/bin/python -m benchmarks.memory``; writes results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from typing import Any

import psutil
import torch

from benchmarks import common

CONFIGS = ("floor", "floor_full_logits", "floor_sdpa", "ascale", "ascale_plain_bridge")


def _mb(n_bytes: float) -> float:
    return round(n_bytes / 2**20, 1)


class _Sampler(threading.Thread):
    """Samples this process's resident set every `interval` seconds, keeping the maximum."""

    def __init__(self, interval: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self.running = interval, 0, True
        self.proc = psutil.Process()

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)


def measure(config: str, batch: int, steps: int, data_file: str) -> dict[str, Any]:
    """Runs in the child process: load, build, then train `steps` steps under the sampler."""
    import ascale
    from benchmarks import setups

    torch.manual_seed(0)
    data = torch.load(data_file, weights_only=False)  # built by the parent: no model here
    if config.startswith("floor"):
        hf = setups.load_hf(setups.smollm2_folder(), "sdpa" if config == "floor_sdpa" else "eager")
        run = setups.floor_runner(hf, data, 1, batch, last_only=config != "floor_full_logits")
    else:
        model = ascale.load_model(compatibility_mode=config != "ascale_plain_bridge")
        run = setups.ascale_runner(model, data, 1, batch)
    import gc

    gc.collect()
    ready = psutil.Process().memory_info().rss
    sampler = _Sampler()
    sampler.start()
    seconds = [run() for _ in range(steps)]
    sampler.running = False
    sampler.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {
        "peak_rss_mb": _mb(peak),
        "ready_rss_mb": _mb(ready),
        "step_peak_mb": _mb(sampler.peak),
        "step_extra_mb": _mb(sampler.peak - ready),
        "seconds_per_step": [round(s, 3) for s in seconds],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--one", choices=CONFIGS, help="(internal) measure one configuration")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--n-prompts", type=int, default=64)
    parser.add_argument("--data", help="(internal) the pickled ContrastSet")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per config")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default="memory")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args.one, args.batch, args.steps, args.data)))
        return 0
    import tempfile

    import ascale
    from benchmarks import setups

    data_file = os.path.join(tempfile.mkdtemp(), "data.pt")
    torch.save(setups.ccc_data(ascale.load_model(), args.n_prompts), data_file)
    configs = args.configs.split(",")
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
    for r in range(args.repeats):
        for config in configs if r % 2 == 0 else configs[::-1]:
            cmd = [sys.executable, "-m", "benchmarks.memory", "--one", config]
            cmd += ["--batch", str(args.batch), "--steps", str(args.steps)]
            cmd += ["--data", data_file]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ)
            runs[config].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(config, runs[config][-1], flush=True)
    keys = ("peak_rss_mb", "ready_rss_mb", "step_peak_mb", "step_extra_mb")
    medians = {
        c: {k: round(common.summary([x[k] for x in v])["median"], 1) for k in keys}
        for c, v in runs.items()
    }
    ratios = {
        c: {k: round(m[k] / medians["floor"][k], 3) for k in keys}
        for c, m in medians.items()
        if "floor" in medians
    }
    common.write_result(
        args.name,
        {
            "benchmark": "peak memory of the training step (resident set size, fresh process each)",
            "method": __doc__,
            "machine": common.machine_info(),
            "setup": {"batch_prompts": args.batch, "steps": args.steps, "repeats": args.repeats},
            "median_mb": medians,
            "ratio_to_floor": ratios,
            "runs": runs,
        },
    )
    for c, m in medians.items():
        print(f"{c:22s} {m}  x{ratios.get(c, {}).get('peak_rss_mb')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
