"""Circuit scalars (`ascale.CircuitScalars`, `ascale.interventions._circuit`): the edit's two
ends against the clean model and `score_circuits`' ablation, the gradient against attribution
patching, `soft_top_k`, and save/load on tiny models (the fit: `tests/training/test_circuit.py`)."""

import numpy as np
import pytest
import torch

import ascale
from ascale import passes
from ascale.errors import AscaleError
from ascale.interventions import soft_top_k
from ascale.training.circuit import _ablated

GRIDS = [
    {"sites": "heads,mlp_out", "positions": "all"},
    {"sites": "heads", "positions": [-1, 2]},
    {"sites": "attn_out", "positions": "shared"},
]


def _logits(model, circuit, data, source, keep):
    with circuit.circuit(model, source, keep):
        return model(data.tokens)[:, -1]


@pytest.mark.parametrize("where", GRIDS)
def test_keeping_everything_is_the_clean_model_and_keeping_nothing_is_score_circuits_ablation(
    tiny_ioi, where
):
    model, data, corrupted = tiny_ioi
    circuit = ascale.CircuitScalars(model, n_pos=data.n_pos, **where)
    grid = ascale.Grid.of(circuit).with_length(data.n_pos)
    source = _ablated(model, circuit, data, corrupted)
    n = len(grid)
    with torch.no_grad():
        clean = model(data.tokens)[:, -1]
        kept = _logits(model, circuit, data, source, torch.ones(n))
        ablated = _logits(model, circuit, data, source, torch.zeros(n))
        reference = passes.patched_deltas(
            model, data, grid, torch.ones(1, n, dtype=torch.bool), source
        )[0]
    rows = torch.arange(len(data))
    delta = ablated[rows, data.wrong_ids] - ablated[rows, data.correct_ids]
    assert torch.equal(kept, clean)  # bit for bit
    assert torch.equal(delta, reference)  # exactly the ablation circuit scoring does
    # beta = 0 is the clean model whatever the mask
    with torch.no_grad(), circuit.circuit(model, source, torch.zeros(n), beta=0.0):
        assert torch.equal(model(data.tokens)[:, -1], clean)


@pytest.mark.parametrize("where", GRIDS[:2])
def test_the_gradient_at_the_clean_model_is_attribution_patching(tiny_ioi, where):
    model, data, corrupted = tiny_ioi
    circuit = ascale.CircuitScalars(model, n_pos=data.n_pos, **where)
    grid = ascale.Grid.of(circuit).with_length(data.n_pos)
    source = _ablated(model, circuit, data, corrupted)
    keep = torch.ones(len(grid), requires_grad=True)
    logits = _logits(model, circuit, data, source, keep)
    rows = torch.arange(len(data))
    m = logits[rows, data.correct_ids] - logits[rows, data.wrong_ids]
    (grad,) = torch.autograd.grad(m.sum(), keep)
    estimated = ascale.attribution_patching(model, data, corrupted, like=grid)
    values = estimated.components.set_index("component")["value"].reindex(list(grid.names))
    # attribution patching's noising effect is normalised by the clean-to-corrupt change of Δ
    gap = float(passes.clean_deltas(model, corrupted).mean() + m.detach().mean())
    np.testing.assert_allclose(grad.numpy() / len(data) / gap, values.to_numpy(), atol=1e-5)


def test_soft_top_k_keeps_the_top_k_and_refuses_other_sizes():
    scores = torch.tensor([0.3, 2.0, -1.0, 1.0])
    assert soft_top_k(scores, 2, 0.0).tolist() == [0.0, 1.0, 0.0, 1.0]
    soft = soft_top_k(scores, 2, 0.5)
    assert bool((soft[[1, 3]] > 0.5).all() and (soft[[0, 2]] < 0.5).all())
    assert soft_top_k(scores, 4, 0.0).tolist() == [1.0] * 4
    with pytest.raises(AscaleError, match=r"k must lie in 1\.\.4"):
        soft_top_k(scores, 0, 0.5)


def test_save_and_load_keep_the_scores_and_the_ablation(tiny_ioi, tmp_path):
    model, data, _ = tiny_ioi
    circuit = ascale.CircuitScalars(model, sites="heads", ablation="mean", n_pos=data.n_pos)
    ascale.fit_circuit(model, circuit, data, steps=3, progress=False)
    ascale.save(circuit, tmp_path / "circuit")
    again = ascale.load(tmp_path / "circuit", model)
    assert isinstance(again, ascale.CircuitScalars) and again.ablation == "mean"
    assert torch.equal(again.scores(), circuit.scores())
