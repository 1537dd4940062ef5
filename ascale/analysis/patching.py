"""Activation patching and attribution patching, on the same grid as the learned scalars.

The grid is site × layer × [head] × position, exactly the components an `ActivationScalars`
holds (pass ``like=scalars`` to copy its sites, layers and positions). The metric is the answer
logit difference ``Δ = logit(wrong) - logit(correct)`` at the last position, averaged over prompts.

- **noising** (default): run the clean prompts, replace one component with its value from the
  corrupted prompts; the effect is ``(Δ_patched - Δ_clean) / (Δ_corrupt - Δ_clean)``: 0 is no
  change, 1 the whole clean→corrupt gap.
- **denoising**: run the corrupted prompts, restore one component from the clean run; the effect
  is ``(Δ_patched - Δ_corrupt) / (Δ_clean - Δ_corrupt)``.
- without corrupted prompts: zero- or mean-ablation (the mean over the prompts at each position)
  of the clean run; the effect is the raw change ``Δ_ablated - Δ_clean``, in logits.

Attribution patching (Nanda, 2023) estimates the same effects to first order from one forward
pass on each input and one backward pass: ``(a_source - a_base) · ∂Δ/∂a`` at the base run.

Example:
    >>> corrupted = ascale.tasks.ioi_corrupt(data, model)
    >>> patched = activation_patching(model, data, corrupted, like=scalars)
    >>> estimated = attribution_patching(model, data, corrupted, like=scalars)
    >>> len(patched.components) == len(estimated.components) == scalars.n_params
    True
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ascale import _checks, _tl, passes
from ascale._types import HookedModel
from ascale.analysis.results import AttributionResult, token_labels
from ascale.data import ContrastSet, check_aligned, check_data
from ascale.errors import AscaleError, PromptLengthError
from ascale.grid import Component, Grid
from ascale.interventions import Intervention
from ascale.passes import Acts

__all__ = ["activation_patching", "attribution_patching"]

Direction = Literal["noising", "denoising"]
Ablation = Literal["zero", "mean"]


def activation_patching(
    model: HookedModel,
    data: ContrastSet,
    corrupted: ContrastSet | None = None,
    *,
    like: Intervention | Grid | None = None,
    sites: str | Sequence[str] = "attn_out,mlp_out",
    layers: Sequence[int] | None = None,
    positions: str | Sequence[int] = "all",
    direction: Direction = "noising",
    ablation: Ablation = "mean",
    max_batch: int = 128,
    progress: bool = True,
) -> AttributionResult:
    """Patch every component of the grid, many per forward pass, and rank them by effect.

    TransformerLens' ``get_act_patch_*`` runs one forward pass per component (on SmolLM2, ~420
    passes for one block type over layer × position, minutes on a laptop CPU). Here the prompts
    are repeated once per component in a chunk and each copy is patched at its own component,
    so one forward pass of ``max_batch`` rows patches ``max_batch // n_prompts`` components. Rows
    never interact in a transformer, so the result equals one-component-per-pass patching.

    Args:
        model: the model.
        data: the clean prompts (one token length).
        corrupted: prompts aligned row by row with `data`, of the same lengths (e.g.
            `ascale.tasks.ccc_corrupt`, `ascale.tasks.ioi_corrupt`); ``None`` to ablate instead.
        like: copy sites, layers and positions from this intervention, or a `Grid`.
        sites: site names, when `like` is not given.
        layers: layers, when `like` is not given (default: all).
        positions: ``"all"``, ``"shared"`` (each component spans every position) or a list.
        direction: ``"noising"`` or ``"denoising"`` (needs `corrupted`).
        ablation: ``"zero"`` or ``"mean"``, used when `corrupted` is ``None``.
        max_batch: rows per forward pass (prompts × components patched at once).
        progress: show a progress bar (`tqdm.auto`: a widget in Jupyter), one tick a pass.

    Returns:
        An `AttributionResult` (method ``"activation_patching"``) on the grid.

    Example:
        >>> patched = activation_patching(model, data, corrupted, sites="heads", positions=[-1])
        >>> len(patched.components)  # layers x heads, at the last position
        8
    """
    max_batch = _checks.whole("max_batch", max_batch)
    chunk = max(1, min(len(check_data(data)), max_batch))
    plan = _plan(model, data, corrupted, like, sites, layers, positions, direction, ablation, chunk)
    order = _patch_order(plan, data, corrupted)
    sums = _patch_each(model, plan, data, corrupted, order, chunk, max_batch, progress)
    comps = plan.comps
    return _result("activation_patching", model, data, comps, sums, corrupted, direction, ablation)


def attribution_patching(
    model: HookedModel,
    data: ContrastSet,
    corrupted: ContrastSet | None = None,
    *,
    batch_size: int = 32,
    direction: Direction = "noising",
    ablation: Ablation = "mean",
    like: Intervention | Grid | None = None,
    sites: str | Sequence[str] = "attn_out,mlp_out",
    layers: Sequence[int] | None = None,
    positions: str | Sequence[int] = "all",
) -> AttributionResult:
    """Estimate every component's patching effect as ``(a_source - a_base) · ∂Δ/∂a``.

    One forward and one backward pass on the base run (clean for noising), one forward pass on
    the source (corrupted), per batch of `batch_size` prompts; every other argument, and the
    normalisation, as in `activation_patching`, whose effects this approximates to first order.

    Example:
        >>> estimated = attribution_patching(model, data, corrupted, like=scalars)
        >>> estimated.method
        'attribution_patching'
    """
    batch_size = _checks.whole("batch_size", batch_size)
    plan = _plan(
        model, data, corrupted, like, sites, layers, positions, direction, ablation, batch_size
    )
    comps, names = plan.comps, plan.names
    totals = torch.zeros(len(comps))
    base_delta = source_delta = 0.0  # sums of Δ over prompts
    for rows in passes.chunks(range(len(data)), batch_size):
        delta, base_acts, grads = passes.gradients(model, plan.base.subset(rows), names)
        with torch.inference_mode():
            src_acts, src_delta = _source(model, plan.source, rows, names, base_acts, plan.mean)
        base_delta, source_delta = (
            base_delta + float(delta.sum()),
            source_delta + float(src_delta.sum()),
        )
        summed = {  # [pos, (head)]: gradient × activation difference, summed over prompts
            n: ((src_acts[n] - base_acts[n]) * grads[n]).sum(-1).sum(0).cpu() for n in names
        }
        totals += torch.stack([_pick(summed[c.hook_name], c) for c in comps])
    sums = (totals, base_delta, source_delta)
    return _result("attribution_patching", model, data, comps, sums, corrupted, direction, ablation)


# ---- the grid and the inputs ----


@dataclass(frozen=True)
class _Plan:
    """What both patching methods patch: the grid's components and hooks, the base run (patched
    into), the source run (patched from; None to ablate) and the mean activations for mean
    ablation."""

    grid: Grid
    comps: list[Component]
    names: list[str]
    base: ContrastSet
    source: ContrastSet | None
    mean: Acts | None


def _plan(
    model: HookedModel,
    data: ContrastSet,
    corrupted: ContrastSet | None,
    like: Intervention | Grid | None,
    sites: str | Sequence[str],
    layers: Sequence[int] | None,
    positions: str | Sequence[int],
    direction: str,
    ablation: str,
    batch_size: int,
) -> _Plan:
    """The grid and the inputs, checked; the mean activations (in batches of `batch_size`)
    where the components are mean-ablated."""
    check_data(data)
    grid = _grid(model, data, like, sites, layers, positions)
    base, source = _inputs(data, corrupted, direction, ablation)
    names = grid.hook_names()
    needs_mean = _needs_mean(corrupted, ablation)
    mean = passes.mean_acts(model, data, names, batch_size) if needs_mean else None
    return _Plan(grid, list(grid.components), names, base, source, mean)


def _grid(
    model: HookedModel,
    data: ContrastSet,
    like: Intervention | Grid | None,
    sites: str | Sequence[str],
    layers: Sequence[int] | None,
    positions: str | Sequence[int],
) -> Grid:
    n_pos = data.n_pos
    if like is not None:
        _checks.instance("like", like, (Intervention, Grid), "whose grid to patch")
    if like is None:
        grid = Grid.build(model, n_pos, sites=sites, layers=layers, positions=positions)
        return grid.with_length(n_pos)
    grid = like if isinstance(like, Grid) else Grid.of(like)
    if grid.n_pos not in (None, n_pos):
        raise PromptLengthError(
            f"the grid is tied to prompts of {grid.n_pos} tokens, the data has {n_pos}"
        )
    return grid.with_length(n_pos)


def _inputs(
    data: ContrastSet, corrupted: ContrastSet | None, direction: str, ablation: str
) -> tuple[ContrastSet, ContrastSet | None]:
    """(base run, source run): what is patched into, and where patches come from."""
    if direction not in ("noising", "denoising"):
        raise AscaleError(f"direction must be 'noising' or 'denoising', got {direction!r}")
    if corrupted is None:
        if ablation not in ("zero", "mean"):
            raise AscaleError(f"ablation must be 'zero' or 'mean', got {ablation!r}")
        if direction == "denoising":
            raise AscaleError("denoising needs corrupted prompts; without them, ablation noises")
        return data, None
    check_aligned(data, corrupted)
    return (data, corrupted) if direction == "noising" else (corrupted, data)


# ---- activation patching's passes ----


def _patch_order(plan: _Plan, data: ContrastSet, corrupted: ContrastSet | None) -> list[int]:
    """The components that are run, by layer.

    Before the first token the corrupted prompts change, patching is a no-op (effect 0): those
    components are not run. By layer: a pass that patches only layers >= l runs only the blocks
    from l on, from the clean residual entering block l (`_tl.Prefix`).
    """
    n_shared = passes.shared_length(data, corrupted)
    live = [i for i, c in enumerate(plan.comps) if c.pos is None or c.pos >= n_shared]
    return sorted(live, key=lambda i: plan.comps[i].layer)


def _patch_each(
    model: HookedModel,
    plan: _Plan,
    data: ContrastSet,
    corrupted: ContrastSet | None,
    order: list[int],
    chunk: int,
    max_batch: int,
    progress: bool,
) -> tuple[Tensor, float, float]:
    """Patch the components of `order`, ``max_batch // rows`` of them per pass over each chunk
    of prompts: the sums over prompts of each component's change in Δ, of Δ_base, of Δ_source.

    The passes start after the positions the corrupted prompts share with the clean ones, or at
    the grid's first position if later (`_tl.Shared`).
    """
    comps, names, grid = plan.comps, plan.names, plan.grid
    totals = torch.zeros(len(comps))
    base_delta = source_delta = 0.0  # sums of Δ over prompts
    n_clean = passes.clean_length(grid, data, corrupted)
    chunks = passes.chunks(range(len(data)), chunk)
    n_passes = sum(-(-len(order) // max(1, max_batch // len(rows))) for rows in chunks)
    bar = tqdm(total=n_passes, desc="activation patching", disable=not progress, leave=False)
    with torch.inference_mode():
        for rows in chunks:
            batch = plan.base.subset(rows)
            delta, base_acts, resid = passes.capture_with_resid(model, batch, names, grid)
            src_acts, src_delta = _source(model, plan.source, rows, names, base_acts, plan.mean)
            base_delta, source_delta = (
                base_delta + float(delta.sum()),
                source_delta + float(src_delta.sum()),
            )
            shared = _tl.shared_of(model, batch.tokens, n_clean)
            per_pass = max(1, max_batch // len(rows))
            for start in range(0, len(order), per_pass):
                group = torch.tensor(order[start : start + per_pass])
                rows_ = torch.zeros((len(group), len(comps)), dtype=torch.bool)
                rows_[torch.arange(len(group)), group] = True
                patched = passes.patched_deltas(model, batch, grid, rows_, src_acts, resid, shared)
                totals[group] += patched.sum(-1).cpu() - float(delta.sum())
                bar.update(1)
    bar.close()
    return totals, base_delta, source_delta


# ---- what is patched in, and what a component scores ----


def _source(
    model: HookedModel,
    source: ContrastSet | None,
    rows: list[int],
    names: list[str],
    base_acts: Acts,
    mean: Acts | None,
) -> tuple[Acts, Tensor]:
    """Activations to patch in, and the source run's Δ (0 for ablation, which has none)."""
    if source is not None:
        delta, acts = passes.capture(model, source.subset(rows), names)
        return acts, delta
    if mean is None:
        acts = {n: torch.zeros_like(a) for n, a in base_acts.items()}
    else:
        acts = {n: mean[n].expand_as(a) for n, a in base_acts.items()}
    return acts, torch.zeros(len(rows))


def _needs_mean(corrupted: ContrastSet | None, ablation: str) -> bool:
    return corrupted is None and ablation == "mean"


def _pick(summed: Float[Tensor, " pos *head"], comp: Component) -> Float[Tensor, ""]:
    """One component's value from a ``[pos, (head)]`` map (a shared slot sums its positions)."""
    picked = summed if comp.pos is None else summed[comp.pos : comp.pos + 1]
    return (picked if comp.head is None else picked[..., comp.head]).sum()


# ---- results ----


def _normalise(change: Tensor, base: float, source: float, corrupted: ContrastSet | None) -> Tensor:
    if corrupted is None:
        return change  # ablation: raw change in logits
    if abs(source - base) < 1e-6:
        raise AscaleError(
            "clean and corrupted prompts give the same mean logit difference: nothing to patch"
        )
    return change / (source - base)


def _result(
    method: str,
    model: HookedModel,
    data: ContrastSet,
    comps: list[Component],
    sums: tuple[Tensor, float, float],
    corrupted: ContrastSet | None,
    direction: str,
    ablation: str,
) -> AttributionResult:
    """The result from the sums over prompts of each component's change, Δ_base and Δ_source."""
    totals, base_delta, source_delta = sums
    n = len(data)
    effect = _normalise(totals / n, base_delta / n, source_delta / n, corrupted)
    labels = token_labels(model, data)
    frame = pd.DataFrame(
        [
            (c.site.name, c.layer, c.head, c.pos, "(all)" if c.pos is None else labels[c.pos], v)
            for c, v in zip(comps, effect.tolist(), strict=True)
        ],
        columns=["site", "layer", "head", "pos", "token", "value"],
    )
    info = {
        "direction": direction if corrupted is not None else f"{ablation}-ablation",
        "n_prompts": len(data),
        "normalised": corrupted is not None,
    }
    name = "patching effect" if corrupted is not None else "Δ logit diff"
    return AttributionResult.from_rows(method, name, frame, info=info)
