"""Edge rankings held against each other on one split: `compare_edges`.

The edge-level counterpart of `ascale.compare`: each method ranks the edges of MIB's graph on a
training split, and every ranking is scored as circuits on the held-out split with MIB's
protocol (`ascale.score_edges`: top ``int(p * N)`` edges, pruned, CPR and CMD), beside random
orders.

| name | ranking |
|---|---|
| ``eap`` | edge attribution patching (one gradient) |
| ``eap_ig`` | EAP-IG-inputs (gradients over interpolated embeddings) |
| ``edge_circuit`` | edge circuit scalars (`ascale.fit_edge_circuit`), started in EAP-IG's order |
| ``random`` | seeded random orders (mean of `n_random`) |

Example:
    >>> result = compare_edges(model, data, corrupted, methods=("eap", "random"), n_random=1,
    ...                        progress=False)
    >>> list(result.summary().index)
    ['eap', 'random']
"""

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pandas as pd

from ascale._outputs import write_json
from ascale._types import HookedModel
from ascale.analysis.edge_results import EdgeAttributionResult, EdgeCircuitResult
from ascale.analysis.edges import eap, eap_ig, score_edges
from ascale.data import ContrastSet
from ascale.errors import AscaleError, closest
from ascale.training.edge_circuit import fit_edge_circuit
from ascale.training.fit import FitResult

__all__ = ["EDGE_METHODS", "EdgeCompareResult", "compare_edges"]

#: `compare_edges`' methods (one home: the command line's ``--level edges`` choices read it)
EDGE_METHODS: Final = ("eap", "eap_ig", "edge_circuit", "random")


@dataclass(frozen=True, eq=False)
class EdgeCompareResult:
    """Edge rankings (made on the training split) and their circuits (on the test split).

    Attributes:
        rankings: method -> `EdgeAttributionResult`.
        circuits: MIB's curves, CPR and CMD of every ranking.
        fits: method -> `FitResult` of the fitted methods (``edge_circuit``).
        info: sizes, settings and timings (``timings_s`` per method, ``wall_time_s``).
    """

    rankings: dict[str, EdgeAttributionResult] = field(repr=False)
    circuits: EdgeCircuitResult
    fits: dict[str, FitResult] = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict, repr=False)

    def summary(self) -> pd.DataFrame:
        """One row per method: ``cpr`` (higher is better) and ``cmd`` (lower is better)."""
        return self.circuits.summary()

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers for JSON: the summary, the curves, the top edges of every ranking."""
        return {
            "summary": self.summary().reset_index().to_dict("records"),
            "curves": self.circuits.curves.to_dict("records"),
            "m_clean": self.circuits.m_clean,
            "m_ablated": self.circuits.m_ablated,
            "n_edges": self.circuits.n_edges,
            "top": {
                m: r.to_frame().head(10)[["edge", "score"]].to_dict("records")
                for m, r in self.rankings.items()
            },
            "info": self.info,
        }

    def write_mib(self, folder: str | os.PathLike[str], *, binary: bool = False) -> list[Path]:
        """One MIB graph file per ranking, ``folder/<method>.json`` (the scores); with `binary`
        also its circuits at MIB's fractions, ``folder/<method>/abs-False/<p>.json`` (signed
        order) and ``abs-True/<p>.json`` (absolute order)
        (`EdgeAttributionResult.write_mib_circuits`). The paths written.

        Example:
            >>> result = compare_edges(model, data, corrupted, methods=("eap",), progress=False)
            >>> [str(p) for p in result.write_mib("mib", binary=True)][:2]
            ['mib/eap.json', 'mib/eap/abs-False/0.001.json']
        """
        written = []
        for method, ranking in self.rankings.items():
            path = Path(folder) / f"{method}.json"
            write_json(path, ranking.to_mib_json())
            written.append(path)
            if binary:
                written += ranking.write_mib_circuits(Path(folder) / method)
        return written


def compare_edges(
    model: HookedModel,
    data: ContrastSet,
    corrupted: ContrastSet | None,
    *,
    ablation: str = "counterfactual",
    methods: Sequence[str] = EDGE_METHODS,
    test_size: float = 0.5,
    seed: int = 0,
    ig_steps: int = 5,
    fit_options: dict[str, Any] | None = None,
    n_random: int = 5,
    progress: bool = True,
) -> EdgeCompareResult:
    """Rank the edges by each method on a training split and score every ranking as circuits
    on the test split.

    Args:
        model: the model.
        data: prompts of one token length.
        corrupted: their counterfactual prompts, row by row (``None`` with a mean or zero
            `ablation`).
        ablation: what an edge outside a circuit carries from its source (`score_edges`):
            ``"counterfactual"`` (default), ``"mean"`` or ``"zero"``; the rankings and the fit
            ablate the same way.
        methods: any of `EDGE_METHODS`.
        test_size: share of `data` held out for the circuits.
        seed: the split, the fit and the random orders.
        ig_steps: EAP-IG's interpolation steps (also the edge circuit scalars' start).
        fit_options: keyword arguments of `ascale.fit_edge_circuit` (``steps``,
            ``batch_size``).
        n_random: random orders in the ``random`` row.
        progress: show progress bars.

    Raises:
        AscaleError: an unknown method, or no method at all.
    """
    _check_methods(methods, n_random)
    started = time.perf_counter()
    train, test = data.split(test_size=test_size, seed=seed)
    ctrain, ctest = (None, None) if corrupted is None else corrupted.split(test_size, seed)
    timings: dict[str, float] = {}
    rankings, fits = _rank(
        model, train, ctrain, methods, fit_options or {}, timings,
        ablation=ablation, ig_steps=ig_steps, seed=seed, progress=progress,
    )  # fmt: skip
    n = n_random if "random" in methods else 0
    t = time.perf_counter()
    circuits = score_edges(
        model, test, ctest, rankings, ablation=ablation, n_random=n, seed=seed, progress=progress
    )
    timings["circuits"] = round(time.perf_counter() - t, 2)
    info = {
        "n_train": len(train),
        "n_test": len(test),
        "n_pos": data.n_pos,
        "n_edges": circuits.n_edges,
        "ablation": ablation,
        "ig_steps": ig_steps,
        "n_random": n,
        "timings_s": timings,
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    return EdgeCompareResult(rankings, circuits, fits, info)


def _rank(
    model: HookedModel,
    train: ContrastSet,
    ctrain: ContrastSet | None,
    methods: Sequence[str],
    fit_options: dict[str, Any],
    timings: dict[str, float],
    *,
    ablation: str,
    ig_steps: int,
    seed: int,
    progress: bool,
) -> tuple[dict[str, EdgeAttributionResult], dict[str, FitResult]]:
    """Each ranking method on the training split, timed into `timings`."""
    rankings: dict[str, EdgeAttributionResult] = {}
    fits: dict[str, FitResult] = {}

    def timed(name: str, work: Any) -> Any:
        t = time.perf_counter()
        out = work()
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t, 2)
        return out

    if "eap" in methods:
        rankings["eap"] = timed("eap", lambda: eap(model, train, ctrain, ablation=ablation))
    if "eap_ig" in methods or "edge_circuit" in methods:
        ig = timed(
            "eap_ig", lambda: eap_ig(model, train, ctrain, ablation=ablation, steps=ig_steps)
        )
        if "eap_ig" in methods:
            rankings["eap_ig"] = ig
    if "edge_circuit" in methods:
        options = {"seed": seed, "progress": progress, "ablation": ablation, **fit_options}
        scores, fits["edge_circuit"] = timed(
            "edge_circuit", lambda: fit_edge_circuit(model, train, ctrain, ig.scores, **options)
        )
        info = {"start": "eap_ig", "steps": fits["edge_circuit"].steps_run}
        rankings["edge_circuit"] = EdgeAttributionResult(
            "edge_circuit", ig.graph, scores, len(train), info
        )
    return rankings, fits


def _check_methods(methods: Sequence[str], n_random: int) -> None:
    unknown = [m for m in methods if m not in EDGE_METHODS]
    if unknown or not methods:
        hint = f" (closest: {closest(str(unknown[0]), EDGE_METHODS)})" if unknown else ""
        raise AscaleError(
            f"unknown edge method(s) {unknown}; choose from {list(EDGE_METHODS)}{hint}"
        )
    if "random" in methods and n_random < 1:
        raise AscaleError(f"'random' needs n_random >= 1, got {n_random!r}")
