"""End to end: wall time of ``ascale demo``, cold (empty model cache) and warm.

``cold`` runs with ``ASCALE_CACHE`` pointing at a new, empty folder, so the embedded GGUF is
dequantised to fp32 and cached first (the operating system's file cache stays warm: this is a
first run of ascale, not of the machine). ``warm`` runs again with that folder filled. Each run
is a fresh process (``ascale demo``, defaults: CCC, scalars and vectors, patching, report),
writing into a temporary folder.

Each run's own ``summary.json`` (where the time went, ``timings_s``; test flips; circuit scores)
is kept in the result. ``--warm-only`` skips the cold run and uses the model cache as it is.

Run: ``.venv/bin/python -m benchmarks.demo [--warm-runs 1]``; writes results/demo.json
(``--name`` for another name: ``studies/results/demo_stages.json`` is such a run, kept in the record).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common


def run_demo(
    cache: Path | None, out: Path, extra: list[str], threads: int | None
) -> dict[str, Any]:
    exe = Path(sys.executable).with_name("ascale")
    cmd = [str(exe), "demo", "--out", str(out), *extra]
    env = dict(os.environ) if cache is None else {**os.environ, "ASCALE_CACHE": str(cache)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's default thread count follows it
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"ascale demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {
        "seconds": round(seconds, 1),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "stdout_tail": proc.stdout.strip().splitlines()[-12:],
        "summary": json.loads((out / "summary.json").read_text()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warm-runs", type=int, default=1)
    parser.add_argument("--wait", action="store_true", help="wait for a quiet machine first")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the demo")
    parser.add_argument("--name", default="demo")
    parser.add_argument(
        "--warm-only", action="store_true", help="no cold run; the model cache as it is"
    )
    parser.add_argument("demo_args", nargs="*", help="extra arguments for `ascale demo`")
    args = parser.parse_args(argv)
    load = common.wait_for_quiet() if args.wait else None
    machine = common.machine_info()
    if args.threads:
        machine["torch_threads"] = args.threads
    root = Path(tempfile.mkdtemp(prefix="ascale-demo-bench-"))
    try:
        cache, cold = None, None
        if not args.warm_only:
            cache = root / "cache"
            cache.mkdir()
            cold = run_demo(cache, root / "out-cold", args.demo_args, args.threads)
            print(f"cold: {cold['seconds']} s", flush=True)
        warm = []
        for i in range(args.warm_runs):
            warm.append(run_demo(cache, root / f"out-warm-{i}", args.demo_args, args.threads))
            print(f"warm: {warm[-1]['seconds']} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    common.write_result(
        args.name,
        {
            "benchmark": "`ascale demo` wall time, fresh process each, cold and warm model cache",
            "machine": machine,
            "load_average_after_wait": load,
            "command": ["ascale", "demo", *args.demo_args],
            "omp_num_threads": args.threads,
            "cold": cold,
            "warm": warm,
            "warm_median_s": common.summary([w["seconds"] for w in warm])["median"],
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
