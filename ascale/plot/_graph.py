"""An edge circuit drawn as a graph: the top edges of a ranking after MIB's pruning.

Nodes sit by layer, bottom to top (``input`` at the bottom, ``logits`` at the top); a layer's
heads side by side with its MLP just above them (the MLP reads its own layer's heads). An edge
is a line from its source to its destination node, its width by ``|score|``, its colour by sign
(blue supports the correct answer, red the wrong one) and its dash by what it feeds: a head's
query (solid), key (dot) or value (dash) input, or an MLP's or the logits' input (solid). Hover
shows each edge's name and score, and each node's name.
"""

import math

import plotly.graph_objects as go
import torch

from ascale.analysis.edge_results import EdgeAttributionResult
from ascale.errors import AscaleError
from ascale.graph import EdgeGraph

__all__ = ["plot_circuit_graph"]

_DASH = {"q": "solid", "k": "dot", "v": "dash"}


def plot_circuit_graph(
    result: EdgeAttributionResult, k: int = 40, *, prune: bool = True, title: str | None = None
) -> go.Figure:
    """The `k` edges of largest ``|score|`` (pruned to input→logits paths, as MIB scores a
    circuit) as a graph.

    Example:
        >>> fig = plot_circuit_graph(ascale.eap(model, data, corrupted), k=20)
        >>> fig.layout.yaxis.title.text
        'layer'
    """
    graph, scores = result.graph, result.scores.detach().float().cpu()
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= graph.n_edges:
        raise AscaleError(f"k must be a whole number in 1..{graph.n_edges} (the edges), got {k!r}")
    kept = torch.zeros(graph.n_edges, dtype=torch.bool)
    kept[scores.abs().topk(k).indices] = True
    if prune:
        kept = graph.prune(kept)
    edges = kept.nonzero().flatten().tolist()
    where = _places(graph)
    largest = float(scores[kept].abs().max()) if edges else 1.0
    fig = go.Figure()
    for e in sorted(edges, key=lambda i: float(scores[i].abs())):  # the largest on top
        fig.add_trace(_edge_trace(graph, e, float(scores[e]), largest, where))
    fig.add_trace(_node_trace(graph, kept, where))
    shown = f"{len(edges)} edges" + (f" of the top {k}, pruned" if prune else "")
    fig.update_layout(
        title=title or f"{result.method}: {shown} (blue supports the correct answer)",
        showlegend=False,
        height=max(420, 22 * graph.n_layers + 160),
        width=max(520, 60 * graph.n_heads + 200),
        plot_bgcolor="white",
    )
    fig.update_xaxes(visible=False, range=[-0.6, graph.n_heads + 0.4])  # room for labels
    fig.update_yaxes(title_text="layer", zeroline=False, showgrid=False)
    return fig


def _places(graph: EdgeGraph) -> dict[str, tuple[float, float]]:
    """``(x, y)`` of every node: heads of layer ``l`` at ``y = l``, its MLP at ``l + 0.5``."""
    where = {
        "input": ((graph.n_heads - 1) / 2, -1.0),
        "logits": ((graph.n_heads - 1) / 2, graph.n_layers),
    }
    for layer in range(graph.n_layers):
        for h in range(graph.n_heads):
            where[f"a{layer}.h{h}"] = (float(h), float(layer))
        where[f"m{layer}"] = ((graph.n_heads - 1) / 2, layer + 0.5)
    return where


def _edge_trace(
    graph: EdgeGraph, e: int, score: float, largest: float, where: dict[str, tuple[float, float]]
) -> go.Scatter:
    src = graph.src_names[int(graph.src_index[e])]
    dst = graph.dst_names[int(graph.dst_index[e])]
    node, _, letter = dst.partition("<")
    (x0, y0), (x1, y1) = where[src], where[node]
    colour = "rgba(33,102,172,0.75)" if score >= 0 else "rgba(178,24,43,0.75)"
    width = 0.5 + 5.5 * math.sqrt(abs(score) / largest) if largest > 0 else 1.0
    return go.Scatter(
        x=[x0, x1],
        y=[y0, y1],
        mode="lines",
        line={"color": colour, "width": width, "dash": _DASH.get(letter.rstrip(">"), "solid")},
        hoverinfo="text",
        text=f"{src}->{dst}<br>score {score:+.4g}",
        name=f"{src}->{dst}",
    )


def _node_trace(
    graph: EdgeGraph, kept: torch.Tensor, where: dict[str, tuple[float, float]]
) -> go.Scatter:
    alive = graph.nodes_in(kept)
    names = [n for n, on in zip(graph.src_names, alive.tolist(), strict=True) if on]
    names.append("logits")
    return go.Scatter(
        x=[where[n][0] for n in names],
        y=[where[n][1] for n in names],
        mode="markers+text",
        marker={
            "size": 12,
            "color": "#444",
            "symbol": ["square" if n.startswith("m") else "circle" for n in names],
        },
        text=names,
        textposition="middle right",
        hoverinfo="text",
        name="nodes",
    )
