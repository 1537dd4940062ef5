"""`ascale demo --device cuda` on a machine without SmolLM2's weights: the demo's time on a GPU.

The demo command runs unchanged (`ascale.cli.main(["demo", ...])`) with two stand-ins, because the
device machine cannot hold the real weights (`benchmarks.gpu.prepare`):

- the model is SmolLM2-135M's architecture with seeded random weights
  (`benchmarks.gpu.step.model_folder`), loaded by `ascale.load_model` on ``--device``;
- the CCC prompts and their counterfactuals are those the real model gives
  (``benchmarks/.gpu/ccc.jsonl``), since ``ascale.tasks.ccc`` keeps only the capitals the model
  knows, which random weights do not.

Random weights never meet the fits' flip target, so each fit runs ``--steps`` steps: by default
22, the steps the real model's scalars ran in the CPU demo (its vectors stopped after 19), so the
work is the real demo's. Times, not behaviour: the metrics of this run mean nothing.

Run: ``python3 -m benchmarks.gpu.demo --device cuda --out $OUT`` (CPU check:
``.venv/bin/python -m benchmarks.gpu.demo --device cpu --n 24 --steps 2``). Writes
``gpu_demo.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.gpu.step import _stub_datasets, device_options, model_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    device_options(parser)
    parser.add_argument("--steps", type=int, default=22, help="steps of each fit")
    parser.add_argument("--n", type=int, default=200, help="CCC prompts (as the demo's --n)")
    parser.add_argument("--out", type=Path, default=common.RECORD)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    _stub_datasets()
    import ascale
    from ascale._rows import read_jsonl
    from ascale.data import corrupted_from_rows

    imported_s = time.perf_counter() - started
    folder, random_weights = model_folder(args.model_dir, seed=0)
    rows = read_jsonl(args.data)[: args.n]
    loaded: dict[str, Any] = {}

    real_load = ascale.load_model

    def load_model(name: Any = None, **place: Any) -> Any:  # the CLI's call, the default model
        model = real_load(folder, **place)
        model.cfg.default_prepend_bos = False  # as the embedded SmolLM2: no BOS
        loaded["model"] = model
        return model

    def ccc(model: Any, n: int, seed: int) -> Any:
        return ascale.ContrastSet.from_rows(rows, model)

    def ccc_corrupt(data: Any, model: Any, seed: int) -> Any:
        return corrupted_from_rows(rows, model)

    ascale.load_model = load_model  # type: ignore[assignment]
    ascale.tasks.ccc = ccc  # type: ignore[assignment]
    ascale.tasks.ccc_corrupt = ccc_corrupt  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        argv_demo = ["demo", "--device", args.device, "--steps", str(args.steps), "--out", str(out)]
        t = time.perf_counter()
        code = ascale.cli.main(argv_demo)
        demo_s = time.perf_counter() - t
        summary = json.loads((out / "summary.json").read_text()) if code == 0 else {}
        report = (out / "report.html").is_file()
    common.write_result(
        "gpu_demo",
        {
            "benchmark": "`ascale demo` on a device, its own code path, random weights at the "
            "real demo's steps",
            "weights": "random (seeded), SmolLM2-135M config" if random_weights else folder,
            "command": ["ascale", *argv_demo[:-2]],
            "exit_code": code,
            "steps_each_fit": args.steps,
            "n_prompts": len(rows),
            "import_s": round(imported_s, 1),
            "demo_in_process_s": round(demo_s, 1),
            "process_wall_s": round(time.perf_counter() - started, 1),
            "report_written": report,
            "timings_s": summary.get("timings_s"),
            "note": "metrics of random weights mean nothing; only the times are kept",
        },
        folder=args.out,
        device=args.device,
    )
    print(f"demo on {args.device}: {demo_s:.1f} s in process (exit {code})", flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
