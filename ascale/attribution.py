"""Rank components by learned scale: where does an intervention act?

Every attribution method in `ascale` (learned scalars, steering-vector norms, activation patching,
attribution patching) gives one number per *component*: a site, a layer, a head (for the
``heads`` site) and a token position. `AttributionResult` holds those numbers as one table, ranked
by magnitude, so rankings can be filtered, compared (`ascale.agreement`) and drawn
(`ascale.plot`).

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

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ascale import models, passes
from ascale.data import ContrastSet
from ascale.errors import AscaleError, UnknownSiteError, closest
from ascale.grid import Grid, component_name
from ascale.hooked import HookedModel
from ascale.interventions import DynamicScalars, Intervention
from ascale.sites import SITE_HOOKS

__all__ = ["EFFECTS", "AttributionResult", "effect_classes", "rank_components", "token_labels"]

EFFECTS: tuple[str, ...] = ("identity", "amplify", "suppress", "ablate", "reverse")
COLUMNS: tuple[str, ...] = (
    "rank",
    "component",
    "site",
    "layer",
    "head",
    "pos",
    "token",
    "value",
    "magnitude",
    "effect",
)


@dataclass(frozen=True, eq=False)
class AttributionResult:
    """One score per component (site, layer, [head], position), ranked by magnitude.

    Attributes:
        method: what produced the scores (``"scalars"``, ``"vectors"``,
            ``"activation_patching"``, ``"attribution_patching"``).
        value_name: what ``value`` is, for axis titles (``"alpha"``, ``"‖v‖"``, ...).
        components: one row per component, best first; see `to_frame`.
        signed: whether values carry a sign (norms do not).
        identity: the value at which a component does nothing (0 for ``alpha``).
        info: how the scores were made (direction, corruption, baselines, ...).
        support_sign: ``value * support_sign`` is the component's signed support for the
            correct answer (positive: it helps the model answer correctly), the score circuit
            scoring orders by (``ascale.circuits``). Patching effects are already that (``+1``);
            a learned scalar that helps flip the model to the wrong answer at ``beta = +1`` by
            suppressing a component (``alpha < 0``) says the component supports the correct
            answer, so scalars use ``-alpha`` (``-1``). Unsigned values (norms) are their own
            support.

    Example:
        >>> ranking = rank_components(scalars)
        >>> ranking.top(3)["rank"].tolist()
        [1, 2, 3]
    """

    method: str
    value_name: str
    components: pd.DataFrame = field(repr=False)
    signed: bool = True
    identity: float = 0.0
    info: dict[str, Any] = field(default_factory=dict, repr=False)
    support_sign: int = 1

    def support(self) -> pd.Series:
        """Each component's signed support for the correct answer, indexed by component name."""
        frame = self.components.set_index("component")
        if "support" in frame:
            return frame["support"].astype(float)
        values = frame["value"] if self.signed else frame["magnitude"]
        return (values * (self.support_sign if self.signed else 1)).astype(float)

    @classmethod
    def from_rows(
        cls, method: str, value_name: str, rows: pd.DataFrame, **kwargs: Any
    ) -> "AttributionResult":
        """Rank `rows` (columns site, layer, head, pos, token, value[, magnitude, effect])."""
        frame = rows.copy()
        if "magnitude" not in frame:
            frame["magnitude"] = frame["value"].abs()
        if "effect" not in frame:
            frame["effect"] = pd.Categorical([None] * len(frame), categories=EFFECTS)
        frame["head"] = frame["head"].astype("Int64")
        frame["pos"] = frame["pos"].astype("Int64")
        frame["component"] = [
            component_name(s, la, h, p)
            for s, la, h, p in zip(
                frame["site"], frame["layer"], frame["head"], frame["pos"], strict=True
            )
        ]
        frame = frame.sort_values(
            ["magnitude", "site", "layer", "head", "pos"],
            ascending=[False, True, True, True, True],
            kind="stable",
        )
        frame["rank"] = np.arange(1, len(frame) + 1)
        columns = [*COLUMNS, *(["support"] if "support" in frame else [])]
        return cls(method, value_name, frame[columns].reset_index(drop=True), **kwargs)

    def to_frame(self) -> pd.DataFrame:
        """The components as a DataFrame, best first.

        Columns: ``rank`` (1 is the largest magnitude), ``component`` (e.g. ``"heads L9H6 @14"``),
        ``site``, ``layer``, ``head`` and ``pos`` (nullable ints: no head off the ``heads`` site,
        no position for ``positions="shared"``), ``token`` (at that position in the first prompt),
        ``value``, ``magnitude`` (``|value|``, or the vector norm) and ``effect`` (scalars only).
        """
        return self.components.copy()

    def top(self, k: int = 10) -> pd.DataFrame:
        """The `k` components of largest magnitude."""
        return self.components.head(k).copy()

    def select(self, sites: str | Iterable[str]) -> "AttributionResult":
        """Only the components of some sites, ranked among themselves.

        Example:
            >>> set(ranking.select("mlp_out").top(5)["site"])
            {'mlp_out'}
        """
        wanted = [sites] if isinstance(sites, str) else list(sites)
        unknown = [s for s in wanted if s not in self.sites]
        if unknown:
            raise UnknownSiteError(
                f"{unknown[0]!r} is not in this ranking; sites here: {list(self.sites)}; "
                f"closest: {closest(unknown[0], self.sites)}"
            )
        kept = self.components[self.components["site"].isin(wanted)]
        kept = kept.drop(columns=["rank", "component"])
        return AttributionResult.from_rows(
            self.method,
            self.value_name,
            kept,
            signed=self.signed,
            identity=self.identity,
            info=self.info,
            support_sign=self.support_sign,
        )

    @property
    def sites(self) -> tuple[str, ...]:
        """The sites present, in the order of `ascale.sites.SITE_HOOKS`."""
        present = set(self.components["site"])
        return tuple(s for s in SITE_HOOKS if s in present) + tuple(
            sorted(present - set(SITE_HOOKS))
        )

    @property
    def tokens(self) -> dict[int, str]:
        """Position -> token string (of the first prompt)."""
        rows = self.components.dropna(subset=["pos"]).drop_duplicates("pos")
        return {int(p): str(t) for p, t in zip(rows["pos"], rows["token"], strict=True)}

    def __len__(self) -> int:
        return len(self.components)

    def plot(self, site: str | None = None) -> Any:
        """The scaling map of one site (`ascale.plot.plot_heatmap`), a plotly figure."""
        from ascale.plot import plot_heatmap

        return plot_heatmap(self, site)

    def _repr_html_(self) -> str:
        """Jupyter: what was ranked, then the top 10 components."""
        shown = [
            c for c in ("rank", "component", "token", "value", "effect") if c in self.components
        ]
        top = self.top(10)[shown]
        if top["effect"].isna().all():
            top = top.drop(columns="effect")
        head = (
            f"<p><b>AttributionResult</b> {html.escape(self.method)}: {len(self)} components "
            f"on {html.escape(', '.join(self.sites))}, ranked by |{html.escape(self.value_name)}|"
            "; top 10:</p>"
        )
        return head + top.to_html(index=False, float_format="{:.4g}".format)

    def __repr__(self) -> str:
        top = ", ".join(
            f"{c} {v:+.3g}"
            for c, v in zip(
                self.components["component"][:3], self.components["value"][:3], strict=True
            )
        )
        return (
            f"AttributionResult(method={self.method!r}, value={self.value_name!r}, "
            f"components={len(self)}, sites={list(self.sites)}, top=[{top}])"
        )


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
    """Rank an intervention's components: scalars by ``|alpha|``, steering vectors by norm.

    Args:
        intervention: a fitted `ActivationScalars` or `SteeringVectors`.
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
    if intervention.method not in ("scalars", "vectors"):
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
    device = models.first_device(model)
    with torch.inference_mode():
        for start in range(0, len(data), 32):
            batch = data.subset(range(start, min(start + 32, len(data))))
            mask = batch.attention_mask.to(device)
            _, acts = models.capture(model, batch.tokens.to(device), names, mask)
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


def effect_classes(
    alpha: pd.Series, threshold: float = 1e-2, ablate_tol: float = 0.1
) -> pd.Categorical:
    """The effect class of each scalar (see the module docstring)."""
    conditions = [
        alpha.abs() < threshold,
        (alpha + 1).abs() <= ablate_tol,
        alpha > 0,
        alpha > -1,
    ]
    labels = np.select(conditions, ["identity", "ablate", "amplify", "suppress"], "reverse")
    return pd.Categorical(labels, categories=EFFECTS)


def token_labels(model: HookedModel, data: ContrastSet) -> tuple[str, ...]:
    """The first prompt's token at each position (prompts must share one length).

    A label speaks for every prompt only when they share a layout, not just a length (see
    ``docs/scaling-maps.md``: CCC prompts of one length can put the country at two positions).
    """
    n_pos = data.n_pos
    return tuple(models.str_tokens(model, data.tokens[0, :n_pos]))


def _token(labels: Sequence[str] | None, pos: int) -> str:
    return labels[pos] if labels is not None and pos < len(labels) else ""
