"""Plotly figures from result objects; the only module that imports plotly.

Every function takes results (`AttributionResult`, `AgreementResult`,
`CumulativeEffectResult`) and returns a `plotly.graph_objects.Figure`; nothing is shown. Signed
values (``alpha``, patching effects) use a diverging colour scale centred on the identity (0 for
``alpha``: blue shrinks or reverses a vector, red strengthens it); unsigned ones (vector norms) a
sequential scale from 0. Hovering a cell shows its exact value.

Example:
    >>> fig = plot_heatmap(ascale.rank_components(scalars, model=model, data=train), "mlp_out")
    >>> fig.write_html("mlp_out.html")
"""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ascale.agreement import AgreementResult, agreement
from ascale.attribution import EFFECTS, AttributionResult
from ascale.circuits import CircuitResult
from ascale.compare import CompareResult
from ascale.cumulative import CumulativeEffectResult
from ascale.errors import UnknownSiteError, closest

__all__ = [
    "figure_html",
    "plot_agreement",
    "plot_circuit_curves",
    "plot_cumulative_effect",
    "plot_heatmap",
    "plot_rank_scatter",
    "plot_top_components",
    "plot_tradeoffs",
]

DIVERGING = "RdBu_r"
SEQUENTIAL = "Viridis"
EFFECT_COLOURS = {
    "identity": "#bbbbbb",
    "amplify": "#d6604d",
    "suppress": "#92c5de",
    "ablate": "#4393c3",
    "reverse": "#053061",
}
_HEIGHT_PER_LAYER = 18
_PANELS_PER_ROW = 5
_ROW_GAP = 60  # pixels between rows of panels, room for the titles


def plot_heatmap(result: AttributionResult, site: str | None = None) -> go.Figure:
    """Scaling map of one site: layer × position, or layer × head (one panel per position).

    Position columns are labelled with their index and the token of the first prompt.

    Args:
        result: a ranking (`rank_components`, `activation_patching`, ...).
        site: which site to draw (default: the first one in `result`).

    Example:
        >>> fig = plot_heatmap(ranking, "mlp_out")
        >>> fig.data[0].z.shape  # layers x positions
        (2, 15)
    """
    site = _site(result, site)
    frame = result.components[result.components["site"] == site]
    n_layers = frame["layer"].nunique()
    panel = max(200, 40 + _HEIGHT_PER_LAYER * n_layers)
    if frame["head"].notna().any():
        fig, n_rows = _head_panels(result, frame, panel)
        fig.update_yaxes(title_text="layer", col=1)
        fig.update_annotations(font_size=12)
    else:
        fig, n_rows = go.Figure(_heatmap(result, frame, columns="pos")), 1
        fig.update_xaxes(title_text="position: token (first prompt)", tickangle=-45)
        fig.layout.yaxis.title.text = "layer"
    fig.update_yaxes(autorange="reversed", dtick=1 if n_layers <= 32 else 2)
    fig.update_layout(
        title=f"{result.method}: {result.value_name} at {site}",
        coloraxis=_colour_axis(result, frame["value"]),
        height=_figure_height(n_rows, panel),
        margin={"l": 60, "r": 20, "t": 70, "b": 100},
    )
    return fig


def _figure_height(n_rows: int, panel: int) -> int:
    return 170 + n_rows * panel + (n_rows - 1) * _ROW_GAP


def _head_panels(
    result: AttributionResult, frame: pd.DataFrame, panel: int
) -> tuple[go.Figure, int]:
    """One layer × head panel per position, wrapped into rows of `_PANELS_PER_ROW`."""
    positions = list(pd.unique(frame["pos"].sort_values()))
    titles = [
        _pos_label(p, result.tokens.get(int(p), "")) if pd.notna(p) else "all positions"
        for p in positions
    ]
    n_cols = min(len(positions), _PANELS_PER_ROW)
    n_rows = -(-len(positions) // n_cols)
    fig = make_subplots(
        rows=n_rows,
        cols=n_cols,
        shared_yaxes=True,
        subplot_titles=titles,
        horizontal_spacing=0.03,
        vertical_spacing=_ROW_GAP / _figure_height(n_rows, panel),
    )
    for i, pos in enumerate(positions):
        at = frame[frame["pos"].isna()] if pd.isna(pos) else frame[frame["pos"] == pos]
        row, col = i // n_cols + 1, i % n_cols + 1
        fig.add_trace(_heatmap(result, at, columns="head"), row=row, col=col)
        fig.update_xaxes(dtick=1, row=row, col=col)
        if row == n_rows:
            fig.update_xaxes(title_text="head", row=row, col=col)
    return fig, n_rows


def _heatmap(result: AttributionResult, frame: pd.DataFrame, columns: str) -> go.Heatmap:
    """A layer × `columns` heatmap trace, with exact values and tokens in the hover text."""
    frame = frame.assign(
        column=[
            _pos_label(p, t) if columns == "pos" else int(h)
            for p, t, h in zip(frame["pos"], frame["token"], frame["head"], strict=True)
        ]
    )
    order = frame.sort_values("pos" if columns == "pos" else "head")["column"].unique()
    grid = frame.pivot(index="layer", columns="column", values="value").reindex(columns=order)
    hover = frame.pivot(index="layer", columns="column", values="component").reindex(columns=order)
    tokens = frame.pivot(index="layer", columns="column", values="token").reindex(columns=order)
    custom = np.dstack([hover.to_numpy(dtype=object), tokens.to_numpy(dtype=object)])
    return go.Heatmap(
        z=grid.to_numpy(dtype=float),
        x=[str(c) for c in grid.columns],
        y=grid.index.to_numpy(),
        customdata=custom,
        coloraxis="coloraxis",
        hovertemplate=(
            "%{customdata[0]}<br>token: %{customdata[1]}<br>"
            f"{result.value_name} = %{{z:.6g}}<extra></extra>"
        ),
    )


def _colour_axis(result: AttributionResult, values: pd.Series) -> dict[str, object]:
    bar = {"title": {"text": result.value_name}, "tickformat": ".3~g"}
    if not result.signed:
        return {"colorscale": SEQUENTIAL, "cmin": 0.0, "colorbar": bar}
    reach = float((values - result.identity).abs().max()) or 1.0
    return {
        "colorscale": DIVERGING,
        "cmid": result.identity,
        "cmin": result.identity - reach,
        "cmax": result.identity + reach,
        "colorbar": bar,
    }


def plot_top_components(result: AttributionResult, k: int = 20) -> go.Figure:
    """Horizontal bars of the `k` largest components, coloured by effect class (or sign).

    Example:
        >>> len(plot_top_components(ranking, k=10).data[0].y)  # the top components
        10
    """
    top = result.top(k)
    labels = [f"{c}  {t!r}" for c, t in zip(top["component"], top["token"], strict=True)]
    has_effect = bool(top["effect"].notna().any())
    if has_effect:
        colours = [EFFECT_COLOURS.get(str(e), "#888888") for e in top["effect"]]
    else:
        colours = ["#d6604d" if v >= result.identity else "#4393c3" for v in top["value"]]
    fig = go.Figure(
        go.Bar(
            x=top["value"],
            y=labels,
            orientation="h",
            marker_color=colours,
            customdata=np.stack([top["rank"], top["effect"].astype(str)], axis=1),
            hovertemplate=(
                "rank %{customdata[0]}: %{y}<br>"
                f"{result.value_name} = %{{x:.6g}}"
                + ("<br>effect: %{customdata[1]}" if has_effect else "")
                + "<extra></extra>"
            ),
        )
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        title=f"{result.method}: top {len(top)} components by |{result.value_name}|",
        xaxis_title=result.value_name,
        height=max(300, 120 + 22 * len(top)),
        margin={"l": 260, "r": 20, "t": 60, "b": 50},
    )
    if has_effect:
        present = [e for e in EFFECTS if (top["effect"] == e).any()]
        fig.update_layout(
            annotations=[
                {
                    "text": "  ".join(
                        f"<span style='color:{EFFECT_COLOURS[e]}'>■</span> {e}" for e in present
                    ),
                    "xref": "paper",
                    "yref": "paper",
                    "x": 1,
                    "y": 1.06,
                    "showarrow": False,
                    "xanchor": "right",
                }
            ]
        )
    return fig


def plot_rank_scatter(a: AttributionResult, b: AttributionResult) -> go.Figure:
    """Rank of each shared component under `a` (x) against its rank under `b` (y), log axes.

    Ranks are recomputed over the components both share (1 = largest magnitude); the title
    gives Spearman's correlation.

    Example:
        >>> patching = ascale.activation_patching(model, data, corrupted, like=scalars)
        >>> fig = plot_rank_scatter(ranking, patching)
    """
    table = a.components[["component", "token", "magnitude"]].merge(
        b.components[["component", "magnitude"]], on="component", suffixes=("_a", "_b")
    )
    x = table["magnitude_a"].rank(ascending=False, method="min")
    y = table["magnitude_b"].rank(ascending=False, method="min")
    rho = agreement({a.method + " (x)": a, b.method + " (y)": b}).to_frame()["spearman"][0]
    fig = go.Figure(
        go.Scatter(
            x=x,
            y=y,
            mode="markers",
            marker={"size": 6, "opacity": 0.6},
            customdata=np.stack([table["component"], table["token"]], axis=1),
            hovertemplate="%{customdata[0]} %{customdata[1]}<br>rank %{x} vs %{y}<extra></extra>",
        )
    )
    fig.update_xaxes(type="log", title_text=f"rank by {a.method}")
    fig.update_yaxes(type="log", title_text=f"rank by {b.method}")
    fig.update_layout(
        title=f"{a.method} vs {b.method}: Spearman ρ = {rho:.3f}", height=420, width=520
    )
    return fig


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
    summary = circuits.summary()
    fig = go.Figure()
    for method, curve in circuits.curves.groupby("method", sort=False):
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
    order = "absolute score" if absolute else "signed support for the correct answer"
    fig.update_xaxes(
        type="log", title_text=f"circuit size (share of {circuits.n_components} components)"
    )
    fig.update_yaxes(title_text="faithfulness f")
    fig.update_layout(
        title=f"circuits: top-k by {order}, {circuits.ablation} ablation, "
        f"{circuits.n_prompts} prompts",
        height=420,
        legend={"font": {"size": 11}},
    )
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


def figure_html(fig: go.Figure, *, include_plotlyjs: bool = False) -> str:
    """A figure as an HTML fragment; with `include_plotlyjs`, plotly.js is inlined (offline)."""
    return str(
        fig.to_html(
            full_html=False,
            include_plotlyjs=include_plotlyjs,
            config={"displaylogo": False, "responsive": True},
        )
    )


def _site(result: AttributionResult, site: str | None) -> str:
    if site is None:
        return result.sites[0]
    if site not in result.sites:
        raise UnknownSiteError(
            f"{site!r} is not in this ranking; sites here: {list(result.sites)}; "
            f"closest: {closest(site, result.sites)}"
        )
    return site


def _pos_label(pos: object, token: str) -> str:
    if pd.isna(pos):
        return "all"
    shown = token.strip() or repr(token)
    return f"{int(pos)} {shown}"  # type: ignore[call-overload]
