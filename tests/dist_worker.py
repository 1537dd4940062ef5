"""Run under torchrun by `tests/test_distributed.py` (not a test module itself).

``python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_worker.py MODEL DATA
OUT MODE``: MODE ``ok`` fits scalars data-parallel, runs a sharded sweep and then ``ascale fit``
through the command line, rank 0 writing each result under OUT; MODE ``fail`` makes rank 1 raise
while rank 0 waits for it in the first step.
"""

import sys
from pathlib import Path

import torch

import ascale
from ascale import distributed
from ascale._rows import read_jsonl
from ascale.cli import main

#: the settings the test repeats in one process
FIT = {"steps": 4, "batch_size": 8, "stop": "none", "seed": 0, "progress": False}
SWEEP = {
    "methods": ["scalars"],
    "lambda_min": [1e-3, 1e-1, 1.0],
    "fit_options": {"steps": 2, "batch_size": 8, "stop": "none"},
    "progress": False,
}
VALIDATION = {"steps": 4, "batch_size": 6, "stop": "validation", "eval_every": 2, "progress": False}
CLI = ["--steps", "3", "--batch-size", "8", "--no-early-stop", "--test-size", "0.25"]


def run(model_dir: str, data_file: str, out: Path, mode: str) -> int:
    distributed.init()
    # two ranks, each with its half of every batch and its share of the sweep's settings
    assert distributed.world_size() == 2, distributed.world_size()
    assert len(distributed.shard(torch.arange(8))) == 4
    assert distributed.my_share(3) == [[0, 2], [1]][distributed.rank()]
    model = ascale.load_model(model_dir)
    data = ascale.ContrastSet.from_rows(read_jsonl(data_file), model)
    scalars = ascale.ActivationScalars(model, sites="attn_out,mlp_out", n_pos=data.n_pos)
    if mode == "fail" and distributed.rank() == 1:
        raise RuntimeError("rank 1 fails on purpose")
    ascale.fit(model, scalars, data, **FIT)  # type: ignore[arg-type]
    table = ascale.sweep(model, data, data, **SWEEP)  # type: ignore[arg-type]
    held_out = ascale.ActivationScalars(model, sites="mlp_out", n_pos=data.n_pos)
    ascale.fit(model, held_out, data, **VALIDATION)  # type: ignore[arg-type]
    if distributed.is_main():
        ascale.save(scalars, out / "fit")
        ascale.save(held_out, out / "validation")
        table.to_csv(out / "sweep.csv", index=False)
    # the command line joins the same process group, and leaves it at the end
    return main(["fit", "--model", model_dir, "--data", data_file, "--out", str(out / "cli"), *CLI])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]))
