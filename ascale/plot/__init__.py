"""Plotly figures from result objects; the one package that imports plotly.

Every function takes results and returns a `plotly.graph_objects.Figure`; nothing is shown.
`figure` draws any result's usual figure (a ranking's scaling map, a comparison's circuit
curves, ...), so results stay plain data: none of them imports this package.

Example:
    >>> fig = figure(ascale.rank_components(scalars, model=model, data=train), site="mlp_out")
    >>> fig.write_html("mlp_out.html")
"""

import functools
from typing import Any

import plotly.graph_objects as go

from ascale.analysis.agreement import AgreementResult
from ascale.analysis.circuits import CircuitResult
from ascale.analysis.compare import CompareResult
from ascale.analysis.cumulative import CumulativeEffectResult
from ascale.analysis.edge_results import EdgeAttributionResult, EdgeCircuitResult
from ascale.analysis.results import AttributionResult
from ascale.errors import AscaleError
from ascale.plot._curves import (
    plot_agreement,
    plot_circuit_curves,
    plot_cumulative_effect,
    plot_edge_curves,
    plot_tradeoffs,
)
from ascale.plot._graph import plot_circuit_graph
from ascale.plot._maps import plot_heatmap, plot_rank_scatter, plot_top_components

__all__ = [
    "figure",
    "plot_agreement",
    "plot_circuit_curves",
    "plot_circuit_graph",
    "plot_cumulative_effect",
    "plot_edge_curves",
    "plot_heatmap",
    "plot_rank_scatter",
    "plot_top_components",
    "plot_tradeoffs",
]


@functools.singledispatch
def figure(result: Any, **options: Any) -> go.Figure:
    """The usual figure of a result: `AttributionResult` -> `plot_heatmap` (option ``site``),
    `CircuitResult` and `CompareResult` -> `plot_circuit_curves` (option ``absolute``),
    `AgreementResult` -> `plot_agreement`, `CumulativeEffectResult` -> `plot_cumulative_effect`,
    `EdgeAttributionResult` -> `plot_circuit_graph` (option ``k``), `EdgeCircuitResult` ->
    `plot_edge_curves` (option ``absolute``).

    Example:
        >>> figure(ranking, site="mlp_out").data[0].type
        'heatmap'
    """
    raise AscaleError(
        f"no figure for a {type(result).__name__}; figure() draws an AttributionResult, "
        "CircuitResult, CompareResult, AgreementResult, CumulativeEffectResult, "
        "EdgeAttributionResult or EdgeCircuitResult"
    )


@figure.register
def _(result: AttributionResult, *, site: str | None = None) -> go.Figure:
    return plot_heatmap(result, site)


@figure.register(CircuitResult)
@figure.register(CompareResult)
def _(result: CircuitResult | CompareResult, *, absolute: bool = False) -> go.Figure:
    return plot_circuit_curves(result, absolute=absolute)


@figure.register
def _(result: AgreementResult) -> go.Figure:
    return plot_agreement(result)


@figure.register
def _(result: CumulativeEffectResult) -> go.Figure:
    return plot_cumulative_effect(result)


@figure.register
def _(result: EdgeAttributionResult, *, k: int = 40) -> go.Figure:
    return plot_circuit_graph(result, k)


@figure.register
def _(result: EdgeCircuitResult, *, absolute: bool = False) -> go.Figure:
    return plot_edge_curves(result, absolute=absolute)
