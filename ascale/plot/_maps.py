"""Scaling maps: heatmaps of one ranking per layer, head and position, its top components, and
two rankings' ranks against each other.

Every function takes an `AttributionResult` and returns a `plotly.graph_objects.Figure`;
nothing is shown. Signed
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

from ascale.analysis.agreement import agreement
from ascale.analysis.results import EFFECTS, AttributionResult
from ascale.errors import UnknownSiteError, closest

__all__ = ["EFFECT_COLOURS", "plot_heatmap", "plot_rank_scatter", "plot_top_components"]

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
