"""The forward (and backward) passes that patching, circuit scoring and attribution share.

Each pass runs prompts of one token length (the grid's) and reads the answer logit difference
``Δ = logit(wrong) - logit(correct)`` at the last position: `capture` (Δ and activations),
`gradients` (and ``∂(ΣΔ)/∂activation``), `mean_acts`, `clean_deltas`, and `patched_deltas`: many
copies of a batch in one forward pass, each copy patched at its own components of the grid.
`ascale.analysis.patching`, `ascale.analysis.circuits`, `ascale.analysis.attribution` and
the circuit fit (`ascale.training.circuit`) call them through the module. What a circuit's
ablation patches in (`capture_source`) reads `ascale.interventions.ABLATIONS`.
"""

import functools
from typing import Any

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ascale import _tl
from ascale._types import HookedModel
from ascale.data import ContrastSet
from ascale.grid import Grid
from ascale.training.objective import answer_logit_diff

__all__ = [
    "Acts",
    "EdgeSources",
    "capture",
    "capture_source",
    "capture_with_resid",
    "chunks",
    "clean_deltas",
    "clean_length",
    "gradients",
    "mean_acts",
    "patched_deltas",
    "shared_length",
]

Acts = dict[str, Tensor]


def chunks(rows: range, size: int) -> list[list[int]]:
    """`rows` in consecutive lists of at most `size`."""
    return [list(rows[i : i + size]) for i in range(0, len(rows), max(1, size))]


def _deltas(
    logits: Float[Tensor, "batch 1 d_vocab"], batch: ContrastSet, copies: int = 1
) -> Float[Tensor, " batch"]:
    """Δ from the last position's logits (`_tl.run(..., last_only=True)`; the grid needs one
    prompt length, so there is no padding), for `copies` copies of `batch` one after another."""
    correct, wrong = (
        einops.repeat(ids, "batch -> (copy batch)", copy=copies).to(logits.device)
        for ids in (batch.correct_ids, batch.wrong_ids)
    )
    return answer_logit_diff(logits[:, -1], correct, wrong)


def _tokens(batch: ContrastSet, model: HookedModel) -> Int[Tensor, "batch pos"]:
    return batch.tokens.to(_tl.first_device(model))


def capture(model: HookedModel, batch: ContrastSet, names: list[str]) -> tuple[Tensor, Acts]:
    """Δ per prompt and the activations at `names`, from one forward pass."""
    logits, acts = _tl.capture(model, _tokens(batch, model), names, last_only=True)
    return _deltas(logits, batch), acts


def capture_with_resid(
    model: HookedModel, batch: ContrastSet, names: list[str], grid: Grid
) -> tuple[Tensor, Acts, dict[int, Tensor]]:
    """`capture`, and the clean residual entering each block of `grid` above block 0 (where
    the model supports starting part-way: `_tl.prefix_supported`)."""
    layers = sorted({layer for site in grid.sites for layer in site.layers if layer > 0})
    layers = _tl.prefix_layers(model, layers)
    if not layers:
        return (*capture(model, batch, names), {})
    extra = [f"blocks.{layer}.hook_resid_pre" for layer in layers]
    delta, acts = capture(model, batch, [*names, *extra])
    resid = {layer: acts[name] for layer, name in zip(layers, extra, strict=True)}
    for name in set(extra) - set(names):
        del acts[name]
    return delta, acts, resid


def gradients(
    model: HookedModel, batch: ContrastSet, names: list[str]
) -> tuple[Tensor, Acts, Acts]:
    """Δ per prompt, activations, and ``∂(ΣΔ)/∂activation`` at `names` (one forward, one backward).

    Each hook adds a zero tensor that requires grad, so the gradient flows through every path
    of the model as usual and lands on that tensor.
    """
    acts: Acts = {}
    zeros: Acts = {}

    def tap(act: Tensor, hook: Any, name: str) -> Tensor:
        acts[name] = act.detach()
        zeros[name] = torch.zeros_like(act, requires_grad=True)
        return act + zeros[name]

    hooks = [(n, functools.partial(tap, name=n)) for n in names]
    with torch.enable_grad(), _tl.attach(model, hooks):
        delta = _deltas(_tl.run(model, _tokens(batch, model), last_only=True), batch)
        grads = torch.autograd.grad(delta.sum(), [zeros[n] for n in names], allow_unused=True)
    out = {
        n: torch.zeros_like(acts[n]) if g is None else g for n, g in zip(names, grads, strict=True)
    }
    return delta.detach(), acts, out


def mean_acts(
    model: HookedModel, data: ContrastSet, names: list[str], batch_size: int = 64
) -> Acts:
    """Each hook's activation averaged over every prompt, per position: ``[1, pos, ...]``."""
    sums: Acts = {}
    with torch.inference_mode():
        for rows in chunks(range(len(data)), batch_size):
            _, acts = capture(model, data.subset(rows), names)
            for n, a in acts.items():
                sums[n] = sums.get(n, 0) + a.sum(0, keepdim=True)
    return {n: s / len(data) for n, s in sums.items()}


def capture_source(
    model: HookedModel,
    data: ContrastSet,
    corrupted: ContrastSet | None,
    rows: list[int],
    names: list[str],
    ablation: str,
    mean: Acts | None = None,
) -> Acts:
    """What circuit scoring's ablation patches in for prompts `rows` of `data`: their
    counterfactual activations, the mean activations (`mean`, from `mean_acts`), or zeros."""
    if ablation == "counterfactual":
        assert corrupted is not None
        _, acts = capture(model, corrupted.subset(rows), names)
        return acts
    if ablation == "mean":
        assert mean is not None
        return {n: einops.repeat(a, "1 ... -> batch ...", batch=len(rows)) for n, a in mean.items()}
    _, acts = capture(model, data.subset(rows), names)
    return {n: torch.zeros_like(a) for n, a in acts.items()}


def clean_deltas(model: HookedModel, data: ContrastSet, batch_size: int = 64) -> Tensor:
    """Δ of every prompt on the clean model."""
    with torch.inference_mode():
        return torch.cat(
            [capture(model, data.subset(r), [])[0] for r in chunks(range(len(data)), batch_size)]
        )


def shared_length(data: ContrastSet, corrupted: ContrastSet | None) -> int:
    """How many first positions every prompt of `data` shares with its counterfactual: before
    the first token where they differ, the two runs are one run, so patching or ablating a
    component there to its counterfactual value changes nothing (0 without `corrupted`)."""
    if corrupted is None or corrupted.tokens.shape != data.tokens.shape:
        return 0
    same = (data.tokens == corrupted.tokens).all(0)  # [pos]: every prompt agrees there
    differs = (~same).nonzero()
    return int(differs[0]) if len(differs) else data.n_pos - 1


def clean_length(grid: Grid, data: ContrastSet, corrupted: ContrastSet | None) -> int:
    """How many first positions every pass that patches `grid`'s components towards
    `corrupted` (or `data`'s own runs, without it) leaves as the clean run: those before the
    grid's first position (nothing there is patched) or before `shared_length` (patching there
    changes nothing)."""
    return max(grid.first_position, shared_length(data, corrupted))


def patched_deltas(
    model: HookedModel,
    batch: ContrastSet,
    grid: Grid,
    rows: Bool[Tensor, "copy component"],
    source: Acts,
    resid: dict[int, Tensor] | None = None,
    shared: _tl.Shared | None = None,
) -> Float[Tensor, "copy batch"]:
    """Δ per prompt in one copy of `batch` per row of ``rows [copy, component]``; copy ``c``
    takes `source` at every component set in ``rows[c]`` (the rest run as they are).

    With `resid` (the clean residual entering each block of the grid, `capture_with_resid`),
    the pass starts at the lowest block it patches (`_tl.Prefix`). With `shared` (the clean
    keys and values of the batch's first ``shared.n`` positions, `_tl.shared_of`), only the
    later positions run: the caller vouches that `source` equals the clean run before them
    (`shared_length`), so the components there are left as they are.
    """
    copies, n = rows.shape[0], 0 if shared is None else shared.n
    masks = grid.masks(rows)
    hooks = [
        (
            name,
            functools.partial(
                _patch, mask=mask[:, n:].to(source[name].device), source=source[name][:, n:]
            ),
        )
        for name, mask in masks.items()
    ]
    prefix = None
    first = _tl.first_block(list(masks))
    if resid and first in resid:
        start = einops.repeat(resid[first][:, n:], "batch ... -> (copy batch) ...", copy=copies)
        prefix = _tl.Prefix(first, start)
    repeated = None if shared is None else shared.repeat(copies)
    with _tl.attach(model, hooks):
        tokens = einops.repeat(_tokens(batch, model), "batch pos -> (copy batch) pos", copy=copies)
        logits = _tl.run(model, tokens, last_only=True, prefix=prefix, shared=repeated)
    return einops.rearrange(
        _deltas(logits, batch, copies), "(copy batch) -> copy batch", copy=copies
    )


def _patch(
    act: Float[Tensor, "copy_batch pos *head d"],
    hook: Any,
    mask: Bool[Tensor, "copy pos *head"],
    source: Float[Tensor, "batch pos *head d"],
) -> Float[Tensor, "copy_batch pos *head d"]:
    """Copy ``c`` of the batch takes `source` wherever ``mask[c]`` is set (a new tensor).

    ``act`` holds the copies one after another (``copy_batch = copy * batch``).
    """
    grouped = einops.rearrange(act, "(copy batch) ... -> copy batch ...", copy=mask.shape[0])
    where = einops.rearrange(mask, "copy pos ... -> copy 1 pos ... 1")  # every prompt, every d
    patched = torch.where(where, source[None], grouped)
    return einops.rearrange(patched, "copy batch ... -> (copy batch) ...")


class EdgeSources:
    """What an ablated edge's source gives its destination, for rows of `data` (as
    `capture_source` for components): each source's output on the row's counterfactual prompt
    (``"counterfactual"``), its mean over `data` at each position (``"mean"``, computed once),
    or zero, as ``[src, batch, pos, d_model]`` (`ascale._tl.masked_run`'s ``corrupt``).

    Example:
        >>> graph = ascale.EdgeGraph.of(model)
        >>> EdgeSources(model, graph, data, None, "zero")([0, 1]).abs().sum().item()
        0.0
    """

    def __init__(
        self,
        model: HookedModel,
        graph: Any,
        data: ContrastSet,
        corrupted: ContrastSet | None,
        ablation: str,
        batch_size: int = 32,
    ) -> None:
        from ascale.errors import AscaleError
        from ascale.interventions import check_ablation

        self.model, self.graph, self.data, self.corrupted = model, graph, data, corrupted
        self.ablation = check_ablation(ablation)
        if ablation == "counterfactual" and corrupted is None:
            raise AscaleError(
                "counterfactual ablation needs each prompt's counterfactual: give `corrupted`, "
                "or ablate to the 'mean' or to 'zero'"
            )
        self.mean: Tensor | None = None
        if ablation == "mean":
            total: Tensor | None = None
            for rows in chunks(range(len(data)), batch_size):
                out = _tl.source_outputs(model, graph, data.subset(rows).tokens).sum(1)
                total = out if total is None else total + out
            assert total is not None  # data is not empty
            self.mean = (total / len(data))[:, None]  # [src, 1, pos, d_model]

    def __call__(self, rows: list[int] | Tensor) -> Float[Tensor, "src batch pos d_model"]:
        if self.ablation == "counterfactual":
            assert self.corrupted is not None
            return _tl.source_outputs(self.model, self.graph, self.corrupted.subset(rows).tokens)
        n_pos = self.data.tokens.shape[1]
        shape = (self.graph.n_src, len(rows), n_pos, self.graph.d_model)
        if self.mean is not None:
            return self.mean.expand(shape)
        return torch.zeros(shape, device=_tl.first_device(self.model))
