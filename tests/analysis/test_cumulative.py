"""The cumulative-effect view (`ascale.analysis.cumulative`): an intervention re-evaluated with
only its top-k components, in its own order or another ranking's."""

import pandas as pd
import pytest
import torch

import ascale
from ascale.analysis.attribution import rank_components
from ascale.analysis.cumulative import cumulative_effect
from ascale.data import ContrastSet
from ascale.testing import ioi_rows, mlp_scalars

ROWS = ioi_rows([("Mary", "John"), ("Alice", "Bob"), ("Carol", "Dave")])


@pytest.fixture(scope="module")
def data(tiny_gpt2):
    return ContrastSet.from_rows(ROWS, tiny_gpt2)


def test_cumulative_effect_re_evaluates_with_only_the_top_k(tiny_gpt2, data):
    iv = mlp_scalars(tiny_gpt2, data.n_pos, [0.5, -2.0, -1.0, 0.001, -0.4])
    before = iv.params["mlp_out"].detach().clone()
    cum = cumulative_effect(tiny_gpt2, iv, data, ks=(1, 3, 5, 50))
    assert torch.equal(iv.params["mlp_out"], before)  # the intervention itself is untouched
    assert cum.ks == (1, 3, 5)
    frame = cum.to_frame()
    assert frame["n_active"].tolist() == [1, 3, 4]
    assert frame.loc[5, "logit_diff_forward"] == pytest.approx(cum.full.logit_diff_forward)
    assert frame.loc[5, "shift_kept_forward"] == pytest.approx(1.0)
    only_top = mlp_scalars(tiny_gpt2, data.n_pos, [0.0, -2.0, 0.0, 0.0, 0.0])
    expected = ascale.evaluate(tiny_gpt2, only_top, data)
    assert frame.loc[1, "logit_diff_forward"] == pytest.approx(expected.logit_diff_forward)
    assert frame.loc[1, "logit_diff_backward"] == pytest.approx(expected.logit_diff_backward)


def test_cumulative_effect_can_follow_another_ranking(tiny_gpt2, data):
    iv = mlp_scalars(tiny_gpt2, data.n_pos, [0.5, -2.0, -1.0, 0.001, -0.4])
    order = rank_components(
        mlp_scalars(tiny_gpt2, data.n_pos, [9.0, 0.0, 0.0, 0.0, 0.0])
    )  # position 0 first
    cum = cumulative_effect(tiny_gpt2, iv, data, ks=(1,), ranking=order)
    only_first = mlp_scalars(tiny_gpt2, data.n_pos, [0.5, 0.0, 0.0, 0.0, 0.0])
    expected = ascale.evaluate(tiny_gpt2, only_first, data)
    assert cum.metrics[0].logit_diff_forward == pytest.approx(expected.logit_diff_forward)
    assert isinstance(cum.to_frame(), pd.DataFrame)
