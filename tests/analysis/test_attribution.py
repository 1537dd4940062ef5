"""Ranking components by learned scale (`ascale.analysis.attribution`; the cumulative-effect view
that follows a ranking: `test_cumulative.py`)."""

import pytest
import torch

import ascale
from ascale.analysis.attribution import rank_components
from ascale.analysis.cumulative import cumulative_effect
from ascale.analysis.results import EFFECTS
from ascale.data import ContrastSet
from ascale.errors import AscaleError, UnknownSiteError
from ascale.interventions import DynamicScalars
from ascale.testing import ioi_rows, mlp_scalars

ROWS = ioi_rows([("Mary", "John"), ("Alice", "Bob"), ("Carol", "Dave")])


@pytest.fixture(scope="module")
def data(tiny_gpt2):
    return ContrastSet.from_rows(ROWS, tiny_gpt2)


def test_scalars_are_ranked_by_magnitude_with_their_effect_class(tiny_gpt2, data):
    iv = mlp_scalars(tiny_gpt2, data.n_pos, [0.5, -2.0, -1.0, 0.001, -0.4])
    ranking = rank_components(iv, model=tiny_gpt2, data=data)
    frame = ranking.to_frame()
    assert list(frame.columns) == [
        "rank",
        "component",
        "site",
        "layer",
        "head",
        "pos",
        "token",
        "value",
        "magnitude",
        "effect",
    ]
    assert frame["pos"].tolist() == [1, 2, 0, 4, 3]
    assert frame["rank"].tolist() == [1, 2, 3, 4, 5]
    assert frame["effect"].tolist() == ["reverse", "ablate", "amplify", "suppress", "identity"]
    assert list(frame["effect"].cat.categories) == list(EFFECTS)
    assert frame["component"][0] == "mlp_out L0 @1"
    assert frame["token"].tolist()[:2] == [
        tiny_gpt2.to_str_tokens(ROWS[0]["prompt"])[p] for p in (1, 2)
    ]
    assert frame["head"].isna().all()
    assert ranking.top(2)["value"].tolist() == pytest.approx([-2.0, -1.0])
    assert ranking.method == "scalars" and ranking.signed and ranking.identity == 0.0
    assert "mlp_out L0 @1 -2" in repr(ranking)


def test_head_scalars_get_one_row_per_layer_position_and_head(tiny_gpt2, data):
    iv = ascale.ActivationScalars(
        tiny_gpt2, sites="heads,attn_out", positions=[-1], n_pos=data.n_pos
    )
    with torch.no_grad():
        iv.params["heads"][1, 0, 3] = 0.7
    ranking = rank_components(iv)
    assert len(ranking) == 2 * 4 + 2
    assert ranking.top(1)["component"][0] == f"heads L1H3 @{data.n_pos - 1}"
    heads = ranking.select("heads")
    assert (
        len(heads) == 8
        and heads.sites == ("heads",)
        and heads.to_frame()["rank"].tolist() == list(range(1, 9))
    )
    assert rank_components(iv, sites=["attn_out"]).sites == ("attn_out",)
    with pytest.raises(UnknownSiteError, match="closest: 'heads'"):
        ranking.select("head")


def test_vectors_are_ranked_by_norm(tiny_gpt2, data):
    iv = ascale.SteeringVectors(
        tiny_gpt2, sites="resid", layers=[0], positions=[0, -1], n_pos=data.n_pos
    )
    with torch.no_grad():
        iv.params["resid"][0, 0] = 0.1
        iv.params["resid"][0, 1, 0] = -3.0
    frame = rank_components(iv).to_frame()
    assert frame["value"].tolist() == pytest.approx([3.0, 0.1 * tiny_gpt2.cfg.d_model**0.5])
    assert frame["effect"].isna().all() and not rank_components(iv).signed


def test_shared_positions_have_no_position(tiny_gpt2):
    iv = ascale.ActivationScalars(tiny_gpt2, sites="attn_out", positions="shared")
    frame = rank_components(iv).to_frame()
    assert frame["pos"].isna().all() and (frame["token"] == "(all)").all()
    assert frame["component"].tolist() == ["attn_out L0", "attn_out L1"]


def test_dynamic_scalars_are_ranked_by_mean_absolute_alpha(tiny_gpt2, data):
    dyn = DynamicScalars(tiny_gpt2, sites="mlp_out")
    with torch.no_grad():
        dyn.params["mlp_out"][1, 0, -1] = -0.3  # w = 0, b = -0.3: alpha is -0.3 everywhere
    with pytest.raises(AscaleError, match="needs model= and data="):
        rank_components(dyn)
    frame = rank_components(dyn, model=tiny_gpt2, data=data).to_frame()
    assert frame["component"].tolist() == ["mlp_out L1", "mlp_out L0"]
    assert frame["value"].tolist() == pytest.approx([-0.3, 0.0])
    assert frame["effect"].tolist() == ["suppress", "identity"]
    cum = cumulative_effect(tiny_gpt2, dyn, data, ks=(1,))  # the one probe that acts
    assert cum.metrics[0].logit_diff_forward == pytest.approx(cum.full.logit_diff_forward)


def test_unfitted_interventions_are_refused(tiny_gpt2):
    with pytest.raises(AscaleError, match="fit it first"):
        rank_components(ascale.ActivationScalars(tiny_gpt2, sites="attn_out"))


def test_dynamic_ranking_uses_the_same_alpha_as_the_hook(tiny_gpt2, data):
    dyn = DynamicScalars(tiny_gpt2, sites="mlp_out", layers=[0])  # normalised input by default
    with torch.no_grad():
        dyn.params["mlp_out"][0, 0, 0] = 0.5  # w = 0.5 e_0, b = 0
    _, cache = tiny_gpt2.run_with_cache(data.tokens, names_filter="blocks.0.hook_mlp_out")
    h = cache["blocks.0.hook_mlp_out"]
    alpha = 0.5 * h[..., 0] / h.norm(dim=-1)  # by hand, as the hook computes it
    real = data.attention_mask.bool()
    frame = rank_components(dyn, model=tiny_gpt2, data=data).to_frame()
    assert frame["value"].iloc[0] == pytest.approx(float(alpha[real].mean()), abs=1e-5)
    assert frame["magnitude"].iloc[0] == pytest.approx(float(alpha[real].abs().mean()), abs=1e-5)
