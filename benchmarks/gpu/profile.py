"""Where ascale's step spends its time beyond the floor's, on a GPU: kernels and host-side ops.

On a GPU the step is launch-bound (4x the rows cost about 1.1x the time, `benchmarks.gpu.step`),
so what it costs is what the host does per step: Python, operator dispatch, kernel launches.
`torch.profiler` counts, per step, for the floor (`benchmarks.floor`) and for ``ascale.fit``
(scalars on ``heads,mlp_out``, the step of `benchmarks.gpu.step`):

- ``kernels``: device events (kernels and copies) launched;
- ``aten_ops``: ``aten::`` operators dispatched on the host, and their count by name (top 25);
- ``host_ms``: the profiled wall time of the host thread per step.

ascale's per-step numbers are (fit of 1 + `--steps` steps) minus (fit of 1 step), over `--steps`,
so the fit's set-up (the clean pass) cancels.

Run: ``python3 -m benchmarks.gpu.profile --device cuda --out $OUT``. Writes ``gpu_profile.json``.
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks import common
from benchmarks.floor import FloorScalars, FloorTrainer, load_hf
from benchmarks.gpu.step import _stub_datasets, device_options, model_folder, sync


def counted(fn: Any, dev: str) -> dict[str, Any]:
    activities = [ProfilerActivity.CPU]
    if dev.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    sync(dev)
    with profile(activities=activities) as prof:
        t = time.perf_counter()
        fn()
        sync(dev)
        wall = time.perf_counter() - t
    events = prof.events()
    ops = collections.Counter(e.name for e in events if e.name.startswith("aten::"))
    kernels = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    return {"kernels": kernels, "aten_ops": sum(ops.values()), "ops": ops, "wall_s": wall}


def per_step(a: dict[str, Any], b: dict[str, Any], steps: int) -> dict[str, Any]:
    """(a - b) / steps: a ran `steps` more steps than b."""
    ops = a["ops"].copy()
    ops.subtract(b["ops"])
    return {
        "kernels": (a["kernels"] - b["kernels"]) / steps,
        "aten_ops": (a["aten_ops"] - b["aten_ops"]) / steps,
        "host_ms": 1000 * (a["wall_s"] - b["wall_s"]) / steps,
        "top_ops": {k: v / steps for k, v in ops.most_common(25)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    device_options(parser)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--configs", default="ascale,ascale_plain_bridge,floor")
    parser.add_argument("--out", type=Path, default=common.RECORD)
    args = parser.parse_args(argv)
    configs = args.configs.split(",")
    dev = args.device
    _stub_datasets()
    import ascale

    folder, random_weights = model_folder(args.model_dir, seed=0)
    results: dict[str, Any] = {}
    data = None

    def load(**options: Any) -> Any:
        model = ascale.load_model(folder, **options)
        model.cfg.default_prepend_bos = False  # as the embedded SmolLM2
        return model

    for name, plain in (("ascale", False), ("ascale_plain_bridge", True)):
        if name not in configs:
            continue
        model = load(device=dev, compatibility_mode=not plain)
        data = ascale.load_jsonl(args.data, model).subset(range(args.batch))
        scalars = ascale.ActivationScalars(model, sites="heads,mlp_out", positions="all")
        kw = {"batch_size": args.batch, "stop": "none", "progress": False}
        ascale.fit(model, scalars, data, steps=2, **kw)  # warm-up

        def fit(n: int, m: Any = model, s: Any = scalars, d: Any = data, o: Any = kw) -> None:
            ascale.fit(m, s, d, steps=n, **o)

        long = counted(lambda: fit(1 + args.steps), dev)
        short = counted(lambda: fit(1), dev)
        results[name] = per_step(long, short, args.steps)
        print(name, {k: v for k, v in results[name].items() if k != "top_ops"}, flush=True)
        del model
    if "floor" in configs:
        if data is None:  # the floor alone: a Bridge on the host only to tokenise, as ascale does
            data = ascale.load_jsonl(args.data, load(device="cpu")).subset(range(args.batch))
        hf = load_hf(folder, "eager", dev)
        rows = (data.tokens.to(dev), data.correct_ids.to(dev), data.wrong_ids.to(dev))
        trainer = FloorTrainer(
            hf, FloorScalars(hf, data.n_pos), *rows, batch_size=args.batch, last_only=True
        )
        trainer.step()  # warm-up

        def floor(n: int) -> None:
            for _ in range(n):
                trainer.step()

        long = counted(lambda: floor(1 + args.steps), dev)
        short = counted(lambda: floor(1), dev)
        results["floor"] = per_step(long, short, args.steps)
        print("floor", {k: v for k, v in results["floor"].items() if k != "top_ops"}, flush=True)
    common.write_result(
        "gpu_profile",
        {
            "benchmark": "kernels and host-side operators per training step, floor vs ascale",
            "weights": "random (seeded), SmolLM2-135M config" if random_weights else folder,
            "batch": args.batch,
            "note": "host_ms is the profiled wall time (the profiler slows the host side)",
            "results": results,
        },
        folder=args.out,
        device=dev,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
