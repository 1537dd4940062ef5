"""The device checks of "Past one machine" (docs/scale.md) that need a GPU, on one GPU.

SmolLM2-135M's architecture with seeded random weights (`benchmarks.gpu.step.model_folder`) and
the real model's CCC prompts (``benchmarks/.gpu/ccc.jsonl``), 64 prompts:

1. ``save_on_gpu_load_on_cpu``: scalars fitted on ``--device`` (float32) are saved, loaded on a
   CPU copy of the model, and evaluated on both: the metrics' largest difference;
2. ``bfloat16``: a bfloat16 model on the device trains float32 scalars on a float32 loss; its
   metrics against the float32 model's for the same fit settings;
3. ``device_map_auto``: ``load_model(device_map="auto")`` on the one GPU (Accelerate's dispatch
   hooks in the path): where the layers went, its logits against ``device=``'s, a 3-step fit;
4. ``nccl``: ``torchrun --nproc_per_node 1 -m ascale fit --device cuda``: the NCCL process group
   (a second process cannot share the one GPU under NCCL), against the same fit without torchrun.

Run: ``python3 -m benchmarks.gpu.checks --device cuda --out $OUT`` (CPU check: ``--device cpu``
runs 1-3). Writes ``gpu_checks.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks import common
from benchmarks.gpu.step import _stub_datasets, device_options, model_folder

FIELDS = ("flip_rate_forward", "flip_rate_backward", "logit_diff_forward", "faithfulness_kl")


def _metrics(metrics: Any) -> dict[str, float]:
    d = metrics.to_dict()
    return {k: round(float(d[k]), 6) for k in FIELDS}


def _diff(a: dict[str, float], b: dict[str, float]) -> float:
    return max(abs(a[k] - b[k]) for k in FIELDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    device_options(parser)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=common.RECORD)
    args = parser.parse_args(argv)
    _stub_datasets()
    import ascale
    from ascale._rows import read_jsonl

    dev = args.device
    folder, random_weights = model_folder(args.model_dir, seed=0)
    rows = [{k: r[k] for k in ("prompt", "correct", "wrong")} for r in read_jsonl(args.data)]
    rows = rows[: args.n]
    results: dict[str, Any] = {}

    def load(**place: Any) -> Any:
        model = ascale.load_model(folder, **place)
        model.cfg.default_prepend_bos = False  # as the embedded SmolLM2
        return model

    def check(name: str, body: Callable[[], dict[str, Any]]) -> None:
        t = time.perf_counter()
        try:
            results[name] = {**body(), "ok": True}
        except Exception:
            results[name] = {"ok": False, "error": traceback.format_exc()[-1500:]}
        results[name]["seconds"] = round(time.perf_counter() - t, 1)
        print(name, json.dumps(results[name])[:400], flush=True)

    gpu = load(device=dev)
    data = ascale.ContrastSet.from_rows(rows, gpu)
    fit_kw = {"steps": args.steps, "stop": "none", "progress": False, "batch_size": 32}

    def save_load() -> dict[str, Any]:
        scalars = ascale.ActivationScalars(gpu, sites="attn_out,mlp_out", n_pos=data.n_pos)
        ascale.fit(gpu, scalars, data, **fit_kw)
        on_gpu = _metrics(ascale.evaluate(gpu, scalars, data))
        with tempfile.TemporaryDirectory() as tmp:
            ascale.save(scalars, Path(tmp) / "fit")
            cpu = load(device="cpu")
            loaded = ascale.load(Path(tmp) / "fit", cpu)
            devices = sorted({str(p.device) for p in loaded.parameters()})
            on_cpu = _metrics(ascale.evaluate(cpu, loaded, ascale.ContrastSet.from_rows(rows, cpu)))
        same = torch.equal(
            torch.cat([p.detach().cpu().flatten() for p in scalars.parameters()]),
            torch.cat([p.detach().flatten() for p in loaded.parameters()]),
        )
        return {
            "metrics_device": on_gpu,
            "metrics_cpu": on_cpu,
            "max_abs_difference": _diff(on_gpu, on_cpu),
            "loaded_parameter_devices": devices,
            "parameters_identical": same,
        }

    def bfloat16() -> dict[str, Any]:
        half = load(device=dev, dtype="bfloat16")
        scalars = ascale.ActivationScalars(half, sites="attn_out,mlp_out", n_pos=data.n_pos)
        fitted = ascale.fit(half, scalars, data, **fit_kw)
        dtypes = sorted({str(p.dtype) for p in scalars.parameters()})
        logits = ascale.training._passes.answer_logits(half, scalars, data.subset(range(4)), 1.0)
        twin = ascale.ActivationScalars(gpu, sites="attn_out,mlp_out", n_pos=data.n_pos)
        twin_fit = ascale.fit(gpu, twin, data, **fit_kw)
        m_half = _metrics(ascale.evaluate(half, scalars, data))
        m_full = _metrics(ascale.evaluate(gpu, twin, data))
        return {
            "parameter_dtypes": dtypes,
            "logits_dtype": str(logits.dtype),
            "loss_last_step": {"bfloat16": fitted.history["loss"][-1]},
            "loss_last_step_float32": twin_fit.history["loss"][-1],
            "metrics_bfloat16": m_half,
            "metrics_float32": m_full,
            "max_abs_difference": _diff(m_half, m_full),
        }

    def device_map() -> dict[str, Any]:
        split = load(device_map="auto")
        placed = getattr(split.original_model, "hf_device_map", None)
        batch = ascale.ContrastSet.from_rows(rows[:8], split)
        a = ascale.training._passes.answer_logits(split, None, batch, 0.0).cpu()
        b = ascale.training._passes.answer_logits(gpu, None, data.subset(range(8)), 0.0).cpu()
        scalars = ascale.ActivationScalars(split, sites="attn_out,mlp_out", n_pos=batch.n_pos)
        fitted = ascale.fit(split, scalars, batch, steps=3, stop="none", progress=False)
        return {
            "hf_device_map": {str(k): str(v) for k, v in (placed or {}).items()},
            "logits_max_abs_difference_vs_device": float((a - b).abs().max()),
            "fit_losses": fitted.history["loss"],
            "parameter_devices": sorted({str(p.device) for p in scalars.parameters()}),
        }

    check("save_on_device_load_on_cpu", save_load)
    check("bfloat16", bfloat16)
    if dev.startswith("cuda"):
        check("device_map_auto", device_map)

        def nccl() -> dict[str, Any]:
            with tempfile.TemporaryDirectory() as tmp:
                jsonl = Path(tmp) / "rows.jsonl"
                jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
                base = ["fit", "--data", str(jsonl), "--model", folder, "--device", dev]
                base += ["--steps", "3", "--no-early-stop", "--seed", "0"]
                runs = {}
                torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1"]
                launchers = {
                    "torchrun_nccl": [*torchrun, "-m", "ascale"],
                    "one_process": [sys.executable, "-m", "ascale"],
                }
                for name, launcher in launchers.items():
                    out = Path(tmp) / name
                    done = subprocess.run(
                        [*launcher, *base, "--out", str(out)],
                        capture_output=True,
                        text=True,
                        timeout=240,
                        env={**os.environ, "NCCL_DEBUG": "WARN"},
                        check=False,
                    )
                    tail = (done.stdout + done.stderr).strip().splitlines()[-4:]
                    runs[name] = {"exit_code": done.returncode, "tail": tail}
                    tensors = out / "intervention.safetensors"
                    if tensors.is_file():
                        from safetensors.torch import load_file

                        runs[name]["params"] = load_file(str(tensors))
                same = None
                if all("params" in r for r in runs.values()):
                    a, b = (runs[n].pop("params") for n in ("torchrun_nccl", "one_process"))
                    same = max(float((a[k] - b[k]).abs().max()) for k in a)
                for r in runs.values():
                    r.pop("params", None)
                return {"runs": runs, "max_abs_parameter_difference": same}

        check("nccl", nccl)
    common.write_result(
        "gpu_checks",
        {
            "benchmark": "device checks on one GPU (docs/scale.md)",
            "weights": "random (seeded), SmolLM2-135M config" if random_weights else folder,
            "n_prompts": len(rows),
            "results": results,
        },
        folder=args.out,
        device=dev,
    )
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
