"""Several processes on torch.distributed (gloo on CPU): a 2-process run equals one process.

The two-process runs start torchrun in a subprocess (`tests/dist_worker.py`): each process
imports torch and TransformerLens, which takes tens of seconds on a loaded 2-core machine, so
they are marked ``distributed`` (deselect with ``-m "not distributed"``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from dist_worker import CLI, FIT, SWEEP, VALIDATION

import ascale
from ascale import distributed
from ascale._rows import read_jsonl
from ascale.cli import main
from ascale.cli._common import load_model
from ascale.cli._options import build_parser
from ascale.errors import AscaleError
from ascale.testing import ioi_like_rows

WORKER = Path(__file__).with_name("dist_worker.py")
ROOT = WORKER.parent.parent


def _torchrun(tiny_dirs, tmp_path: Path, mode: str, timeout_s: float = 60) -> tuple[int, str]:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in ioi_like_rows(16)[0]))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "ASCALE_DIST_TIMEOUT_S": str(timeout_s),
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", str(WORKER), str(tiny_dirs["gpt2"]), str(data)]
    done = subprocess.run(
        [*command, str(tmp_path / "out"), mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.distributed
def test_two_processes_fit_sweep_and_cli_equal_one_process(tiny_dirs, tiny_gpt2, tmp_path):
    code, output = _torchrun(tiny_dirs, tmp_path, "ok")
    assert code == 0, output
    out = tmp_path / "out"
    data = ascale.ContrastSet.from_rows(read_jsonl(tmp_path / "rows.jsonl"), tiny_gpt2)
    # one process, the same global batch and seed
    alone = ascale.ActivationScalars(tiny_gpt2, sites="attn_out,mlp_out", n_pos=data.n_pos)
    ascale.fit(tiny_gpt2, alone, data, **FIT)  # type: ignore[arg-type]
    two = ascale.load(out / "fit", tiny_gpt2)
    moved = max(float(p.detach().abs().max()) for p in alone.params.values())
    assert moved > 1e-2  # the fit did move the scalars
    for name, p in alone.params.items():
        torch.testing.assert_close(two.params[name], p, atol=1e-5, rtol=0)
    one_metrics = ascale.evaluate(tiny_gpt2, alone, data).to_dict()
    two_metrics = ascale.evaluate(tiny_gpt2, two, data).to_dict()
    assert one_metrics == pytest.approx(two_metrics, abs=1e-5)
    # validation stopping: the held-out score is rank 0's on every rank
    held_out = ascale.ActivationScalars(tiny_gpt2, sites="mlp_out", n_pos=data.n_pos)
    ascale.fit(tiny_gpt2, held_out, data, **VALIDATION)  # type: ignore[arg-type]
    two_held_out = ascale.load(out / "validation", tiny_gpt2)
    torch.testing.assert_close(two_held_out.params["mlp_out"], held_out.params["mlp_out"])
    # the sweep: three settings dealt to two ranks, one table in grid order
    table = pd.read_csv(out / "sweep.csv")
    reference = ascale.sweep(tiny_gpt2, data, data, **SWEEP)  # type: ignore[arg-type]
    assert list(table["lambda_min"]) == list(reference["lambda_min"])
    assert list(table["split"]) == list(reference["split"])
    numbers = ["flip_rate_forward", "logit_diff_forward", "faithfulness_kl", "l1", "steps_run"]
    assert table[numbers].to_numpy() == pytest.approx(reference[numbers].to_numpy(), abs=1e-5)
    # the command line: rank 0 alone wrote the folder; same metrics as one process
    args = ["fit", "--model", str(tiny_dirs["gpt2"]), "--data", str(tmp_path / "rows.jsonl")]
    assert main([*args, "--out", str(tmp_path / "one"), *CLI]) == 0
    two_cli = json.loads((out / "cli" / "metrics.json").read_text())
    one_cli = json.loads((tmp_path / "one" / "metrics.json").read_text())
    for split in ("train", "test"):
        assert two_cli[split] == pytest.approx(one_cli[split], abs=1e-5)
    assert sorted(p.name for p in out.iterdir()) == ["cli", "fit", "sweep.csv", "validation"]


@pytest.mark.distributed
def test_a_failing_rank_ends_the_run_with_its_error_not_a_hang(tiny_dirs, tmp_path):
    started = time.monotonic()
    code, output = _torchrun(tiny_dirs, tmp_path, "fail", timeout_s=30)
    assert code != 0
    assert "rank 1 fails on purpose" in output
    assert time.monotonic() - started < 240  # torchrun stopped rank 0 (or its timeout did)
    assert not (tmp_path / "out").exists()


def test_one_process_is_untouched_by_the_distributed_helpers():
    index = torch.arange(5)
    assert not distributed.launched()
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert torch.equal(distributed.shard(index), index)
    assert distributed.my_share(3) == [0, 1, 2]
    assert distributed.gather([1, 2]) == [1, 2]
    assert distributed.from_main(1.5) == 1.5
    terms = {"loss": torch.tensor(1.0)}
    assert distributed.reduce_step(terms, [torch.zeros(1)], 5) is terms
    assert distributed.local_device("cuda") == "cuda"


def test_commands_that_run_in_one_process_refuse_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["evaluate", "--intervention", "x", "--data", "y.jsonl"]) == 1
    assert "runs in one process; launch it without torchrun" in capsys.readouterr().err
    assert distributed.local_device("cuda") == "cuda:0"
    fit = ["fit", "--task", "ccc", "--out", "x", "--device-map", "auto"]
    with pytest.raises(AscaleError, match="under torchrun each process holds a whole model"):
        load_model(build_parser().parse_args(fit), None)
