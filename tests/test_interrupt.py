"""Interruption is an outcome, not a result (issue 27): `fit` raises after restoring the model,
`sweep` stops, and the command line exits 130 (SIGINT) or 143 (SIGTERM) with the output folder
exactly as it was, tested with real signals sent to a real ``python -m ascale fit``."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import ascale
from ascale._outputs import LOCK, MARKER
from ascale.cli._signals import Terminated, deferred, terminate_raises
from ascale.data import ContrastSet
from ascale.interventions import ActivationScalars
from ascale.testing import ioi_rows
from ascale.training import _passes

ROWS = ioi_rows([("Mary", "John"), ("Alice", "Bob"), ("Carol", "Dave"), ("Eve", "Bob")] * 2)


@pytest.fixture(autouse=True)
def _sigint_as_at_a_terminal():
    """A shell starts background jobs with SIGINT ignored, and every child inherits that
    (``nohup make test &``): these tests send SIGINT, so they run with Python's own handler, as
    at a terminal; a child started from here then gets the default one (exec resets it)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _interrupt_at_call(monkeypatch, n: int, seen: dict):
    """`step_terms` raises KeyboardInterrupt at its `n`-th call, after recording the state."""
    real = _passes.step_terms

    def interrupting(model, intervention, *args, **kwargs):
        seen["calls"] = seen.get("calls", 0) + 1
        if seen["calls"] == n:
            seen["state"] = {k: v.clone() for k, v in intervention.state_dict().items()}
            raise KeyboardInterrupt
        return real(model, intervention, *args, **kwargs)

    monkeypatch.setattr(_passes, "step_terms", interrupting)


def test_fit_raises_the_interrupt_with_the_model_restored(tiny_gpt2, tiny_rows, monkeypatch):
    seen: dict = {}
    _interrupt_at_call(monkeypatch, 4, seen)
    first = next(iter(tiny_gpt2.parameters()))
    first.requires_grad_(True)  # a flag of the caller's: it must come back
    try:
        iv = ActivationScalars(tiny_gpt2, sites="mlp_out")
        with pytest.raises(KeyboardInterrupt) as info:
            ascale.fit(tiny_gpt2, iv, tiny_rows, steps=20, stop="none", progress=False)
        assert first.requires_grad and not any(
            p.requires_grad for p in list(tiny_gpt2.parameters())[1:]
        )
    finally:
        first.requires_grad_(False)
    assert "interrupted during step 4 of 20" in "\n".join(info.value.__notes__)
    # as it was when interrupted: trained three steps, neither reset nor rolled back
    assert iv.l1() > 0
    for name, value in iv.state_dict().items():
        assert torch.equal(value, seen["state"][name]), name


def test_sweep_stops_at_the_interrupt_instead_of_carrying_on(tiny_gpt2, tiny_rows, monkeypatch):
    seen: dict = {}
    _interrupt_at_call(monkeypatch, 2, seen)
    with pytest.raises(KeyboardInterrupt):
        ascale.sweep(
            tiny_gpt2, tiny_rows, tiny_rows, methods=["scalars"], lambda_min=[0.1, 1.0],
            sites="mlp_out", fit_options={"steps": 3}, progress=False,
        )  # fmt: skip
    assert seen["calls"] == 2  # the second fit never started


def test_deferred_holds_signals_until_the_section_ends():
    ran = []
    with pytest.raises(KeyboardInterrupt), deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        ran.append("rest of the section")
    assert ran == ["rest of the section"]
    with pytest.raises(Terminated), terminate_raises():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_fit_exits_with_the_earlier_run_intact(
    signum, code, tiny_dirs, tiny_gpt2, tmp_path
):
    data = ContrastSet.from_rows(ROWS, tiny_gpt2)
    data_file = data.with_length(int(data.lengths[0])).to_jsonl(tmp_path / "rows.jsonl")
    out = tmp_path / "run"  # an earlier run's folder, replaced only if the new run succeeds
    out.mkdir()
    (out / "metrics.json").write_text('{"earlier": true}')
    (out / MARKER).write_text(json.dumps({"files": ["metrics.json"]}))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    err_file = tmp_path / "stderr.txt"
    argv = [sys.executable, "-m", "ascale", "fit", "--model", str(tiny_dirs["gpt2"]), "--data",
            str(data_file), "--steps", "100000", "--no-early-stop", "--sites", "mlp_out",
            "--out", str(out), "--overwrite"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with err_file.open("w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
        try:
            deadline = time.monotonic() + 120
            while "fit scalars" not in err_file.read_text():  # the progress bar: training
                assert proc.poll() is None, err_file.read_text()
                assert time.monotonic() < deadline, "the fit did not start in 120 s"
                time.sleep(0.1)
            assert any(p.name.startswith(".ascale-staging-") for p in out.iterdir())
            proc.send_signal(signum)
            assert proc.wait(timeout=60) == code
        finally:
            proc.kill()
            proc.wait()
    name = signal.Signals(signum).name
    last = err_file.read_text().strip().splitlines()[-1].split("\r")[-1]
    assert last == f"ascale fit: interrupted ({name}); earlier outputs are as they were"
    assert "Traceback" not in err_file.read_text()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no lock, no staging
    assert not (out / LOCK).exists()
