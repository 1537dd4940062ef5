"""Figures, tested on their data (never on images)."""

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ascale import plot
from ascale.analysis.agreement import agreement
from ascale.analysis.cumulative import CumulativeEffectResult
from ascale.analysis.results import AttributionResult, effect_classes
from ascale.errors import AscaleError, UnknownSiteError
from ascale.training.metrics import Metrics

TOKENS = ["When", " Mary", " and", " John"]


def _result(method="scalars", signed=True, heads=False, layers=3, seed=0):
    rng = np.random.default_rng(seed)
    rows = [
        ("heads" if heads else "mlp_out", layer, head, pos, TOKENS[pos], float(rng.normal()))
        for layer in range(layers)
        for pos in range(len(TOKENS))
        for head in (range(2) if heads else [None])
    ]
    frame = pd.DataFrame(rows, columns=["site", "layer", "head", "pos", "token", "value"])
    if not signed:
        frame["value"] = frame["value"].abs()
    if method == "scalars":
        frame["effect"] = effect_classes(frame["value"])
    return AttributionResult.from_rows(method, "alpha" if signed else "‖v‖", frame, signed=signed)


def test_layer_by_position_heatmap_carries_values_tokens_and_a_centred_scale():
    result = _result()
    fig = plot.plot_heatmap(result)
    frame = result.to_frame()
    (trace,) = fig.data
    assert trace.z.shape == (3, 4)
    assert trace.x == ("0 When", "1 Mary", "2 and", "3 John")
    assert list(trace.y) == [0, 1, 2]
    expected = frame[(frame["layer"] == 2) & (frame["pos"] == 1)]["value"].item()
    assert trace.z[2, 1] == expected
    assert fig.layout.xaxis.title.text.startswith("position")
    assert fig.layout.yaxis.title.text == "layer" and fig.layout.yaxis.autorange == "reversed"
    axis = fig.layout.coloraxis
    assert axis.cmid == 0.0 and axis.cmin == -axis.cmax
    assert axis.cmax == pytest.approx(frame["value"].abs().max())
    assert "alpha = %{z:.6g}" in trace.hovertemplate
    assert trace.customdata[2, 1, 0] == "mlp_out L2 @1" and trace.customdata[2, 1, 1] == " Mary"


def test_head_heatmap_has_one_layer_by_head_panel_per_position():
    result = _result(heads=True)
    fig = plot.plot_heatmap(result, "heads")
    assert len(fig.data) == len(TOKENS)
    assert all(t.z.shape == (3, 2) for t in fig.data)
    frame = result.to_frame()
    value = frame.query("layer == 1 and pos == 3 and head == 1")["value"].item()
    assert fig.data[3].z[1, 1] == value
    assert fig.layout.xaxis.title.text == "head"
    assert [a.text for a in fig.layout.annotations] == ["0 When", "1 Mary", "2 and", "3 John"]


def test_unsigned_values_get_a_sequential_scale_from_zero():
    fig = plot.plot_heatmap(_result(method="vectors", signed=False))
    assert fig.layout.coloraxis.cmin == 0.0 and fig.layout.coloraxis.cmid is None
    assert fig.layout.coloraxis.colorbar.title.text == "‖v‖"


def test_unknown_site_names_the_sites_present():
    with pytest.raises(UnknownSiteError, match="mlp_out"):
        plot.plot_heatmap(_result(), "mlp_in")


def test_top_components_bar_chart():
    result = _result()
    fig = plot.plot_top_components(result, k=5)
    (bar,) = fig.data
    top = result.top(5)
    assert list(bar.x) == top["value"].tolist()
    assert bar.y[0].startswith(top["component"][0])
    assert fig.layout.yaxis.autorange == "reversed" and fig.layout.xaxis.title.text == "alpha"


def test_rank_scatter_and_agreement_matrices():
    a, b = _result(), _result(method="activation_patching", seed=1)
    fig = plot.plot_rank_scatter(a, b)
    assert len(fig.data[0].x) == len(a)
    assert fig.layout.xaxis.title.text == "rank by scalars"
    rho = agreement([a, b]).spearman.loc["scalars", "activation_patching"]
    assert f"{rho:.3f}" in fig.layout.title.text
    fig = plot.plot_agreement(agreement([a, b], k=3))
    assert fig.data[0].z[0][1] == pytest.approx(rho)
    assert fig.data[0].z[0][0] == 1.0 and list(fig.data[1].x) == ["scalars", "activation_patching"]
    # rows labelled once: the second panel's labels sat under the first panel's colour bar
    assert (
        fig.layout.yaxis.showticklabels is not False and fig.layout.yaxis2.showticklabels is False
    )


def test_cumulative_effect_lines():
    metrics = [Metrics(r, 1.0, 0.5, -1.0, 0.0, 10, 1.0, 3, -2.0, 8) for r in (0.25, 0.5, 1.0)]
    result = CumulativeEffectResult("scalars", (1, 2, 5), tuple(metrics), metrics[-1])
    fig = plot.plot_cumulative_effect(result)
    assert list(fig.data[0].x) == [1, 2, 5] and list(fig.data[0].y) == [0.25, 0.5, 1.0]
    assert fig.layout.xaxis.type == "log"


def test_only_plot_imports_plotly():
    package = Path(plot.__file__).parent.parent  # ascale/
    importers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] == "plotly" for n in names):
                importers.add(path.relative_to(package).parts[0])
    assert importers == {"plot"}  # the ascale.plot package alone


def test_figure_draws_a_ranking_as_its_map_and_refuses_other_objects():
    frame = pd.DataFrame(
        {
            "rank": [1, 2],
            "component": ["mlp_out L0 @0", "mlp_out L1 @0"],
            "site": ["mlp_out", "mlp_out"],
            "layer": [0, 1],
            "head": [None, None],
            "pos": [0, 0],
            "token": ["a", "a"],
            "value": [0.5, -0.25],
            "magnitude": [0.5, 0.25],
            "effect": [None, None],
        }
    )
    ranking = AttributionResult("scalars", "alpha", frame)
    assert plot.figure(ranking).data[0].type == "heatmap"
    with pytest.raises(AscaleError, match="no figure for a dict"):
        plot.figure({})


def test_the_circuit_graph_draws_the_pruned_top_edges_by_sign_and_input(planted):
    """The planted head's two edges are EAP-IG's top 2: two lines, blue (they support the
    correct answer), the value input dashed; the nodes are the ends of kept edges."""
    import ascale

    model, data, corrupted = planted
    scores = ascale.eap_ig(model, data, corrupted)
    fig = ascale.plot.figure(scores, k=2)
    lines = [t for t in fig.data if t.mode == "lines"]
    assert sorted(t.name for t in lines) == ["a1.h2->logits", "input->a1.h2<v>"]
    assert all(t.line.color.startswith("rgba(33,102,172") for t in lines)
    dashes = {t.name: t.line.dash for t in lines}
    assert dashes == {"a1.h2->logits": "solid", "input->a1.h2<v>": "dash"}
    nodes = next(t for t in fig.data if t.mode == "markers+text")
    assert list(nodes.text) == ["input", "a1.h2", "logits"]
    assert fig.layout.yaxis.title.text == "layer"
    # the head's node sits at its layer, the MLP half a layer up; input below, logits above
    assert dict(zip(nodes.text, nodes.y, strict=True)) == {"input": -1, "a1.h2": 1, "logits": 2}
    unpruned = ascale.plot.plot_circuit_graph(scores, k=3, prune=False)
    assert len([t for t in unpruned.data if t.mode == "lines"]) == 3
    with pytest.raises(ascale.AscaleError, match="k must be"):
        ascale.plot.plot_circuit_graph(scores, k=0)
