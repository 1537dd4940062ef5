"""The training-step benchmark on a GPU (or any device): ascale against the floor, one process.

The same step as `benchmarks.step` (scalars on every head's z and every MLP output, CCC prompts
of one length, both signs of beta in one batch, Adam) at batch 32 and 128, medians over
interleaved rounds, and ``torch.cuda.max_memory_allocated`` for each configuration's steps.

The device machine cannot fetch SmolLM2's weights and none of its fp32 files fit what travels,
so by default the model is SmolLM2-135M's exact architecture (its ``config.json`` and tokenizer)
with **random weights** (seeded): a training step's time does not depend on the weight values.
Prompts come from a jsonl file made here with the real model (``ascale.tasks.ccc``), so the token
ids and lengths are the real ones.

Run (CPU check): ``.venv/bin/python -m benchmarks.gpu.step --device cpu --batches 8 --rounds 1``.
On the device: ``python3 -m benchmarks.gpu.step --device cuda --out $OUT``. Writes
``gpu_step.json`` to ``--out`` (default ``benchmarks/studies/results``, the record).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import torch

from benchmarks import common
from benchmarks.floor import FloorScalars, FloorTrainer, load_hf

HERE = common.ROOT / "benchmarks"


def _stub_datasets() -> None:
    """transformer-lens imports two classes from `datasets` at import time; where `datasets`
    cannot be imported (a bare device machine), stand-ins let it import (nothing here uses
    them)."""
    try:
        import datasets  # noqa: F401
    except Exception:
        for name in ("datasets", "datasets.arrow_dataset", "datasets.iterable_dataset"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["datasets.arrow_dataset"].Dataset = type("Dataset", (), {})  # type: ignore[attr-defined]
        sys.modules["datasets.iterable_dataset"].IterableDataset = type("IterableDataset", (), {})  # type: ignore[attr-defined]
        sys.modules["datasets"].load_dataset = None  # type: ignore[attr-defined]
        print("note: `datasets` not importable here; stand-ins used", flush=True)


def model_folder(source: Path, seed: int) -> tuple[str, bool]:
    """`source` itself if it holds weights, else a temp copy with seeded random weights."""
    if any(source.glob("*.safetensors")):
        return str(source), False
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(source)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    folder = Path(tempfile.mkdtemp(prefix="smollm2-random-"))
    model.save_pretrained(folder)
    for f in source.iterdir():
        if f.is_file() and not (folder / f.name).exists():
            shutil.copy(f, folder / f.name)
    return str(folder), True


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def device_options(parser: argparse.ArgumentParser) -> None:
    """The options every GPU script shares: the device, and what `gpu_prepare` made."""
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model-dir", type=Path, default=HERE / ".gpu" / "smollm2")
    parser.add_argument("--data", type=Path, default=HERE / ".gpu" / "ccc.jsonl")


def floor_run(trainer: Any, steps: int, dev: str) -> Any:
    """A runner for `common.interleaved`: seconds per step of `steps` calls of
    ``trainer.step()`` (a `FloorTrainer`, or anything with a ``step()``)."""

    def run() -> float:
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.step()
        sync(dev)
        return (time.perf_counter() - t0) / steps

    return run


def ascale_run(model: Any, data: Any, batch: int, steps: int, dev: str) -> Any:
    import ascale

    scalars = ascale.ActivationScalars(model, sites="heads,mlp_out", positions="all")

    def run() -> float:
        sync(dev)
        fitted = ascale.fit(
            model,
            scalars,
            data,
            steps=steps,
            batch_size=batch,
            stop="none",
            progress=False,
        )
        sync(dev)
        return fitted.wall_time_s / fitted.steps_run

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    device_options(parser)
    parser.add_argument("--batches", default="32,128")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10, help="steps per round and config")
    parser.add_argument("--out", type=Path, default=common.RECORD)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    dev = args.device
    _stub_datasets()
    import ascale

    start = time.perf_counter()
    folder, random_weights = model_folder(args.model_dir, args.seed)
    bridge = ascale.load_model(folder, device=dev)
    plain = ascale.load_model(folder, compatibility_mode=False, device=dev)
    for m in (bridge, plain):
        m.cfg.default_prepend_bos = False  # as the embedded SmolLM2: no BOS
    hfs = {"eager": load_hf(folder, "eager", dev), "sdpa": load_hf(folder, "sdpa", dev)}
    data_all = ascale.load_jsonl(args.data, bridge)
    print(f"loaded in {time.perf_counter() - start:.1f} s; {len(data_all)} prompts", flush=True)
    objective = ascale.Objective()
    results: dict[str, Any] = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        data = data_all.subset(range(min(batch, len(data_all))))
        rows = (data.tokens.to(dev), data.correct_ids.to(dev), data.wrong_ids.to(dev))
        kw = {
            "batch_size": batch,
            "margin": objective.margin,
            "lambda_faith": objective.lambda_faith,
            "lambda_min": objective.lambda_min,
            "last_only": True,
        }
        trainers = {
            f"floor{'' if attn == 'eager' else '_sdpa'}": FloorTrainer(
                hf, FloorScalars(hf, data.n_pos), *rows, **kw
            )
            for attn, hf in hfs.items()
        }

        runners = {name: floor_run(t, args.steps, dev) for name, t in trainers.items()}
        runners["ascale"] = ascale_run(bridge, data, batch, args.steps, dev)
        runners["ascale_plain_bridge"] = ascale_run(plain, data, batch, args.steps, dev)
        peak: dict[str, float] = {}
        if dev.startswith("cuda"):
            for name, fn in runners.items():  # one call each, alone, for its memory peak
                sync(dev)
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                fn()
                peak[name] = (torch.cuda.max_memory_allocated() - base) / 2**20
        samples = common.interleaved(runners, rounds=args.rounds)
        med = {n: statistics.median(v) for n, v in samples.items()}
        results[f"batch_{batch}"] = {
            "n_pos": data.n_pos,
            "rows_per_forward": 2 * batch,
            "ms_per_step": {n: round(1000 * m, 2) for n, m in med.items()},
            "ratio_to_floor": {n: round(m / med["floor"], 3) for n, m in med.items()},
            "paired_ratio_to_floor": {
                n: round(r, 3) for n, r in common.paired_ratios(samples, "floor").items()
            },
            "step_peak_memory_mb_above_resident": {n: round(v, 1) for n, v in peak.items()},
            "memory_ratio_to_floor": {
                n: round(v / peak["floor"], 3) for n, v in peak.items() if peak.get("floor")
            },
            "samples_s": samples,
        }
        print(batch, results[f"batch_{batch}"]["ms_per_step"], flush=True)
        print(batch, results[f"batch_{batch}"]["ratio_to_floor"], flush=True)
    common.write_result(
        "gpu_step",
        {
            "benchmark": "training step on a GPU: ascale vs the floor (ms per step, medians)",
            "machine": common.machine_info(dev),
            "weights": "random (seeded), SmolLM2-135M config" if random_weights else folder,
            "setup": {"rounds": args.rounds, "steps_per_round": args.steps, "dtype": "float32"},
            "note": "ascale times come from fit's own wall_time_s (its clean pass excluded; on a "
            "GPU the clean pass's kernels may still be running when fit's clock starts, a bias "
            "of at most one no-grad forward spread over steps_per_round steps)",
            "results": results,
            "wall_time_s": round(time.perf_counter() - start, 1),
        },
        folder=args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
