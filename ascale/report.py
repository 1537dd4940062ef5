"""A self-contained HTML report: metrics, scaling maps, top components, agreement.

The report is one file that works offline: plotly.js is inlined once, ahead of the first figure,
and nothing is fetched from the network. Sections appear for whatever is passed:

1. metrics of each intervention (`ascale.training.metrics.Metrics`, or their ``to_dict()``);
2. the scaling maps: one heatmap per ranking and site (layer × position, or layer × head);
3. the top-k components of each ranking, as a bar chart and a table;
4. the cumulative-effect view (flips kept with only the top-k components);
5. agreement between rankings: Spearman's ρ and top-k overlap (overall and per component
   type), and rank scatter plots;
6. circuits: faithfulness curves, CPR and CMD of every ranking (`ascale.analysis.circuits`), and the
   refit curve;
7. trade-offs: effectiveness against minimality and faithfulness over a `sweep`;
8. edge circuits: MIB's faithfulness curves on edges (signed and absolute order), the CPR/CMD
   table, and each edge ranking's top edges drawn as a graph (`ascale.analysis.edges`);
9. steered text: each prompt's continuation at every ``beta``, side by side
   (`ascale.generate`'s `GenerationResult`).

Example:
    >>> patched = ascale.activation_patching(model, data, corrupted, like=scalars)
    >>> write_report("out", [ranking, patched], agreement=ascale.agreement([ranking, patched]))
    PosixPath('out/report.html')
"""

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ascale._outputs import write_atomic
from ascale.analysis.agreement import AgreementResult
from ascale.analysis.circuits import CircuitResult
from ascale.analysis.cumulative import CumulativeEffectResult
from ascale.analysis.edge_results import CARRIED, EdgeAttributionResult, EdgeCircuitResult
from ascale.analysis.results import AttributionResult
from ascale.generation import GenerationResult
from ascale.training.metrics import Metrics, metrics_table

__all__ = ["write_report"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table.data { border-collapse: collapse; font-size: .85rem; margin: .5rem 0 1.5rem; }
table.data th, table.data td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: right; }
table.data th { background: #f4f4f4; }
table.text td, table.text th { text-align: left; vertical-align: top; max-width: 24rem; }
p.note { color: #555; font-size: .9rem; }
"""


@dataclass
class _Page:
    """Accumulates the body; the first figure carries plotly.js inline."""

    parts: list[str] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)
    has_js: bool = False

    def text(self, tag: str, content: str, cls: str = "") -> None:
        attr = f' class="{cls}"' if cls else ""
        self.parts.append(f"<{tag}{attr}>{html.escape(content)}</{tag}>")

    def section(self, title: str, anchor: str) -> None:
        """A level-2 heading that the table of contents links to (``report.html#anchor``)."""
        self.sections.append((anchor, title))
        self.parts.append(f'<h2 id="{anchor}">{html.escape(title)}</h2>')

    def table(self, frame: pd.DataFrame, index: bool = True, text: bool = False) -> None:
        """`frame` as a table; `text`: cells of prose, left-aligned."""
        classes = "data text" if text else "data"
        self.parts.append(
            frame.to_html(classes=classes, border=0, index=index, float_format="{:.4g}".format)
        )

    def figure(self, fig: Any) -> None:
        self.parts.append(figure_html(fig, include_plotlyjs=not self.has_js))
        self.has_js = True

    def document(self, title: str, n_head: int) -> str:
        """The whole page: the first `n_head` parts (the title, the description), the table
        of contents, then the sections."""
        contents = " · ".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in self.sections)
        header, body = self.parts[:n_head], self.parts[n_head:]
        return (
            "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join([*header, f'<p class="note">{contents}</p>', *body])
            + "\n</body></html>\n"
        )


def figure_html(fig: Any, *, include_plotlyjs: bool = False) -> str:
    """A figure as an HTML fragment; with `include_plotlyjs`, plotly.js is inlined (offline)."""
    return str(
        fig.to_html(
            full_html=False,
            include_plotlyjs=include_plotlyjs,
            config={"displaylogo": False, "responsive": True},
        )
    )


def write_report(
    out: str | Path,
    rankings: Sequence[AttributionResult] | Mapping[str, AttributionResult] = (),
    *,
    agreement: AgreementResult | None = None,
    metrics: Mapping[str, Metrics | Mapping[str, Any]] | None = None,
    cumulative: Sequence[CumulativeEffectResult] = (),
    circuits: CircuitResult | None = None,
    agreement_by_type: Mapping[str, AgreementResult] | None = None,
    refit: pd.DataFrame | None = None,
    sweep: pd.DataFrame | None = None,
    edge_circuits: EdgeCircuitResult | None = None,
    edge_rankings: Sequence[EdgeAttributionResult] | Mapping[str, EdgeAttributionResult] = (),
    generations: GenerationResult | None = None,
    title: str = "ascale report",
    description: str = "",
    top_k: int = 20,
    edge_k: int = 40,
) -> Path:
    """Write the report; `out` is a folder (gets ``report.html``) or an ``.html`` path.

    Args:
        out: where to write.
        rankings: rankings to draw, named by their method (or a mapping of names).
        agreement: `ascale.analysis.agreement` of the rankings, for the agreement section.
        metrics: per intervention name, its `Metrics` (test split, typically).
        cumulative: `cumulative_effect` results.
        circuits: `score_circuits` (or ``compare(...).circuits``): curves and CPR/CMD table.
        agreement_by_type: agreement within each component type (``compare``).
        refit: flip rates of scalars refitted on their top k (``compare(...).refit``).
        sweep: a `sweep` table, drawn as the trade-off figures.
        edge_circuits: `score_edges` (or ``compare_edges(...).circuits``): the edge curves and
            their CPR/CMD table.
        edge_rankings: edge rankings (`EdgeAttributionResult`) whose top `edge_k` edges are
            drawn as a graph (pruned as MIB scores a circuit), each with its top-`top_k` table.
        generations: `ascale.generate`'s table of several prompts and ``beta`` values: one
            row per prompt, one column per ``beta``.
        title: the page title.
        description: a paragraph under the title (model, task, data).
        top_k: rows in each top-components table and bar chart.
        edge_k: edges drawn of each edge ranking (at most the graph's edges).

    Returns:
        The path of the HTML file.
    """
    path = Path(out)
    if path.suffix.lower() not in (".html", ".htm"):
        path = path / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    from ascale import plot  # plotly is imported only when a report is written

    named = _by_method(rankings)
    edges = _by_method(edge_rankings)
    page = _Page()
    page.text("h1", title)
    if description:
        page.text("p", description, "note")
    if metrics:
        _metrics(page, metrics)
    if generations is not None and len(generations):
        _generations(page, generations)
    if circuits is not None:
        _circuits(page, circuits, refit)
    if edge_circuits is not None or edges:
        _edges(page, edge_circuits, edges, edge_k, top_k)
    if named:
        _maps(page, named)
        _top(page, named, top_k)
    if cumulative:
        _cumulative(page, cumulative)
    if agreement is not None:
        _agreement(page, agreement, agreement_by_type or {})
    if sweep is not None and not sweep.empty:
        page.section("Trade-offs", "tradeoffs")
        page.figure(plot.plot_tradeoffs(sweep))
    return write_atomic(path, page.document(title, 2 if description else 1))


def _by_method(rankings: Sequence[Any] | Mapping[str, Any]) -> dict[str, Any]:
    """Rankings by name: a mapping as given, a sequence by each one's ``method``."""
    return dict(rankings) if isinstance(rankings, Mapping) else {r.method: r for r in rankings}


def _cumulative(page: _Page, cumulative: Sequence[CumulativeEffectResult]) -> None:
    from ascale import plot

    page.section("Cumulative effect", "cumulative")
    page.text(
        "p",
        "Each point re-evaluates the intervention with only its k largest components "
        "applied (all others set to the identity).",
        "note",
    )
    for cum in cumulative:
        page.figure(plot.plot_cumulative_effect(cum))
        page.table(cum.to_frame()[_CUMULATIVE_COLUMNS].round(4))


_CUMULATIVE_COLUMNS = [
    "flip_rate_forward",
    "flip_rate_backward",
    "flip_kept_forward",
    "flip_kept_backward",
    "logit_diff_forward",
    "logit_diff_backward",
]


def _generations(page: _Page, result: GenerationResult) -> None:
    """One row per prompt, one column per ``beta``: the continuation, marked ``[correct]`` or
    ``[wrong]`` where its first token is that answer's."""
    page.section("Steered text", "generations")
    frame = result.to_frame()
    marks = {"correct": "[correct] ", "wrong": "[wrong] "}
    frame["shown"] = [
        marks.get(str(f), "") + t.strip().replace("\n", " ↵ ")  # line breaks shown, not escaped
        for f, t in zip(frame["first"], frame["text"], strict=True)
    ]
    table = frame.pivot_table(index="prompt", columns="beta", values="shown", aggfunc="first",
                              sort=False)  # fmt: skip
    table.columns = [f"beta = {b:+g}" if b else "beta = 0" for b in table.columns]
    table.index.name = None
    n = result.info.get("max_new_tokens")
    page.text(
        "p",
        f"Each prompt's first {n} new tokens (greedy unless sampled), under the intervention at "
        "each beta; beta = 0 is the clean model. [correct] / [wrong]: the first new token is "
        "that answer's.",
        "note",
    )
    page.table(table, text=True)


def _metrics(page: _Page, metrics: Mapping[str, Metrics | Mapping[str, Any]]) -> None:
    page.section("Metrics", "metrics")
    rows = metrics_table(metrics)
    frame = pd.DataFrame([cells for _, cells in rows], [label for label, _ in rows], list(metrics))
    page.table(frame)


def _maps(page: _Page, named: dict[str, AttributionResult]) -> None:
    from ascale import plot

    page.section("Scaling maps", "maps")
    page.text(
        "p",
        "Colour is centred on the identity (0: the component is left alone); hover a "
        "cell for its exact value. Positions are labelled with the first prompt's tokens.",
        "note",
    )
    for name, result in named.items():
        page.text("h3", f"{name} ({result.value_name}){_where(result)}")
        for site in result.sites:
            page.figure(plot.plot_heatmap(result, site))


def _where(result: AttributionResult) -> str:
    """Where a ranking steered, when it is a few positions (a fit's default, the last ones):
    each with the first prompt's token; ``""`` for a grid of every position."""
    pos = sorted({int(p) for p in result.components["pos"].dropna()})
    if not pos:
        return ", shared over positions"
    if len(pos) > 3:
        return ""
    shown = ", ".join(f"{p} {result.tokens.get(p, '')!r}" for p in pos)
    return f", at position{'s' if len(pos) > 1 else ''} {shown}"


def _top(page: _Page, named: dict[str, AttributionResult], k: int) -> None:
    from ascale import plot

    page.section(f"Top {k} components", "top")
    for name, result in named.items():
        page.text("h3", name)
        page.figure(plot.plot_top_components(result, k))
        columns = ["rank", "component", "token", "value"]
        if result.components["effect"].notna().any():
            columns.append("effect")
        page.table(result.top(k)[columns], index=False)


def _circuits(page: _Page, result: CircuitResult, refit: pd.DataFrame | None) -> None:
    from ascale import plot

    page.section("Circuits", "circuits")
    page.text(
        "p",
        f"Faithfulness f of each ranking's top-k components on {result.n_prompts} held-out "
        f"prompts, every other component of the grid ({result.n_components}) given its "
        f"{result.ablation} activation: f = 0 with all ablated (m = {result.m_ablated:+.2f}), "
        f"1 for the clean model (m = {result.m_clean:+.2f}). CPR: area under f ranking by "
        "signed support for the correct answer (higher is better); CMD: area under |1 - f| "
        "ranking by absolute score (lower is better).",
        "note",
    )
    figures = [plot.plot_circuit_curves(result, absolute=a) for a in (False, True)]
    frame = result.curves.pivot_table(index="k", columns="method", values="f_abs", sort=False)
    _curves(page, result.summary(), figures, frame, "f at each circuit size (absolute order):")
    if refit is not None and not refit.empty:
        page.text("p", "Scalars refitted on only their own top k components (test split):", "note")
        page.table(refit.round(3))


def _edges(
    page: _Page,
    result: EdgeCircuitResult | None,
    rankings: dict[str, EdgeAttributionResult],
    k: int,
    top_k: int,
) -> None:
    from ascale import plot

    page.section("Edge circuits", "edges")
    if result is not None:
        page.text(
            "p",
            f"Faithfulness f of each edge ranking's top int(p * N) edges of MIB's graph "
            f"(N = {result.n_edges:,}), pruned to edges on input-to-logits paths, on "
            f"{result.n_prompts} held-out prompts; every other edge carries "
            f"{CARRIED[result.ablation]} ({result.ablation} ablation): f = 0 with all "
            f"ablated (m = {result.m_ablated:+.2f}), 1 "
            f"for the clean model (m = {result.m_clean:+.2f}). CPR: area under f ranking by "
            "signed score (higher is better); CMD: area under |1 - f| ranking by absolute "
            "score (lower is better). Edge and node CPR sit on different axes: compare "
            "methods within one level.",
            "note",
        )
        figures = [plot.plot_edge_curves(result, absolute=a) for a in (False, True)]
        frame = result.curves.pivot_table(
            index="fraction", columns="method", values="f_abs", sort=False
        )
        label = "f at each share of the edges (absolute order):"
        _curves(page, result.summary(), figures, frame, label)
    for name, ranking in rankings.items():
        page.text("h3", f"{name}: the circuit as a graph")
        page.figure(plot.plot_circuit_graph(ranking, k=min(k, ranking.graph.n_edges)))
        page.table(ranking.to_frame().head(top_k)[["edge", "score"]], index=False)


def _curves(
    page: _Page, summary: pd.DataFrame, figures: list[Any], frame: pd.DataFrame, label: str
) -> None:
    """A circuits block: the CPR/CMD table, the signed and absolute curves, ``f`` per size."""
    page.table(summary.round(4))
    for figure in figures:
        page.figure(figure)
    page.text("p", label, "note")
    page.table(frame.round(3))


def _agreement(
    page: _Page, result: AgreementResult, by_type: Mapping[str, AgreementResult]
) -> None:
    from ascale import plot

    page.section("Agreement between methods", "agreement")
    page.figure(plot.plot_agreement(result))
    page.table(result.to_frame().round(4), index=False)
    if len(by_type) > 1:
        frame = pd.concat(
            {t: a.to_frame().set_index(["a", "b"]) for t, a in by_type.items()}, axis=1
        )
        page.text("p", "Within each component type (Spearman ρ and top-k overlap):", "note")
        page.table(frame.round(3))
    first = result.methods[0]
    for other in result.methods[1:]:
        page.figure(plot.plot_rank_scatter(result.rankings[first], result.rankings[other]))
