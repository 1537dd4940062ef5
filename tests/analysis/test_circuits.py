"""Circuit scoring: the MIB protocol's curves, CPR and CMD, against oracles."""

import numpy as np
import pandas as pd
import pytest
import torch

import ascale
from ascale import _tl
from ascale.analysis.circuits import score_circuits
from ascale.analysis.results import AttributionResult
from ascale.errors import AscaleWarning
from ascale.grid import Grid, circuit_sizes
from ascale.testing import PLANTED_HEAD, PLANTED_LAYER
from ascale.training.objective import answer_logit_diff


def _ranking(grid, values, method="made_up"):
    frame = pd.DataFrame(
        {
            "site": [c.site.name for c in grid.components],
            "layer": [c.layer for c in grid.components],
            "head": [c.head for c in grid.components],
            "pos": [c.pos for c in grid.components],
            "token": "",
            "value": values,
        }
    )
    return AttributionResult.from_rows(method, "score", frame)


def _m_loop(model, data, corrupted, grid, keep):
    """The oracle: one forward pass per circuit, corrupted activations everywhere off `keep`."""
    names = grid.hook_names()
    _, source = _tl.capture(model, corrupted.tokens, names)
    masks = grid.masks(~keep[None])

    def hook(act, hook):
        mask = masks[hook.name][0]
        where = mask[None, ..., None]
        return torch.where(where, source[hook.name], act)

    with torch.no_grad(), _tl.attach(model, [(n, hook) for n in masks]):
        logits = _tl.run(model, data.tokens, last_only=True)[:, -1]
    return float(-answer_logit_diff(logits, data.correct_ids, data.wrong_ids).mean())


def test_batched_scores_equal_one_circuit_per_pass(planted):
    model, clean, corrupted = planted
    grid = Grid.build(model, clean.n_pos, sites="heads,mlp_out", positions=[-1, -3])
    values = torch.linspace(-1, 1, len(grid))[
        torch.randperm(len(grid), generator=torch.Generator().manual_seed(0))
    ]
    ranking = _ranking(grid, values.tolist())
    scored = score_circuits(
        model, clean, [ranking], grid=grid, corrupted=corrupted, n_random=0, max_batch=40
    )
    m_empty = _m_loop(model, clean, corrupted, grid, torch.zeros(len(grid), dtype=torch.bool))
    m_all = _m_loop(model, clean, corrupted, grid, torch.ones(len(grid), dtype=torch.bool))
    assert scored.m_ablated == pytest.approx(m_empty, abs=1e-4)
    assert scored.m_clean == pytest.approx(m_all, abs=1e-4)
    order = np.argsort(-values.numpy(), kind="stable")
    for _, row in scored.curves.iterrows():
        keep = torch.zeros(len(grid), dtype=torch.bool)
        keep[torch.as_tensor(order[: int(row.k)])] = True
        f = (_m_loop(model, clean, corrupted, grid, keep) - m_empty) / (m_all - m_empty)
        assert row.f_signed == pytest.approx(f, abs=1e-4)
    assert scored.curves["f_abs"].iloc[-1] == pytest.approx(1.0)


def test_empty_circuit_is_zero_and_whole_grid_is_one(planted):
    model, clean, corrupted = planted
    grid = Grid.build(model, clean.n_pos, sites="heads", positions=[-1])
    ranking = _ranking(grid, [0.0] * len(grid))
    for ablation in ("counterfactual", "mean", "zero"):
        warns = pytest.warns(AscaleWarning, match="'made_up' gives all .* the same magnitude")
        with warns:  # a constant ranking's curve is the grid order's: it says so
            scored = score_circuits(
                model,
                clean,
                [ranking],
                grid=grid,
                corrupted=corrupted,
                ablation=ablation,
                fractions=(0.5, 1.0),
                n_random=2,
            )
        assert scored.curves.query("fraction == 1.0")["f_abs"].tolist() == pytest.approx([1.0, 1.0])
        assert scored.m_clean != scored.m_ablated
    assert circuit_sizes(270) == [1, 1, 1, 3, 5, 14, 27, 54, 135, 270]


def test_planted_head_scalars_rank_it_first_with_the_best_cpr(planted):
    model, clean, corrupted = planted
    train, test = clean.split(test_size=0.5, seed=0)
    _, ctest = corrupted.split(test_size=0.5, seed=0)
    torch.manual_seed(0)
    scalars = ascale.ActivationScalars(model, sites="heads", positions=[-1])
    ascale.fit(
        model,
        scalars,
        train,
        sparsity="proximal",
        objective=ascale.Objective(lambda_min=0.05),
        stop="none",
        steps=60,
        progress=False,
    )
    grid = Grid.of(scalars)
    ranking = ascale.rank_components(scalars)
    planted_name = f"heads L{PLANTED_LAYER}H{PLANTED_HEAD} @{clean.n_pos - 1}"
    support = ranking.support().reindex(list(grid.names))
    is_planted = np.array([n == planted_name for n in grid.names])
    # ROC area of the signed support against the planted component: every other component lower
    auc = (support[is_planted].to_numpy()[:, None] > support[~is_planted].to_numpy()[None]).mean()
    assert auc == 1.0
    assert ascale.evaluate(model, scalars, test).flip_rate_forward == 1.0
    rankings = {
        "scalars": ranking,
        "activation_patching": ascale.activation_patching(
            model, train, None, like=grid, ablation="zero"
        ),
    }
    scored = score_circuits(model, test, rankings, grid=grid, corrupted=ctest)
    cpr = scored.summary()["cpr"]
    assert cpr["scalars"] >= cpr.max() - 1e-3 and cpr["scalars"] > cpr["random"] + 0.3
