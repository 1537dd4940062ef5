"""Curves and matrices across rankings: agreement, the flips kept by the top-k components,
circuits' faithfulness, and a sweep's trade-offs. Each returns a `plotly.graph_objects.Figure`.
"""

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ascale.analysis.agreement import AgreementResult
from ascale.analysis.circuits import CircuitResult
from ascale.analysis.compare import CompareResult
from ascale.analysis.cumulative import CumulativeEffectResult
from ascale.analysis.edge_results import EdgeCircuitResult
from ascale.errors import UnknownSiteError

__all__ = ["plot_agreement", "plot_circuit_curves", "plot_cumulative_effect", "plot_tradeoffs"]


def plot_agreement(result: AgreementResult) -> go.Figure:
    """Two matrices side by side: Spearman's ρ and the top-k overlap of every pair of methods.

    Example:
        >>> patching = ascale.activation_patching(model, data, corrupted, like=scalars)
        >>> fig = plot_agreement(ascale.agreement([ranking, patching]))
    """
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=["Spearman ρ (magnitudes)", f"top-{result.k} overlap"],
        horizontal_spacing=0.22,
    )
    names = list(result.methods)
    panels = [
        (result.spearman, "RdBu_r", -1.0, 1.0, 0.42),
        (result.topk_overlap, "Blues", 0.0, 1.0, 1.0),
    ]
    for col, (matrix, scale, low, high, bar_x) in enumerate(panels, start=1):
        fig.add_trace(
            go.Heatmap(
                z=matrix.loc[names, names].to_numpy(dtype=float),
                x=names,
                y=names,
                zmin=low,
                zmax=high,
                colorscale=scale,
                texttemplate="%{z:.2f}",
                colorbar={"x": bar_x, "len": 0.9},
                hovertemplate="%{y} vs %{x}: %{z:.4f}<extra></extra>",
            ),
            row=1,
            col=col,
        )
    fig.update_yaxes(autorange="reversed")
    # the rows are the same methods in both panels: labelled once, clear of the first colour bar
    fig.update_yaxes(showticklabels=False, row=1, col=2)
    fig.update_layout(
        title=f"agreement over {result.n_components} shared components",
        height=420,
        margin={"l": 160, "r": 20, "t": 80, "b": 120},
    )
    return fig


def plot_cumulative_effect(result: CumulativeEffectResult) -> go.Figure:
    """Flip rate in each direction with only the top-k components applied, against ``k``.

    Dotted lines mark the full intervention's flip rates.

    Example:
        >>> fig = plot_cumulative_effect(ascale.cumulative_effect(model, scalars, test))
    """
    frame = result.to_frame()
    fig = go.Figure()
    for direction, sign, colour in (("forward", "+1", "#d6604d"), ("backward", "-1", "#4393c3")):
        fig.add_trace(
            go.Scatter(
                x=frame.index,
                y=frame[f"flip_rate_{direction}"],
                mode="lines+markers",
                name=f"flip rate, beta={sign}",
                line={"color": colour},
                hovertemplate="top %{x}: %{y:.3f}<extra></extra>",
            )
        )
        full = getattr(result.full, f"flip_rate_{direction}")
        fig.add_hline(y=full, line={"color": colour, "dash": "dot"})
    fig.update_xaxes(type="log", title_text="components kept (top k by magnitude)")
    fig.update_yaxes(title_text="flip rate", range=[-0.02, 1.02])
    fig.update_layout(
        title=f"{result.method}: flips kept with only the top-k components (dotted: all)",
        height=380,
    )
    return fig


def plot_circuit_curves(
    result: CircuitResult | CompareResult, *, absolute: bool = False
) -> go.Figure:
    """Faithfulness ``f`` of each ranking's top-k circuit against the circuit's size.

    Args:
        result: a `CircuitResult` or a `CompareResult` (its circuits).
        absolute: order by absolute score (the CMD curve) instead of signed support (CPR).

    Example:
        >>> result = ascale.compare(model, data, corrupted, methods=("scalars", "random"),
        ...                         fit_options={"scalars": {"steps": 2}}, progress=False)
        >>> fig = plot_circuit_curves(result)
    """
    circuits = result if isinstance(result, CircuitResult) else result.circuits
    column = "f_abs" if absolute else "f_signed"
    fig = _f_curves(circuits.curves, circuits.summary(), column)
    order = "absolute score" if absolute else "signed support for the correct answer"
    fig.update_xaxes(
        type="log", title_text=f"circuit size (share of {circuits.n_components} components)"
    )
    fig.update_layout(
        title=f"circuits: top-k by {order}, {circuits.ablation} ablation, "
        f"{circuits.n_prompts} prompts",
    )
    return fig


def plot_edge_curves(result: EdgeCircuitResult, *, absolute: bool = False) -> go.Figure:
    """Faithfulness ``f`` of each edge ranking's top-k circuit (pruned, MIB's protocol)
    against the share of edges kept.

    Example:
        >>> scored = ascale.score_edges(model, data, corrupted, [ascale.eap(model, data, corrupted)])
        >>> fig = plot_edge_curves(scored)
    """
    column = "f_abs" if absolute else "f_signed"
    fig = _f_curves(result.curves, result.summary(), column)
    order = "absolute score" if absolute else "signed score"
    fig.update_xaxes(type="log", title_text=f"circuit size (share of {result.n_edges:,} edges)")
    fig.update_layout(
        title=f"edge circuits: top-k by {order}, pruned, {result.n_prompts} prompts",
    )
    return fig


def _f_curves(curves: pd.DataFrame, summary: pd.DataFrame, column: str) -> go.Figure:
    """One line of ``f`` per method, named with its CPR and CMD; ``f = 1`` dashed."""
    fig = go.Figure()
    for method, curve in curves.groupby("method", sort=False):
        row = summary.loc[method]
        fig.add_trace(
            go.Scatter(
                x=curve["fraction"],
                y=curve[column],
                customdata=curve["k"],
                mode="lines+markers",
                name=f"{method} (CPR {row.cpr:.2f}, CMD {row.cmd:.3f})",
                line={"dash": "dot"} if method == "random" else {},
                hovertemplate="top %{customdata}: f = %{y:.3f}<extra>" + str(method) + "</extra>",
            )
        )
    fig.add_hline(y=1.0, line={"color": "#888", "dash": "dash"})
    fig.update_yaxes(title_text="faithfulness f")
    fig.update_layout(height=420, legend={"font": {"size": 11}})
    return fig


def plot_tradeoffs(table: pd.DataFrame) -> go.Figure:
    """The paper's trade-offs from a `sweep` table: effectiveness against minimality (active
    units: a scalar, or a whole steering vector) and against faithfulness (KL); train as
    crosses, test as dots.

    Example:
        >>> table = ascale.sweep(model, train, test, lambda_min=[1e-3, 1e-1],
        ...                      fit_options={"steps": 2}, progress=False)
        >>> fig = plot_tradeoffs(table)
    """
    needed = {"method", "split", "lambda_min", "n_active", "faithfulness_kl"}
    missing = needed - set(table.columns)
    if missing:
        raise UnknownSiteError(f"not a sweep table: it lacks columns {sorted(missing)}")
    frame = table.assign(
        effectiveness=(table["flip_rate_forward"] + table["flip_rate_backward"]) / 2,
        n_active_plot=table["n_active"].clip(lower=1),
    )
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("effectiveness vs minimality", "effectiveness vs faithfulness"),
        horizontal_spacing=0.1,
    )
    colours = dict(
        zip(frame["method"].unique(), ("#d6604d", "#4393c3", "#4dac26", "#8073ac"), strict=False)
    )
    for (method, split), part in frame.groupby(["method", "split"], sort=False):
        marker = {
            "symbol": "x" if split == "train" else "circle",
            "color": colours[method],
            "size": 9,
        }
        text = [f"lambda_min={v:g}" for v in part["lambda_min"]]
        for col, x in ((1, "n_active_plot"), (2, "faithfulness_kl")):
            fig.add_trace(
                go.Scatter(
                    x=part[x],
                    y=part["effectiveness"],
                    mode="markers",
                    marker=marker,
                    text=text,
                    name=f"{method}, {split}",
                    legendgroup=f"{method}{split}",
                    showlegend=col == 1,
                    hovertemplate="%{text}<br>x %{x:.3g}, effectiveness %{y:.3f}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    # n_active counts units: a scalar, a whole steering vector (by its norm) or a probe
    active = "active units: scalars, vectors or probes (magnitude > 0.01)"
    fig.update_xaxes(type="log", title_text=active, row=1, col=1)
    fig.update_xaxes(title_text="faithfulness KL (lower is better)", row=1, col=2)
    fig.update_yaxes(title_text="mean flip rate (both directions)", range=[-0.02, 1.02])
    fig.update_layout(height=420, title="trade-offs over lambda_min (x: train, o: test)")
    return fig
