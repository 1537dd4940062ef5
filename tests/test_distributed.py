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


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RANK": "2", "WORLD_SIZE": "2"}, r"\$RANK is 2 but \$WORLD_SIZE is 2: ranks are 0..1"),
        ({"RANK": "-1", "WORLD_SIZE": "2"}, r"\$RANK is '-1'; expected a whole number of 0"),
        ({"RANK": "x", "WORLD_SIZE": "2"}, r"\$RANK is 'x'; expected a whole number"),
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": ""}, r"\$MASTER_ADDR .*not set"),
    ],
    ids=["rank at the world size", "negative rank", "rank not a number", "no address"],
)
def test_a_run_that_can_never_start_is_refused_at_once(monkeypatch, capsys, env, message):
    """Issue 36: a rank at or beyond the world size would wait for peers that never come."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    started = time.monotonic()
    with pytest.raises(AscaleError, match=message):
        distributed.init()
    assert main(["fit", "--task", "ccc", "--out", "never"]) == 1  # one line, before any work
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ascale fit: error: $"), err
    assert time.monotonic() - started < 5 and not Path("never").exists()
    assert not torch.distributed.is_initialized()


def _alone_in_a_world_of_two(tmp_path: Path, timeout_s: float) -> subprocess.Popen[str]:
    """``ascale fit`` as rank 0 of 2, with no rank 1: it waits for a peer that never comes."""
    import socket

    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "ASCALE_DIST_TIMEOUT_S": str(timeout_s),
    }
    command = [sys.executable, "-m", "ascale", "fit", "--task", "ccc", "--out"]
    return subprocess.Popen(
        [*command, str(tmp_path / "out")], env=env, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.distributed
def test_a_rank_waiting_for_peers_says_so_and_gives_up_after_its_timeout(tmp_path):
    run = _alone_in_a_world_of_two(tmp_path, timeout_s=6)
    _, err = run.communicate(timeout=240)
    lines = err.strip().splitlines()
    assert run.returncode == 1, err
    assert lines[0].startswith("ascale fit: warning: rank 0, at 127.0.0.1:"), err
    assert "waiting up to 6 s for the other 1 rank(s)" in lines[0]
    assert lines[-1].startswith("ascale fit: error: rank 0, at 127.0.0.1:"), err
    assert "waited 6 s for the other 1 rank(s) and gave up" in lines[-1]
    assert not (tmp_path / "out").exists()


@pytest.mark.distributed
def test_a_rank_waiting_for_peers_honours_sigterm(tmp_path):
    import select
    import signal

    run = _alone_in_a_world_of_two(tmp_path, timeout_s=120)
    assert run.stderr is not None
    if not select.select([run.stderr], [], [], 90)[0]:  # the warning: it is waiting now
        run.kill()
        pytest.fail("no word that the rank waits for its peers within 90 s")
    line = run.stderr.readline()
    assert "waiting up to 120 s" in line, line
    sent = time.monotonic()
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 128 + signal.SIGTERM, err
    assert "interrupted (SIGTERM)" in err and time.monotonic() - sent < 30
