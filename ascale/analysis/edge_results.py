"""The results of edge-level circuits: one score per edge (`EdgeAttributionResult`, what every
edge ranking returns) and MIB's faithfulness curves on edges (`EdgeCircuitResult`). Plain data;
`ascale.plot` draws them (`plot_circuit_graph`, `plot_edge_curves`)."""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float
from torch import Tensor

from ascale.analysis.circuits import curve_areas
from ascale.errors import AscaleError
from ascale.graph import EdgeGraph

__all__ = ["EdgeAttributionResult", "EdgeCircuitResult"]


@dataclass(frozen=True, eq=False)
class EdgeAttributionResult:
    """One score per edge of `graph` (in `EdgeGraph.edges` order); positive supports the
    correct answer.

    Attributes:
        method: what produced the scores (``"eap"``, ``"eap_ig"``, ...).
        graph: the edges.
        scores: ``[edge]``.
        n_prompts: prompts the scores sum over.
        info: how the scores were made (steps, ...).
    """

    method: str
    graph: EdgeGraph
    scores: Float[Tensor, " edge"] = field(repr=False)
    n_prompts: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.scores.shape) != (self.graph.n_edges,):
            raise AscaleError(
                f"{self.method}: expected {self.graph.n_edges} edge scores, got "
                f"{tuple(self.scores.shape)}"
            )

    def to_frame(self) -> pd.DataFrame:
        """One row per edge, largest ``|score|`` first: ``edge, src, dst, score, magnitude``."""
        g, scores = self.graph, self.scores.detach().cpu().numpy()
        frame = pd.DataFrame(
            {
                "edge": g.edges,
                "src": np.asarray(g.src_names)[g.src_index.numpy()],
                "dst": np.asarray(g.dst_names)[g.dst_index.numpy()],
                "score": scores,
                "magnitude": np.abs(scores),
            }
        )
        return frame.sort_values("magnitude", ascending=False, kind="stable").reset_index(drop=True)

    def to_mib_json(self, in_graph: Tensor | None = None) -> dict[str, Any]:
        """MIB's graph file as a dict (`EdgeGraph.to_mib_json`)."""
        return self.graph.to_mib_json(self.scores.detach().cpu().float(), in_graph)

    def __repr__(self) -> str:
        top = ", ".join(f"{r.edge} {r.score:+.3g}" for r in self.to_frame().head(3).itertuples())
        return f"EdgeAttributionResult({self.method!r}, {self.graph.n_edges} edges, top: {top})"


@dataclass(frozen=True, eq=False)
class EdgeCircuitResult:
    """Faithfulness curves on edges and their areas, one per ranking.

    Attributes:
        curves: one row per method and fraction: ``method, fraction, k, n_signed, n_abs,
            f_signed, f_abs`` (``k`` edges taken, ``n_*`` left after pruning, ``f`` of the top
            ``k`` by signed score and by absolute score).
        m_clean: ``m(N)``, the clean mean logit difference (correct minus wrong).
        m_ablated: ``m(∅)``, every edge ablated (the counterfactual run).
        n_edges: the graph's edges ``N``.
        n_prompts: prompts the curves were measured on.
        ablation: what an edge outside a circuit carried (``"counterfactual"``, ...).
    """

    curves: pd.DataFrame = field(repr=False)
    m_clean: float
    m_ablated: float
    n_edges: int
    n_prompts: int
    ablation: str = "counterfactual"

    def summary(self) -> pd.DataFrame:
        """One row per method: ``cpr`` (higher is better), ``cmd`` (lower is better)."""
        return curve_areas(self.curves)

    def __repr__(self) -> str:
        pairs = ", ".join(
            f"{m}: CPR {r.cpr:.3f} CMD {r.cmd:.3f}" for m, r in self.summary().iterrows()
        )
        return f"EdgeCircuitResult(N={self.n_edges}, {self.n_prompts} prompts, {pairs})"
