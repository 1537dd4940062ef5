"""What a forward pass can skip: the blocks below an edit (`Prefix`) and the positions before it
(`Shared`), with the module surgery each needs on a TransformerBridge.

Both hold what a clean run computes where no edit reaches, so that each edited pass computes only
the rest; `ascale._tl.run` takes either or both. `ascale._tl` checks on each model that the
shortened pass reproduces the full one (`prefix_supported`, `shared_supported`) and otherwise
runs the whole model.
"""

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import einops
import torch
from jaxtyping import Float
from torch import Tensor

from ascale._types import HookedModel
from ascale.errors import IncompatibleModelError

__all__ = ["Prefix", "Shared", "blocks_from", "cache_seen", "first_block", "layer_list"]


@dataclasses.dataclass(frozen=True)
class Prefix:
    """The residual stream entering block `layer`, computed once on clean prompts.

    When every hook an intervention (or a patch) edits sits in block `layer` or above, the
    blocks below it see the clean prompt whatever the edit, so their output can be computed
    once and each later forward pass starts at `layer`: `run(..., prefix=...)` runs blocks
    ``layer..n_layers-1`` only (the unembedding included), on `resid`'s rows. Logits and
    gradients equal the full forward's (``tests/test_prefix.py``); on SmolLM2 with sites in
    the upper half of the layers a training step costs 0.69x the same step without it (2
    threads, ``benchmarks/studies/results/prefix_quiet.json``).

    TransformerLens' own ``start_at_layer`` on a TransformerBridge injects the residual but
    still runs the blocks below (transformer-lens 4.3), so `run` also hides those blocks from
    the Hugging Face model for the pass. Where that does not reproduce the full forward on a
    model (`prefix_supported`), `prefix_of` returns a prefix at layer 0: the full forward.

    With `shared`, the pass also starts after ``shared.n`` positions no edit reaches (see
    `Shared`); `resid` then holds the later positions only (at layer 0: none, width 0).
    """

    layer: int
    resid: Float[Tensor, "batch pos d_model"]
    shared: "Shared | None" = None  # positions before an edit: `resid` holds the later ones

    def rows(self, index: Tensor | Sequence[int]) -> "Prefix":
        """The prefix of a subset of the prompts (``index`` as in ``ContrastSet.subset``)."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.resid.device)
        shared = None if self.shared is None else self.shared.rows(index)
        return Prefix(self.layer, self.resid.index_select(0, index), shared)

    def repeat(self, copies: int) -> "Prefix":
        """For `copies` copies of the batch one after another (``(copy batch)`` rows)."""
        resid = einops.repeat(self.resid, "batch ... -> (copy batch) ...", copy=copies)
        return Prefix(
            self.layer, resid, None if self.shared is None else self.shared.repeat(copies)
        )

    def positions_from(self, n: int) -> "Prefix":
        """The same residual at positions ``n..`` only (to run beside a `Shared` of `n`)."""
        return Prefix(self.layer, self.resid[:, n:], self.shared)


@dataclasses.dataclass(frozen=True)
class Shared:
    """The attention keys and values of each prompt's first `n` positions, from a clean run.

    When no edit of a pass reaches positions ``0..n-1`` (a counterfactual prompt that first
    differs from its clean prompt at position `n` runs exactly as the clean one before it, so
    ablating to it there is a no-op), every pass computes the same keys and values there:
    `run(..., shared=...)` feeds positions ``n..`` only, attending to these as to a generation
    cache. Hooks then see ``pos - n`` positions, and callers slice their position masks and
    sources to match. On SmolLM2's CCC prompts (12 tokens, the country at position 6) a pass
    costs about half the full one.

    Attributes:
        n: the shared positions.
        keys: per layer, ``[row, kv_head, n, d_head]`` (after rotary embeddings).
        values: per layer, the same shape.
    """

    n: int
    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]

    def __len__(self) -> int:
        return int(self.keys[0].shape[0])

    def rows(self, index: Tensor | Sequence[int]) -> "Shared":
        """The shared positions of a subset of the prompts."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.keys[0].device)
        pick = tuple(t.index_select(0, index) for t in self.keys)
        return Shared(self.n, pick, tuple(t.index_select(0, index) for t in self.values))

    def repeat(self, copies: int) -> "Shared":
        """For `copies` copies of the batch one after another (``(copy batch)`` rows)."""
        if copies == 1:
            return self
        pattern = "batch ... -> (copy batch) ..."
        keys = tuple(einops.repeat(t, pattern, copy=copies) for t in self.keys)
        return Shared(
            self.n, keys, tuple(einops.repeat(t, pattern, copy=copies) for t in self.values)
        )

    def cache(self, config: Any) -> Any:
        """A fresh Hugging Face ``DynamicCache`` holding these keys and values (a pass appends
        its own positions to the cache it is given, so each pass gets a new one)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=config)
        for layer, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            cache.update(k, v, layer)
        return cache


def first_block(names: Sequence[str]) -> int:
    """The lowest block (layer) any of the hook points `names` sits in.

    0 when one of them is not inside a block (embeddings, the final norm): nothing is reused.
    """
    layers = []
    for name in names:
        parts = name.split(".")
        if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
            return 0
        layers.append(int(parts[1]))
    return min(layers, default=0)


def layer_list(model: HookedModel) -> tuple[torch.nn.Module, str] | None:
    """Where the Hugging Face model holds the Bridge's blocks: ``(parent module, attribute)``."""
    blocks = getattr(model, "blocks", None)
    hf = getattr(model, "original_model", None)
    if blocks is None or hf is None or len(blocks) == 0:
        return None
    for name, module in hf.named_modules():
        same = isinstance(module, torch.nn.ModuleList) and len(module) == len(blocks)
        if same and name and all(a is b for a, b in zip(module, blocks, strict=True)):
            parent, _, attribute = name.rpartition(".")
            return hf.get_submodule(parent), attribute
    return None


@contextlib.contextmanager
def blocks_from(model: HookedModel, layer: int) -> Iterator[None]:
    """Inside, the Hugging Face model holds only its decoder layers from `layer` on.

    The Bridge's own ``blocks`` (the same module list) stays whole, so its ``start_at_layer``
    still finds block `layer` by its index and injects the residual there.
    """
    found = layer_list(model)
    if found is None:
        raise IncompatibleModelError(
            f"{type(model).__name__} has no decoder-layer list to start part-way through"
        )
    parent, attribute = found
    whole = getattr(parent, attribute)
    setattr(parent, attribute, torch.nn.ModuleList(list(whole)[layer:]))
    try:
        yield
    finally:
        setattr(parent, attribute, whole)


@contextlib.contextmanager
def cache_seen(model: HookedModel) -> Iterator[None]:
    """Inside, each attention block finds the generation cache where it looks for it.

    transformers 5.x's decoder layers hand the cache to attention as ``cache=``; the attention
    bridges of transformer-lens 4.3 read ``past_key_values=`` (or ``layer_past=``) and, finding
    neither, silently attend to the new positions alone. A forward pre-hook (torch's own) passes
    ``cache`` on under the name the bridge reads, for the duration of the block.
    """

    def hand_over(module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> Any:
        if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
            return args, {**kwargs, "past_key_values": kwargs["cache"]}
        return None

    blocks = getattr(model, "blocks", None) or []
    attention: list[Any] = [getattr(block, "attn", None) for block in blocks]
    if not attention or any(a is None for a in attention):
        raise IncompatibleModelError(f"{type(model).__name__} has no attention blocks to cache")
    handles = [a.register_forward_pre_hook(hand_over, with_kwargs=True) for a in attention]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
