"""The forward passes fit and evaluate share (`ascale.training._passes`): how many run, and how many rows each takes."""

import ascale
from ascale import _tl
from ascale.interventions import ActivationScalars


def test_clean_distribution_is_computed_once(tiny_gpt2, tiny_rows, monkeypatch):
    calls = []
    real_run = _tl.run
    monkeypatch.setattr(_tl, "run", lambda *a, **k: calls.append(a[1].shape) or real_run(*a, **k))
    iv = ActivationScalars(tiny_gpt2, sites="mlp_out", positions="shared")
    ascale.fit(tiny_gpt2, iv, tiny_rows, steps=4, batch_size=4, stop="none", progress=False)
    n_clean = -(-len(tiny_rows) // 4)
    assert len(calls) == n_clean + 4  # one clean pass per batch of prompts, then one per step
    assert calls[n_clean][0] == 8  # both signs of beta in one pass: 2 x batch_size
