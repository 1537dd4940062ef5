"""Where fit steers (`ascale.training.positions`): ``positions="auto"`` binds the last positions
of the prompts and says so; given positions are kept; a last-position map reads with its token."""

import html

import pytest
import torch

import ascale
from ascale import _tl
from ascale.errors import AscaleError
from ascale.interventions import ActivationScalars, DynamicScalars, SteeringVectors
from ascale.plot import plot_heatmap
from ascale.training.positions import auto_positions


def test_auto_positions_are_the_last_three_or_every_one_of_shorter_prompts():
    assert auto_positions(12) == (-3, -2, -1)
    assert auto_positions(3) == (-3, -2, -1)
    assert auto_positions(2) == (-2, -1)
    assert auto_positions(1) == (-1,)


@pytest.mark.parametrize("cls", [ActivationScalars, SteeringVectors])
def test_auto_fit_steers_the_last_three_positions_and_says_so(tiny_gpt2, tiny_rows, cls):
    n = tiny_rows.n_pos
    iv = cls(tiny_gpt2, sites="attn_out,mlp_out")
    assert iv.positions == "auto" and not iv.is_bound
    result = ascale.fit(tiny_gpt2, iv, tiny_rows, steps=3, lr=0.3, stop="none", progress=False)
    assert iv.positions == (n - 3, n - 2, n - 1) and iv.n_pos == n
    assert iv.params["mlp_out"].shape[:2] == (2, 3)  # [layer, slot]: three slots, not n
    assert result.settings["positions"] == [n - 3, n - 2, n - 1]
    assert result.settings["positions_rule"] == f"auto: the last 3 of {n} positions"
    # learned, and only the last three positions see it: earlier logits are the clean ones
    assert iv.params["mlp_out"].abs().sum() > 0
    with torch.no_grad():
        clean = _tl.run(tiny_gpt2, tiny_rows.tokens)
        with iv.applied(tiny_gpt2, beta=1.0):
            steered = _tl.run(tiny_gpt2, tiny_rows.tokens)
    assert torch.equal(steered[:, : n - 3], clean[:, : n - 3])
    assert not torch.allclose(steered[:, n - 1], clean[:, n - 1])


def test_given_positions_are_kept_and_reported_as_given(tiny_gpt2, tiny_rows):
    n = tiny_rows.n_pos
    for given, bound in (("all", "all"), ([-1], [n - 1]), ([0, -1], [0, n - 1])):
        iv = ActivationScalars(tiny_gpt2, sites="mlp_out", positions=given)
        result = ascale.fit(tiny_gpt2, iv, tiny_rows, steps=1, progress=False)
        assert result.settings["positions"] == bound, given
        assert result.settings["positions_rule"] == "given"
    for iv in (
        ActivationScalars(tiny_gpt2, sites="mlp_out", positions="shared"),
        DynamicScalars(tiny_gpt2, sites="mlp_out"),
    ):
        result = ascale.fit(tiny_gpt2, iv, tiny_rows, steps=1, progress=False)
        assert result.settings["positions"] == "shared"
        assert result.settings["positions_rule"] == "shared over positions, any prompt length"


def test_auto_bound_without_a_fit_is_every_position(tiny_gpt2):
    iv = ActivationScalars(tiny_gpt2, sites="mlp_out", n_pos=7)
    assert iv.positions == "all" and iv.n_params == 2 * 7
    late = ActivationScalars(tiny_gpt2, sites="mlp_out")
    late.bind(7, positions=[-1])  # what fit does for "auto"
    assert late.positions == (6,) and late.n_params == 2
    with pytest.raises(AscaleError, match="only positions='auto' takes positions at bind"):
        ActivationScalars(tiny_gpt2, sites="mlp_out", positions="all").bind(7, positions=[-1])


def test_a_last_position_map_reads_with_its_token(tiny_gpt2, tiny_rows, tmp_path):
    n = tiny_rows.n_pos
    iv = ActivationScalars(tiny_gpt2, sites="attn_out,mlp_out", positions=[-1])
    ascale.fit(tiny_gpt2, iv, tiny_rows, steps=2, lr=0.3, stop="none", progress=False)
    ranking = ascale.rank_components(iv, model=tiny_gpt2, data=tiny_rows)
    token = ranking.tokens[n - 1]
    assert set(ranking.components["pos"]) == {n - 1} and len(ranking.components) == 2 * 2
    fig = plot_heatmap(ranking, "mlp_out")  # layer x the one position, labelled with its token
    assert fig.data[0].z.shape == (2, 1) and list(fig.data[0].x) == [f"{n - 1} {token.strip()}"]
    page = ascale.write_report(tmp_path, [ranking]).read_text()
    assert f"<h3>{html.escape(f'scalars (alpha), at position {n - 1} {token!r}')}</h3>" in page
    every = ActivationScalars(tiny_gpt2, sites="mlp_out", positions="all")
    ascale.fit(tiny_gpt2, every, tiny_rows, steps=1, progress=False)
    page = ascale.write_report(tmp_path / "every", [ascale.rank_components(every)]).read_text()
    assert "<h3>scalars (alpha)</h3>" in page  # every position: the map's columns say where
