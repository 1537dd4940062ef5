"""Shared positions (`_tl.Shared`): passes that start after the positions every run shares give
the full passes' results, in the forward pass itself, activation patching, circuit scoring and
circuit fits (tiny models: mechanics)."""

import pytest
import torch

import ascale
from ascale import _tl, passes
from ascale.analysis.circuits import score_circuits
from ascale.analysis.patching import activation_patching
from ascale.data import ContrastSet
from ascale.grid import Grid
from ascale.interventions import build
from ascale.testing import TEMPLATE, ioi_like_rows
from ascale.training.circuit import fit_circuit


def _late_corruption(model, n: int = 6) -> tuple[ContrastSet, ContrastSet]:
    """Clean IOI-like rows and a counterfactual that changes only the subject's second mention
    ("... the store, X gave"): every earlier position is shared."""
    clean_rows, _ = ioi_like_rows(n)
    corrupt_rows = []
    for i, row in enumerate(clean_rows):
        a, b = row["correct"], row["wrong"]
        other = clean_rows[(i + 1) % n]["correct"]
        other = other if other not in (a, b) else clean_rows[(i + 2) % n]["correct"]
        prompt = TEMPLATE.replace("{B} gave", "{C} gave").format(A=a, B=b, C=other)
        corrupt_rows.append({**row, "prompt": prompt})
    clean = ContrastSet.from_rows(clean_rows, model)
    return clean, ContrastSet.from_rows(corrupt_rows, model)


def _without_shared(monkeypatch):
    monkeypatch.setattr(_tl, "shared_of", lambda *args, **kwargs: None)


def test_a_run_from_shared_positions_equals_the_full_run(tiny):
    clean, corrupted = _late_corruption(tiny)
    n = passes.shared_length(clean, corrupted)
    assert 0 < n < clean.n_pos - 1  # the test rows share a prefix and differ after it
    assert _tl.shared_supported(tiny)
    shared = _tl.shared_of(tiny, clean.tokens, n)
    assert shared is not None and shared.n == n and len(shared) == len(clean)
    with torch.no_grad():
        full = _tl.run(tiny, clean.tokens, last_only=True)
        part = _tl.run(tiny, clean.tokens, last_only=True, shared=shared)
        twice = _tl.run(tiny, clean.tokens.repeat(2, 1), last_only=True, shared=shared.repeat(2))
        some = _tl.run(tiny, clean.tokens[[2, 0]], last_only=True, shared=shared.rows([2, 0]))
    torch.testing.assert_close(part, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(twice, full.repeat(2, 1, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(some, full[[2, 0]], atol=1e-5, rtol=1e-5)


def test_the_cache_reaches_the_attention_bridges_only_through_the_hand_over(tiny):
    """transformer-lens 4.3's attention bridges read ``past_key_values``; transformers 5.x passes
    ``cache``: without `cache_seen` the later positions attend to themselves alone. Should this
    fail, TransformerLens reads the cache itself now and `cache_seen` can go."""
    clean, corrupted = _late_corruption(tiny)
    n = passes.shared_length(clean, corrupted)
    shared = _tl.shared_of(tiny, clean.tokens, n)
    assert shared is not None
    with torch.no_grad():
        full = _tl.run(tiny, clean.tokens, last_only=True)
        blind = tiny(clean.tokens[:, n:], cache=shared.cache(tiny.original_model.config))
    assert (blind[:, -1] - full[:, -1]).abs().max() > 1e-3


def test_shared_length_is_the_first_position_any_counterfactual_changes(tiny):
    clean, corrupted = _late_corruption(tiny)
    n = passes.shared_length(clean, corrupted)
    assert bool((clean.tokens[:, :n] == corrupted.tokens[:, :n]).all())
    assert not bool((clean.tokens[:, n] == corrupted.tokens[:, n]).all())
    assert passes.shared_length(clean, None) == 0
    assert passes.shared_length(clean, clean) == clean.n_pos - 1  # identical: the last runs


def test_activation_patching_skips_the_shared_positions_and_equals_the_full_passes(
    tiny, monkeypatch
):
    clean, corrupted = _late_corruption(tiny)
    n = passes.shared_length(clean, corrupted)
    fast = activation_patching(tiny, clean, corrupted, sites="heads,mlp_out", max_batch=12)
    _without_shared(monkeypatch)
    slow = activation_patching(tiny, clean, corrupted, sites="heads,mlp_out", max_batch=12)
    a, b = (r.components.set_index("component").sort_index() for r in (fast, slow))
    assert float(a["value"].abs().max()) > 1e-3
    torch.testing.assert_close(
        torch.tensor(a["value"].to_numpy()),
        torch.tensor(b["value"].to_numpy()),
        atol=1e-5,
        rtol=1e-4,
    )
    before = a[a["pos"] < n]["value"]
    assert len(before) > 0 and bool((before == 0).all())  # patched to itself: no effect


def test_circuit_scores_equal_the_full_passes(tiny, monkeypatch):
    clean, corrupted = _late_corruption(tiny)
    ranking = activation_patching(tiny, clean, corrupted, sites="heads,mlp_out", progress=False)
    grid = Grid.build(tiny, clean.n_pos, sites="heads,mlp_out")
    fast = score_circuits(tiny, clean, [ranking], grid=grid, corrupted=corrupted, n_random=2)
    _without_shared(monkeypatch)
    slow = score_circuits(tiny, clean, [ranking], grid=grid, corrupted=corrupted, n_random=2)
    assert fast.m_clean == pytest.approx(slow.m_clean, abs=1e-5)
    assert fast.m_ablated == pytest.approx(slow.m_ablated, abs=1e-5)
    for column in ("f_signed", "f_abs"):
        torch.testing.assert_close(
            torch.tensor(fast.curves[column].to_numpy()),
            torch.tensor(slow.curves[column].to_numpy()),
            atol=1e-4,
            rtol=1e-4,
        )


def test_a_circuit_fit_from_shared_positions_equals_the_full_one(tiny, monkeypatch):
    clean, corrupted = _late_corruption(tiny)
    scores = []
    for shared in (True, False):
        if not shared:
            _without_shared(monkeypatch)
        circuit = ascale.CircuitScalars(tiny, sites="heads,mlp_out", n_pos=clean.n_pos)
        fit_circuit(tiny, circuit, clean, corrupted, steps=4, batch_size=4, progress=False)
        scores.append(circuit.scores().detach())
    assert scores[0].abs().max() > 0
    torch.testing.assert_close(scores[0], scores[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["scalars", "vectors"])
def test_a_steering_fit_at_the_last_positions_equals_the_full_one(tiny, monkeypatch, method):
    """An intervention bound to the last positions edits nothing before them: fit and
    evaluate run only those positions, from the clean keys and values of the rest."""
    clean, _ = _late_corruption(tiny)
    starts = []
    real_run = _tl.run

    def spy(model, tokens, *args, prefix=None, **kwargs):
        starts.append(0 if prefix is None or prefix.shared is None else prefix.shared.n)
        return real_run(model, tokens, *args, prefix=prefix, **kwargs)

    monkeypatch.setattr(_tl, "run", spy)
    results = []
    for shared in (True, False):
        if not shared:
            _without_shared(monkeypatch)
        iv = build(method, tiny, sites="heads,mlp_out", positions=[-2, -1], n_pos=clean.n_pos)
        assert iv.first_position == clean.n_pos - 2
        ascale.fit(tiny, iv, clean, steps=3, batch_size=4, stop="none", progress=False)
        metrics = ascale.evaluate(tiny, iv, clean)
        results.append(([p.detach().clone() for p in iv.parameters()], metrics))
    assert clean.n_pos - 2 in starts and 0 in starts  # the first fit ran from the shared positions
    (fast, fast_metrics), (slow, slow_metrics) = results
    assert max(float(p.abs().max()) for p in fast) > 0
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert fast_metrics.logit_diff_forward == pytest.approx(
        slow_metrics.logit_diff_forward, abs=1e-4
    )
    assert fast_metrics.faithfulness_kl == pytest.approx(slow_metrics.faithfulness_kl, abs=1e-5)


def _spy_shared(monkeypatch) -> list[int]:
    """The `n` of every `_tl.shared_of` call from here on."""
    calls: list[int] = []
    real = _tl.shared_of

    def spy(model, tokens, n, **kwargs):
        calls.append(int(n))
        return real(model, tokens, n, **kwargs)

    monkeypatch.setattr(_tl, "shared_of", spy)
    return calls


def test_a_grid_at_the_last_positions_runs_only_those_and_equals_the_full_passes(tiny, monkeypatch):
    """Nothing is patched or ablated before a grid's first position: patching, circuit scores
    and circuit fits run only the later positions, with or without a counterfactual (here the
    mean ablation, and a counterfactual that changes the first name)."""
    clean_rows, corrupt_rows = ioi_like_rows(6)
    clean = ContrastSet.from_rows(clean_rows, tiny)
    corrupted = ContrastSet.from_rows(corrupt_rows, tiny)
    last = [-2, -1]
    grid = Grid.build(tiny, clean.n_pos, sites="heads,mlp_out", positions=last)
    assert grid.first_position == clean.n_pos - 2
    assert passes.clean_length(grid, clean, corrupted) == clean.n_pos - 2

    def everything():
        patched = activation_patching(
            tiny, clean, sites="heads,mlp_out", positions=last, ablation="mean", progress=False
        )
        scored = score_circuits(tiny, clean, [patched], grid=grid, corrupted=corrupted, n_random=1)
        circuit = ascale.CircuitScalars(
            tiny, sites="heads,mlp_out", positions=last, ablation="mean"
        )
        fit_circuit(tiny, circuit, clean, corrupted, steps=3, batch_size=4, progress=False)
        return patched.components["value"].to_numpy(), scored.curves, circuit.scores().detach()

    calls = _spy_shared(monkeypatch)
    fast = everything()
    assert calls and set(calls) == {clean.n_pos - 2}
    _without_shared(monkeypatch)
    slow = everything()
    assert abs(fast[0]).max() > 1e-3 and float(fast[2].abs().max()) > 0
    torch.testing.assert_close(torch.tensor(fast[0]), torch.tensor(slow[0]), atol=1e-5, rtol=1e-4)
    for column in ("f_signed", "f_abs"):
        torch.testing.assert_close(
            torch.tensor(fast[1][column].to_numpy()),
            torch.tensor(slow[1][column].to_numpy()),
            atol=1e-4,
            rtol=1e-4,
        )
    torch.testing.assert_close(fast[2], slow[2], atol=1e-5, rtol=1e-4)
