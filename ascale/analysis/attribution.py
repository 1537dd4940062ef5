"""Rank components by learned scale: where does an intervention act?

`rank_components` gives each of a fitted intervention's components one number (a scalar's
``alpha``, a steering vector's norm, a dynamic scalar's mean ``alpha``, or a scalar's first-order
effect on the answer) as an `AttributionResult` (`ascale.analysis.results`), the type every attribution method returns.

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

from ascale import _tl
from ascale._types import HookedModel
from ascale.analysis import _passes
from ascale.analysis.results import AttributionResult, effect_classes, token_labels
from ascale.data import ContrastSet
from ascale.errors import AscaleError
from ascale.grid import Grid
from ascale.interventions import DynamicScalars, Intervention

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
    """Rank an intervention's components: scalars by ``|alpha|``, steering vectors by norm,
    circuit scalars by ``|score|`` (their signed score is their support for the answer).

    Args:
        intervention: a fitted `ActivationScalars`, `SteeringVectors`, `DynamicScalars` or
            `CircuitScalars`.
        model: with `data`, names each position by its token in the first prompt.
        data: the prompts the intervention acts on (any split; only its tokens are read).
        sites: keep only these sites (default: all of the intervention's).
        threshold: scalars with ``|alpha|`` below this are class ``identity``.
        ablate_tol: scalars within this of ``-1`` are class ``ablate``.
        by: scalars only: ``"alpha"`` ranks by ``|alpha|``; ``"effect"`` by the learned edit's
            first-order effect on the answer, ``alpha * E[h . dΔ/dh]`` over `data` (Δ = logit
            of the wrong minus the correct answer, at the clean run): a large scalar on a
            component the answer barely reads ranks low. Its support for the correct answer
            (what circuit scoring orders by) is ``-|alpha| * E[h . dΔ/dh]``.
        per_position: dynamic scalars only: one component per position (mean ``alpha`` there
            over the prompts of `data`, which must share one length), as position-tied grids
            have; default one per probe, averaged over every token.

    Returns:
        An `AttributionResult`, one row per parameter (scalars) or vector (vectors).

    Raises:
        AscaleError: the intervention is not fitted, or of a method that has no fixed
            per-component value.

    Example:
        >>> ranking = rank_components(scalars, model=model, data=train)
        >>> len(ranking.top(10))
        10
    """
    if not intervention.is_bound:
        raise AscaleError(f"{type(intervention).__name__} has no parameters yet: fit it first")
    if intervention.method == "dynamic":
        result = _rank_dynamic(intervention, model, data, threshold, ablate_tol, per_position)
        return result if sites is None else result.select(sites)
    if intervention.method not in ("scalars", "vectors", "circuit"):
        raise AscaleError(
            f"rank_components does not know how to score method {intervention.method!r}"
        )
    grid = Grid.of(intervention)
    params = {name: p.detach().cpu() for name, p in intervention.params.items()}
    if intervention.method == "vectors":
        params = {name: p.norm(dim=-1) for name, p in params.items()}  # one norm per vector
    values = grid.from_params(params).tolist()
    labels = token_labels(model, data) if model is not None and data is not None else None
    rows = [
        (
            c.site.name,
            c.layer,
            c.head,
            c.pos,
            "(all)" if c.pos is None else _token(labels, c.pos),
            v,
        )
        for c, v in zip(grid.components, values, strict=True)
    ]
    frame = pd.DataFrame(rows, columns=["site", "layer", "head", "pos", "token", "value"])
    if intervention.method == "scalars" and by == "effect":
        if model is None or data is None:
            raise AscaleError("by='effect' needs model= and data= (the gradients come from them)")
        alpha = frame["value"].to_numpy()
        grad = grid.from_params(_attributions(intervention, grid, model, data)).numpy()
        frame["effect"] = effect_classes(frame["value"], threshold, ablate_tol)
        frame["value"] = (
            alpha * grad
        )  # the edit's first-order change of logit(wrong) - logit(correct)
        frame["support"] = -np.abs(alpha) * grad
        info = {"ranked_by": "|alpha * E[h . dDelta/dh]|", "n_prompts": len(data)}
        result = AttributionResult.from_rows("scalars", "alpha·∂Δ", frame, info=info)
    elif intervention.method == "scalars":
        frame["effect"] = effect_classes(frame["value"], threshold, ablate_tol)
        result = AttributionResult.from_rows("scalars", "alpha", frame, support_sign=-1)
    elif intervention.method == "circuit":
        # the score's sign: for or against the answer (CPR's order); its size: how much the
        # component matters either way (CMD's order), as for patching effects
        frame["magnitude"] = frame["value"].abs()
        info = {"ranked_by": "circuit score"}
        result = AttributionResult.from_rows("circuit", "score", frame, info=info)
    else:
        result = AttributionResult.from_rows("vectors", "‖v‖", frame, signed=False)
    return result if sites is None else result.select(sites)


def _rank_dynamic(
    intervention: Intervention,
    model: HookedModel | None,
    data: ContrastSet | None,
    threshold: float,
    ablate_tol: float,
    per_position: bool,
) -> AttributionResult:
    """Dynamic scalars: each probe's mean ``alpha = w . h + b`` over every real token of `data`
    (or, `per_position`, at each position over the prompts), with ``h`` read on the clean run;
    ranked by mean ``|alpha|``."""
    assert isinstance(intervention, DynamicScalars)
    if model is None or data is None:
        raise AscaleError("ranking dynamic scalars needs model= and data= (alpha depends on h)")
    names = [s.hook_name(layer) for s in intervention.sites for layer in s.layers]
    sums: dict[str, Tensor] = {}
    device = _tl.first_device(model)
    with torch.inference_mode():
        for start in range(0, len(data), 32):
            batch = data.subset(range(start, min(start + 32, len(data))))
            mask = batch.attention_mask.to(device)
            _, acts = _tl.capture(model, batch.tokens.to(device), names, mask)
            for site in intervention.sites:
                for layer in site.layers:
                    # exactly what the hook multiplies by (normalised input included)
                    alpha = intervention.alpha(site.name, layer, acts[site.hook_name(layer)])
                    real = mask.reshape(*mask.shape, *[1] * (alpha.ndim - 2)).to(alpha.dtype)
                    axes = (0,) if per_position else (0, 1)
                    signed = (alpha * real).sum(axes).cpu()
                    size = (alpha.abs() * real).sum(axes).cpu()
                    key = site.hook_name(layer)
                    sums[key] = sums.get(key, torch.zeros(2, *signed.shape)) + torch.stack(
                        [signed, size]
                    )
    rows = []
    labels = token_labels(model, data) if per_position else ()
    slots: list[int | None] = list(range(data.n_pos)) if per_position else [None]
    count = float(len(data)) if per_position else float(data.lengths.sum())
    for site in intervention.sites:
        for layer in site.layers:
            mean = sums[site.hook_name(layer)] / count  # [2, (pos), (head)]
            for slot in slots:
                at = mean if slot is None else mean[:, slot]
                heads = range(at.shape[1]) if site.per_head else [None]
                for head in heads:
                    value, size = (at[:, head] if head is not None else at).tolist()
                    token = "(all)" if slot is None else labels[slot]
                    rows.append((site.name, layer, head, slot, token, value, size))
    columns = ["site", "layer", "head", "pos", "token", "value", "magnitude"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["effect"] = effect_classes(frame["value"], threshold, ablate_tol)
    return AttributionResult.from_rows(
        "dynamic",
        "mean alpha",
        frame,
        info={"n_prompts": len(data), "ranked_by": "mean |alpha|"},
        support_sign=-1,
    )


def _attributions(
    intervention: Intervention, grid: Grid, model: HookedModel, data: ContrastSet
) -> dict[str, Tensor]:
    """``E[h . dΔ/dh]`` at each of the grid's components, on the clean run, per site as
    ``[layer, slot, (head)]`` (a shared slot sums its positions)."""
    names = grid.hook_names()
    sums: dict[str, Tensor] = {}
    for start in range(0, len(data), 32):
        batch = data.subset(range(start, min(start + 32, len(data))))
        _, acts, grads = _passes.gradients(model, batch, names)
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
