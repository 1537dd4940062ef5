"""Rank components by learned scale: where does an intervention act?

`rank_components` gives each of a fitted intervention's components one number, read from the
intervention's class (`Intervention.readout`: a scalar's ``alpha``, a steering vector's norm, a
dynamic scalar's mean ``alpha``, a circuit score), or a scalar's first-order effect on the
answer, as an `AttributionResult` (`ascale.analysis.results`), the type every attribution method
returns.

For learned scalars each component also gets an *effect class*, read at ``beta = +1``:

| class | ``alpha`` | the activation vector is |
|---|---|---|
| ``identity`` | ``|alpha| < threshold`` | left alone |
| ``amplify`` | ``alpha > 0`` | strengthened |
| ``suppress`` | ``-1 < alpha < 0`` | weakened |
| ``ablate`` | ``alpha ≈ -1`` | removed |
| ``reverse`` | ``alpha < -1`` | flipped in sign |

At ``beta = -1`` the factor is ``1 - alpha``, so amplify and suppress trade places there.
"""

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ascale import _checks, passes
from ascale._types import HookedModel
from ascale.analysis.results import AttributionResult, effect_classes, token_labels
from ascale.data import ContrastSet, check_data
from ascale.errors import AscaleError
from ascale.grid import Grid
from ascale.interventions import Intervention, Readout

__all__ = ["rank_components"]


def rank_components(
    intervention: Intervention,
    *,
    model: HookedModel | None = None,
    data: ContrastSet | None = None,
    sites: str | Iterable[str] | None = None,
    threshold: float = 1e-2,
    ablate_tol: float = 0.1,
    per_position: bool = False,
    by: str = "alpha",
) -> AttributionResult:
    """Rank an intervention's components by what its class reads out (`Intervention.readout`):
    scalars by ``|alpha|``, steering vectors by norm, dynamic scalars by mean ``|alpha|``,
    circuit scalars by ``|score|`` (their signed score is their support for the answer).

    Args:
        intervention: a fitted `ActivationScalars`, `SteeringVectors`, `DynamicScalars` or
            `CircuitScalars`.
        model: with `data`, names each position by its token in the first prompt.
        data: the prompts the intervention acts on (any split; only its tokens are read).
        sites: keep only these sites (default: all of the intervention's).
        threshold: scalars with ``|alpha|`` below this are class ``identity``.
        ablate_tol: scalars within this of ``-1`` are class ``ablate``.
        by: ``"alpha"`` ranks by the intervention's own values; ``"effect"`` (kinds whose
            values scale the activation) by the edit's first-order effect on the answer,
            ``alpha * E[h . dΔ/dh]`` over `data` (Δ = logit of the wrong minus the correct
            answer, at the clean run): a large scalar on a component the answer barely reads
            ranks low. Its support for the correct answer (what circuit scoring orders by) is
            ``-|alpha| * E[h . dΔ/dh]``.
        per_position: dynamic scalars only: one component per position (mean ``alpha`` there
            over the prompts of `data`, which must share one length), as position-tied grids
            have; default one per probe, averaged over every token.

    Returns:
        An `AttributionResult`, one row per parameter (scalars) or vector (vectors).

    Raises:
        AscaleError: the intervention is not fitted, or `by` is not one it can be ranked by.

    Example:
        >>> ranking = rank_components(scalars, model=model, data=train)
        >>> len(ranking.top(10))
        10
    """
    if by not in ("alpha", "effect"):
        raise AscaleError(f"by must be 'alpha' or 'effect', got {by!r}")
    _checks.instance("intervention", intervention, Intervention, "an ascale intervention")
    if not intervention.is_bound:
        raise AscaleError(f"{type(intervention).__name__} has no parameters yet: fit it first")
    for name, param in intervention.params.items():  # a NaN has no rank
        _checks.finite(
            f"{type(intervention).__name__}.params[{name!r}]",
            param.detach(),
            "nothing ranks them (ascale.save refuses them too); refit with a lower learning rate",
        )
    if data is not None:
        check_data(data)
    sites = None if sites is None else _checks.names("sites", sites, what="site")
    readout = intervention.readout(model=model, data=data, per_position=per_position)
    named = model is not None and data is not None and readout.grid.positions is not None
    labels = token_labels(model, data) if named else None  # type: ignore[arg-type]
    frame = _frame(readout, labels)
    kind = {"signed": readout.signed, "support_sign": readout.support_sign}
    info = dict(readout.info)
    if readout.scales:
        frame["effect"] = effect_classes(frame["value"], threshold, ablate_tol)
    label = readout.label
    if by == "effect":
        if not readout.scales:
            raise AscaleError(
                f"by='effect' ranks a scale's first-order effect; a {type(intervention).__name__} "
                "does not scale the activation: use by='alpha'"
            )
        _by_effect(frame, intervention, readout.grid, model, data)
        kind, label = {"support_sign": 1}, "alpha·∂Δ"
        info = {"ranked_by": "|alpha * E[h . dDelta/dh]|", "n_prompts": len(data or ())}
    result = AttributionResult.from_rows(intervention.method, label, frame, info=info, **kind)
    return result if sites is None else result.select(sites)


def _frame(readout: Readout, labels: Sequence[str] | None) -> pd.DataFrame:
    """The readout as rows: site, layer, head, pos, token, value[, magnitude]."""
    rows = [
        (c.site.name, c.layer, c.head, c.pos, "(all)" if c.pos is None else _token(labels, c.pos))
        for c in readout.grid.components
    ]
    frame = pd.DataFrame(rows, columns=["site", "layer", "head", "pos", "token"])
    frame["value"] = readout.values.tolist()
    if readout.magnitude is not None:
        frame["magnitude"] = readout.magnitude.tolist()
    return frame


def _by_effect(
    frame: pd.DataFrame,
    intervention: Intervention,
    grid: Grid,
    model: HookedModel | None,
    data: ContrastSet | None,
) -> None:
    """``value`` becomes the edit's first-order change of Δ, ``support`` its support."""
    if model is None or data is None:
        raise AscaleError("by='effect' needs model= and data= (the gradients come from them)")
    alpha = frame["value"].to_numpy()
    grad = grid.from_params(_attributions(grid, model, data)).numpy()
    frame["value"] = alpha * grad  # the edit's first-order change of logit(wrong) - logit(correct)
    frame["support"] = -np.abs(alpha) * grad
    frame.drop(columns=["magnitude"], errors="ignore", inplace=True)


def _attributions(grid: Grid, model: HookedModel, data: ContrastSet) -> dict[str, Tensor]:
    """``E[h . dΔ/dh]`` at each of the grid's components, on the clean run, per site as
    ``[layer, slot, (head)]`` (a shared slot sums its positions)."""
    names = grid.hook_names()
    sums: dict[str, Tensor] = {}
    for start in range(0, len(data), 32):
        batch = data.subset(range(start, min(start + 32, len(data))))
        _, acts, grads = passes.gradients(model, batch, names)
        for name in names:
            sums[name] = sums.get(name, 0) + (acts[name] * grads[name]).sum(-1).sum(0).cpu()
    out = {}
    for site in grid.sites:
        per_layer = []
        for layer in site.layers:
            x = sums[site.hook_name(layer)] / len(data)  # [pos, (head)]
            per_layer.append(
                x.sum(0, keepdim=True) if grid.positions is None else x[list(grid.positions)]
            )
        out[site.name] = torch.stack(per_layer)
    return out


def _token(labels: Sequence[str] | None, pos: int) -> str:
    return labels[pos] if labels is not None and pos < len(labels) else ""
