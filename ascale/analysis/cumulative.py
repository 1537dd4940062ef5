"""The cumulative-effect view: how much of the flip do the top-k components keep?

Nothing is estimated: for each ``k`` a copy of the intervention keeps its ``k`` largest
components (by `rank_components`, or any other ranking on the same grid), every other one is set
to the identity, and the copy is measured with `ascale.evaluate`. `refit_top_k` instead fits
fresh scalars on only a ranking's top ``k`` components.
"""

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ascale import _checks
from ascale._types import HookedModel
from ascale.analysis.attribution import rank_components
from ascale.analysis.results import AttributionResult
from ascale.data import ContrastSet, check_data
from ascale.grid import Grid
from ascale.interventions import ActivationScalars, Intervention
from ascale.training.fit import fit
from ascale.training.metrics import Metrics, evaluate

__all__ = ["CumulativeEffectResult", "cumulative_effect", "refit_top_k"]


@dataclass(frozen=True, eq=False)
class CumulativeEffectResult:
    """How much of the flip survives when only the top-k components are kept.

    Attributes:
        method: the intervention's method.
        ks: the numbers of components kept.
        metrics: `Metrics` re-evaluated with only the top ``k`` parameters (or vectors) applied,
            one per entry of `ks`.
        full: `Metrics` with every parameter applied.
    """

    method: str
    ks: tuple[int, ...]
    metrics: tuple[Metrics, ...] = field(repr=False)
    full: Metrics = field(repr=False)

    def to_frame(self) -> pd.DataFrame:
        """One row per ``k``: flip rates and logit differences, and the share of the full
        intervention's flip rate (``flip_kept_*``) and logit shift (``shift_kept_*``) kept."""
        frame = pd.DataFrame([m.to_dict() for m in self.metrics], index=pd.Index(self.ks, name="k"))
        full = self.full
        for direction in ("forward", "backward"):
            rate = getattr(full, f"flip_rate_{direction}")
            shift = getattr(full, f"logit_diff_{direction}") - full.logit_diff_clean
            frame[f"flip_kept_{direction}"] = (
                frame[f"flip_rate_{direction}"] / rate if rate else np.nan
            )
            frame[f"shift_kept_{direction}"] = (
                (frame[f"logit_diff_{direction}"] - full.logit_diff_clean) / shift
                if shift
                else np.nan
            )
        return frame

    def kept(self, k: int) -> float:
        """Mean share of the full flip rate (both directions) kept with the top `k`."""
        row = self.to_frame().loc[k]
        return float((row["flip_kept_forward"] + row["flip_kept_backward"]) / 2)


def cumulative_effect(
    model: HookedModel,
    intervention: Intervention,
    data: ContrastSet,
    *,
    ks: Sequence[int] = (1, 2, 5, 10, 20, 50),
    ranking: AttributionResult | None = None,
) -> CumulativeEffectResult:
    """Re-evaluate `intervention` with only its top-k components applied, for each k.

    Nothing is estimated: for each ``k`` a copy of the intervention keeps the ``k`` parameters
    (scalars) or vectors of largest magnitude, sets every other one to the identity, and is
    measured with `ascale.evaluate` on `data`.

    Args:
        model: the model the intervention was fitted on.
        intervention: a fitted `ActivationScalars` or `SteeringVectors`.
        data: prompts to evaluate on (a test split, typically).
        ks: how many components to keep; values above the number of components are clipped.
        ranking: the order to keep components in (default: `rank_components(intervention)`;
            pass e.g. a patching result on the same grid to test another method's ranking).

    Example:
        >>> cum = cumulative_effect(model, scalars, test, ks=(1, 5, 10))
        >>> list(cum.to_frame().index)
        [1, 5, 10]
    """
    check_data(data)
    _checks.instance("intervention", intervention, Intervention, "an ascale intervention")
    chosen = _checks.sizes("ks", ks)
    if ranking is None:
        ranking = rank_components(intervention, model=model, data=data)
    full = evaluate(model, intervention, data)
    ks = tuple(sorted({min(k, len(ranking)) for k in chosen}))  # above the grid: all of it
    masks = _masks(intervention, ranking)
    results = []
    for k in ks:
        kept = copy.deepcopy(intervention)
        with torch.no_grad():
            for name, param in kept.params.items():
                keep = masks[name] <= k
                param.mul_(keep.reshape(*keep.shape, *[1] * (param.ndim - keep.ndim)))
        results.append(evaluate(model, kept, data))
    return CumulativeEffectResult(intervention.method, ks, tuple(results), full)


def _masks(intervention: Intervention, ranking: AttributionResult) -> dict[str, Tensor]:
    """Per site, the rank of each component, shaped like its parameters without a vector axis.

    Components missing from `ranking` get an infinite rank (never kept).
    """
    frame = ranking.components
    rank_of = dict(zip(frame["component"], frame["rank"].astype(float), strict=True))
    grid = Grid.of(intervention)
    ranks = torch.tensor([rank_of.get(name, np.inf) for name in grid.names])
    device = next(iter(intervention.parameters())).device
    return {name: r.to(device) for name, r in grid.to_params(ranks).items()}


def refit_top_k(
    model: HookedModel,
    like: Intervention,
    ranking: AttributionResult,
    data: ContrastSet,
    k: int,
    **fit_options: Any,
) -> ActivationScalars:
    """Fresh activation scalars on `like`'s grid, fitted on `ranking`'s top `k` components
    only (every other scalar stays at the identity).

    Example:
        >>> top10 = refit_top_k(model, scalars, ranking, train, 10, steps=2)
        >>> top10.n_active(threshold=0.0) <= 10
        True
    """
    check_data(data)
    grid = Grid.of(_checks.instance("like", like, Intervention, "the fitted intervention"))
    k = _checks.whole("k", k, high=len(grid), why=f"the {len(grid)} components of like's grid")
    chosen = set(ranking.top(k)["component"])
    keep = torch.tensor([name in chosen for name in grid.names], dtype=torch.float32)
    scalars = ActivationScalars(
        model,
        sites=[s.hook_name(layer) for s in grid.sites for layer in s.layers],
        positions=list(grid.positions) if grid.positions is not None else "shared",
        n_pos=grid.n_pos,
    )
    options = {"sparsity": "l1", **fit_options}
    fit(model, scalars, data, keep=grid.to_params(keep), progress=False, **options)
    return scalars
