"""The results of edge-level circuits: one score per edge (`EdgeAttributionResult`, what every
edge ranking returns) and MIB's faithfulness curves on edges (`EdgeCircuitResult`). Plain data;
`ascale.plot` draws them (`plot_circuit_graph`, `plot_edge_curves`).

A ranking's circuit at a fraction ``p`` of the edges is MIB's: its top ``int(p * N)`` edges
(`edge_order`), pruned to input-to-logits paths (`top_circuit`); `ascale.score_edges` scores
these very circuits, and `EdgeAttributionResult.write_mib_circuits` writes them as MIB's binary
circuit files.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ascale._outputs import write_json
from ascale.analysis.circuits import curve_areas
from ascale.errors import AscaleError
from ascale.graph import EdgeGraph
from ascale.grid import FRACTIONS

__all__ = [
    "CARRIED",
    "MIB_CIRCUIT_FRACTIONS",
    "EdgeAttributionResult",
    "EdgeCircuitResult",
    "edge_order",
    "top_circuit",
]

#: what an edge outside a circuit carries from its source, per ablation
#: (`ascale.interventions.ABLATIONS`; the report and the command line say it)
CARRIED: Final = {
    "counterfactual": "its source's output on the counterfactual prompt",
    "mean": "its source's mean output over the prompts at each position",
    "zero": "zero",
}
#: the fractions of MIB's binary circuit files: `FRACTIONS` less the whole graph, which MIB's
#: evaluation adds itself (it reads nine circuits, sorts them by size and appends f = 1)
MIB_CIRCUIT_FRACTIONS: Final = tuple(p for p in FRACTIONS if p < 1)


def edge_order(scores: Float[Tensor, " edge"], *, absolute: bool = False) -> Int[Tensor, " edge"]:
    """Edge indices, best first, by signed score or by magnitude (`absolute`); stable (ties keep
    MIB's edge order), NaN last.

    Example:
        >>> edge_order(torch.tensor([0.5, -2.0, float("nan"), 1.0])).tolist()
        [3, 0, 1, 2]
        >>> edge_order(torch.tensor([0.5, -2.0, float("nan"), 1.0]), absolute=True).tolist()
        [1, 3, 0, 2]
    """
    key = scores.abs() if absolute else scores
    return torch.argsort(-torch.where(scores.isnan(), -torch.inf, key), stable=True)


def top_circuit(graph: EdgeGraph, order: Int[Tensor, " ranked"], k: int) -> Bool[Tensor, " edge"]:
    """The first `k` edges of `order` (edge indices, best first: `edge_order`, or any prefix
    of one), pruned (`EdgeGraph.prune`): MIB's circuit of size `k`.

    Example:
        >>> graph = EdgeGraph(n_layers=1, n_heads=1, d_model=4)
        >>> order = torch.tensor([graph.edge_ids[e] for e in ("input->m0", "m0->logits")])
        >>> [graph.edges[i] for i in top_circuit(graph, order, 1).nonzero().flatten()]
        []
        >>> [graph.edges[i] for i in top_circuit(graph, order, 2).nonzero().flatten()]
        ['input->m0', 'm0->logits']
    """
    keep = torch.zeros(graph.n_edges, dtype=torch.bool)
    keep[order[:k]] = True
    return graph.prune(keep)


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

    def circuit(self, fraction: float, *, absolute: bool = False) -> Bool[Tensor, " edge"]:
        """The circuit `ascale.score_edges` scores at `fraction`: the top ``int(fraction * N)``
        edges by signed score (by magnitude if `absolute`), pruned.

        Example:
            >>> scores = ascale.eap(model, data, corrupted)
            >>> int(scores.circuit(1.0).sum()) == scores.graph.n_edges
            True
        """
        if not 0 <= fraction <= 1:
            raise AscaleError(f"fraction must lie in [0, 1], got {fraction!r}")
        order = edge_order(self.scores.detach().cpu().float(), absolute=absolute)
        return top_circuit(self.graph, order, int(fraction * self.graph.n_edges))

    def write_mib_circuits(
        self, folder: str | os.PathLike[str], fractions: Sequence[float] = MIB_CIRCUIT_FRACTIONS
    ) -> list[Path]:
        """MIB's binary circuits: one graph file per fraction and order, its edges in the
        circuit marked ``in_graph`` (`circuit`; nodes as `EdgeGraph.to_mib_json` marks them;
        the scores kept, which EAP-IG's ``Graph.from_json`` needs), at
        ``folder/abs-False/<p>.json`` (signed order, MIB's CPR) and ``folder/abs-True/<p>.json``
        (absolute order, CMD): the folder names MIB's leaderboard reads the order from. The
        paths written.

        Examples:
            >>> paths = ascale.eap(model, data, corrupted).write_mib_circuits("mib/eap")
            >>> [str(p) for p in paths[::9]]
            ['mib/eap/abs-False/0.001.json', 'mib/eap/abs-True/0.001.json']
            >>> [p.name for p in paths[:9]][-3:]
            ['0.1.json', '0.2.json', '0.5.json']
        """
        written = []
        for absolute in (False, True):
            for p in fractions:
                path = Path(folder) / f"abs-{absolute}" / f"{p:g}.json"
                write_json(path, self.to_mib_json(self.circuit(p, absolute=absolute)))
                written.append(path)
        return written

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
