"""Edge circuit scalars (`ascale.training.edge_circuit`): one learned score per edge of MIB's
graph, fitted on the one training loop."""

import pytest
import torch

from ascale.analysis.edge_results import EdgeAttributionResult
from ascale.analysis.edges import eap_ig, score_edges
from ascale.errors import AscaleError
from ascale.training.edge_circuit import edge_sizes, fit_edge_circuit


def test_the_sizes_are_mibs_below_the_whole_graph_weighted_by_their_area():
    sizes, weights = edge_sizes(110)
    assert sizes == [1, 2, 5, 11, 22, 55]  # int(p * 110), at least 1; 110 itself is left out
    # p = 0.001 .. 0.01 all give one edge: their trapezoid widths add up
    widths = [(0.002 - 0.001) / 2, (0.005 - 0.001) / 2, (0.01 - 0.002) / 2, (0.02 - 0.005) / 2]
    assert float(weights[0]) == pytest.approx(sum(widths))
    assert float(weights.sum()) == pytest.approx(0.999 - (1.0 - 0.5) / 2)  # all but p = 1


def test_the_fit_finds_the_planted_circuit_its_start_hid(planted):
    """EAP-IG's order with the planted head's two edges set to 0 (the middle of the order)
    scores no better than random; the fit raises them back into the circuits it keeps."""
    model, data, corrupted = planted
    reference = eap_ig(model, data, corrupted)
    graph, start = reference.graph, reference.scores.clone()
    planted_edges = [graph.edge_ids[e] for e in ("input->a1.h2<v>", "a1.h2->logits")]
    start[planted_edges] = 0.0
    scores, result = fit_edge_circuit(model, data, corrupted, start, steps=30, batch_size=6,
                                      seed=0, progress=False)  # fmt: skip
    assert result.steps_run == 30 and len(result.history["f"]) == 30
    assert result.settings["lr"] > 0 and result.settings["n_edges"] == graph.n_edges == 110
    assert (scores[planted_edges] > 0).all()  # they support the answer, as kept ones do
    rankings = [EdgeAttributionResult(m, graph, s) for m, s in (("fit", scores), ("start", start))]
    summary = score_edges(model, data, corrupted, rankings, n_random=0).summary()
    assert summary.loc["start", "cpr"] < 0.3 and summary.loc["start", "cmd"] > 0.7
    assert summary.loc["fit", "cpr"] > 0.8 and summary.loc["fit", "cmd"] < 0.2


def test_a_start_of_the_wrong_size_or_with_nan_is_refused(planted):
    model, data, corrupted = planted
    with pytest.raises(AscaleError, match="one score per edge"):
        fit_edge_circuit(model, data, corrupted, torch.zeros(3), steps=1, progress=False)
    bad = torch.zeros(110)
    bad[4] = float("nan")
    with pytest.raises(AscaleError, match="NaN"):
        fit_edge_circuit(model, data, corrupted, bad, steps=1, progress=False)
    with pytest.raises(AscaleError, match="align"):
        fit_edge_circuit(model, data, corrupted.subset(range(3)), torch.zeros(110), progress=False)
    order = [1, 0, *range(2, len(corrupted))]  # counterfactuals of other rows
    with pytest.raises(AscaleError, match=r"row 0 .* has the"):
        fit_edge_circuit(model, data, corrupted.subset(order), torch.zeros(110), progress=False)


def test_a_mean_ablation_fit_needs_no_counterfactuals_and_agrees_with_the_scorer(planted):
    """The fit's clean-to-empty gap under mean ablation is the scorer's ``m(N) - m(∅)``."""
    model, data, _ = planted
    start = eap_ig(model, data, ablation="mean").scores
    scores, result = fit_edge_circuit(model, data, None, start, ablation="mean", steps=3,
                                      batch_size=6, progress=False)  # fmt: skip
    assert result.settings["ablation"] == "mean" and result.steps_run == 3
    scaled = 0.01 * start / start.abs().max()  # where the scores start
    assert bool(torch.isfinite(scores).all()) and not torch.allclose(scores, scaled)
    scored = score_edges(model, data, None, {"fit": scores}, ablation="mean", n_random=0)
    assert result.settings["gap"] == pytest.approx(scored.m_clean - scored.m_ablated, abs=1e-4)
