"""Forward passes through TransformerLens: `attach` hooks, `run` (logits, optionally of the last
position only, from a `Prefix` of blocks and `Shared` positions), `capture` activations."""

import contextlib
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ascale._tl._blocks import Prefix, Shared, blocks_from, cache_seen
from ascale._types import HookedModel

__all__ = ["HookFn", "attach", "capture", "keeps_logits", "run"]

HookFn = Callable[[Tensor, Any], Tensor]


def attach(
    model: HookedModel, fwd_hooks: Sequence[tuple[str, HookFn]]
) -> contextlib.AbstractContextManager[Any]:
    """TransformerLens' own `hooks()` context manager: hooks go away even if the body raises."""
    return model.hooks(fwd_hooks=list(fwd_hooks))


def run(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    *,
    last_only: bool = False,
    positions: Int[Tensor, " out_pos"] | None = None,
    prefix: Prefix | None = None,
    shared: Shared | None = None,
) -> Float[Tensor, "batch out_pos d_vocab"]:
    """Logits of a forward pass (the mask only when there is padding), on the model's device.

    ``out_pos`` is ``pos``, or 1 with `last_only`: the logits of the last position alone (each
    prompt's next-token logits when there is no right padding), or the columns `positions`
    (ascending; e.g. the answer columns of right-padded prompts of several lengths). A
    TransformerBridge then unembeds only those (Hugging Face's ``logits_to_keep``): on SmolLM2
    the full-vocabulary logits at every position cost a sixth of a training step and most of
    its activation memory, and nothing reads them. Other models compute all and return those.

    With `prefix` (the residual stream entering block ``prefix.layer``, one row per row of
    `tokens`, from `prefix_of`), only the blocks from that layer on run: see `Prefix`. With
    `shared` (the keys and values of every row's first ``shared.n`` positions, from
    `shared_of`), only positions ``shared.n..`` run: see `Shared`; a `prefix` then holds those
    positions only (`Prefix.positions_from`).
    """
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None
    device = getattr(model.cfg, "device", None)
    if device is not None:
        tokens = tokens.to(device)
    kwargs: dict[str, Any] = {}
    hf_class: Any = type(getattr(model, "original_model", None))
    if last_only and positions is not None:
        raise ValueError("pass last_only or positions, not both")
    cached: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if shared is None and prefix is not None:
        shared = prefix.shared
    if shared is not None:
        if attention_mask is not None or positions is not None or len(shared) != len(tokens):
            raise ValueError(
                f"shared positions need unpadded prompts, one row each ({len(shared)} rows "
                f"for {len(tokens)}), and the last position's logits (last_only)"
            )
        tokens = tokens[:, shared.n :]
        hf: Any = getattr(model, "original_model", None)
        kwargs["cache"] = shared.cache(hf.config)
        cached = cache_seen(model)
    if positions is not None:
        positions = positions.to(tokens.device)
    if last_only:
        # an index tensor, not ``1``: Hugging Face slices ``hidden[:, -1:]`` for an int, and a
        # linear layer on that non-contiguous view runs as a broadcast bmm, 15x slower on CPU;
        # made on the device (arange), not copied from the host: a CUDA graph can record it
        n = tokens.shape[1]
        positions = torch.arange(n - 1, n, device=tokens.device)
    kept = positions is not None and keeps_logits(hf_class)
    if kept:
        kwargs["logits_to_keep"] = positions
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask.to(tokens.device)
    if prefix is not None and prefix.layer > 0:
        if prefix.resid.shape[:2] != tokens.shape:
            raise ValueError(
                f"the prefix holds {tuple(prefix.resid.shape[:2])} (rows, positions), the "
                f"tokens {tuple(tokens.shape)}"
            )
        with blocks_from(model, prefix.layer), cached:
            logits: Tensor = model(
                prefix.resid.to(tokens.device), start_at_layer=prefix.layer, **kwargs
            )
    else:
        with cached:
            logits = model(tokens, **kwargs)
    return logits[:, positions] if positions is not None and not kept else logits


@functools.cache
def keeps_logits(hf_class: type) -> bool:
    """Whether a Hugging Face model class can compute the logits of the last position alone."""
    forward = getattr(hf_class, "forward", None)
    return forward is not None and "logits_to_keep" in inspect.signature(forward).parameters


def capture(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    names: Sequence[str],
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    *,
    last_only: bool = False,
) -> tuple[Float[Tensor, "batch out_pos d_vocab"], dict[str, Tensor]]:
    """Logits (as `run` gives them) and the detached activations at hook points `names`.

    Like TransformerLens' ``run_with_cache(names_filter=...)``, through `attach`, so any hooks
    already attached (an intervention) act first and their edits are what gets captured.
    """
    acts: dict[str, Tensor] = {}

    def keep(act: Tensor, hook: Any, name: str) -> Tensor:
        acts[name] = act.detach()
        return act

    hooks = [(n, functools.partial(keep, name=n)) for n in names]
    with attach(model, hooks):
        logits = run(model, tokens, attention_mask, last_only=last_only)
    return logits, acts
