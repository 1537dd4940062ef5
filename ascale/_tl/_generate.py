"""Decoding through the Bridge with a working KV cache, many prompts in one batch (`decode`).

TransformerLens 4.3's own ``generate`` on a TransformerBridge with transformers 5.x runs its
cached steps against an empty cache (the attention bridges read the cache under a name the
decoder layers no longer pass), so ``ascale`` decodes here: a Hugging Face ``DynamicCache``
handed over by `cache_seen` (as the shared-position passes do), prompts left-padded with an
attention mask (the Bridge derives each row's positions from it), and only the last position's
logits computed. Each step then costs one token per row, not the whole sequence. A model that
does not run from a cache as from the full prompt (`shared_supported`) is decoded by
recomputing the sequence each step, which is exact everywhere.
"""

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ascale._tl._blocks import cache_seen
from ascale._tl._plain import plain, plain_hooks, plain_supported
from ascale._tl._reuse import shared_supported
from ascale._tl._run import HookFn, attach, keeps_logits
from ascale._types import HookedModel
from ascale.errors import AscaleError

__all__ = ["Pick", "decode", "left_padded"]

#: chooses each row's next token from its logits, ``[batch, d_vocab] -> [batch]``
Pick = Callable[[Float[Tensor, "batch d_vocab"]], Int[Tensor, " batch"]]


def left_padded(
    rows: Sequence[Int[Tensor, " _pos"]], pad_id: int
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Token rows padded on the left to the longest, and the attention mask (1 on real tokens).

    Left, so that every row's last real token is the last column and each new token is
    appended in the same column for all rows.
    """
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, width - len(row) :] = row
        mask[i, width - len(row) :] = 1
    return tokens, mask


def decode(
    model: HookedModel,
    rows: Sequence[Int[Tensor, " _pos"]],
    *,
    max_new_tokens: int,
    pick: Pick,
    hooks: Sequence[tuple[str, HookFn]] = (),
    stop_ids: Sequence[int] = (),
    use_cache: bool = True,
    cause: str = "",
) -> list[list[int]]:
    """The new tokens of each row, `max_new_tokens` at most, a row ending at a token in
    `stop_ids` (kept); `hooks` attached throughout (an intervention's, or none).

    All rows run as one batch: a row's tokens equal its tokens alone (left padding, masked),
    and cached steps equal recomputing the sequence, to float rounding (tested greedy, tiny
    models and SmolLM2). `use_cache=False` recomputes the sequence each step (the oracle).

    Raises:
        AscaleError: logits that are NaN or infinite (`cause`: what to change).
    """
    pad_id = int(getattr(model.tokenizer, "pad_token_id", None) or 0)
    tokens, mask = left_padded(rows, pad_id)
    device = getattr(model.cfg, "device", None) or "cpu"
    tokens, mask = tokens.to(device), mask.to(device)
    step = _stepper(model, [name for name, _ in hooks], use_cache)
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    done = torch.zeros(len(rows), dtype=torch.bool, device=device)
    new: list[Tensor] = []
    state: dict[str, Any] = {}
    with torch.no_grad(), _hooked(model, hooks, step):
        logits = step(model, tokens, mask, state)
        for k in range(max_new_tokens):
            _check_finite(logits, k, cause)
            nxt = torch.where(done, pad_id, pick(logits.float()))
            new.append(nxt)
            done = done | torch.isin(nxt, stops)
            if bool(done.all()) or len(new) == max_new_tokens:
                break
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)  # a done row: ignored
            logits = step(model, tokens, mask, state)
    return _until_stop(torch.stack(new, dim=1).tolist(), set(stop_ids))


def _check_finite(logits: Tensor, k: int, cause: str) -> None:
    if not bool(torch.isfinite(logits).all()):
        raise AscaleError(
            f"the logits before new token {k + 1} hold NaN or infinite values; {cause}".rstrip("; ")
        )


Step = Callable[[HookedModel, Tensor, Tensor, dict[str, Any]], Tensor]


def _stepper(model: HookedModel, names: list[str], use_cache: bool) -> Step:
    """The fastest exact step: the plain Hugging Face model with a cache where the hooks have
    a place there (`plain`), else the Bridge with a cache, else the Bridge recomputing."""
    if use_cache and plain_hooks(names) and plain_supported(model):
        return _plain_step
    return _cached_step if use_cache and shared_supported(model) else _full_step


def _hooked(
    model: HookedModel, hooks: Sequence[tuple[str, HookFn]], step: Step
) -> contextlib.AbstractContextManager[Any]:
    if step is _plain_step:
        return plain(model, hooks)
    stack = contextlib.ExitStack()
    stack.enter_context(attach(model, hooks))
    if step is _cached_step:
        stack.enter_context(cache_seen(model))
    return stack


def _plain_step(
    model: HookedModel, tokens: Tensor, mask: Tensor, state: dict[str, Any]
) -> Float[Tensor, "batch d_vocab"]:
    """`_cached_step` on the plain model, each row's positions counted from its first real
    token (as Hugging Face's ``generate`` does for left padding; the Bridge derives them)."""
    fresh, kwargs = _unseen(model, tokens, mask, state)
    kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp_min(0)[:, -fresh.shape[1] :]
    hf: Any = getattr(model, "original_model", None)
    logits: Tensor = hf(input_ids=fresh, **kwargs).logits
    return logits[:, -1]


def _cached_step(
    model: HookedModel, tokens: Tensor, mask: Tensor, state: dict[str, Any]
) -> Float[Tensor, "batch d_vocab"]:
    """The next-token logits, feeding only the tokens the cache has not seen."""
    fresh, kwargs = _unseen(model, tokens, mask, state)
    logits: Tensor = model(fresh, **kwargs)
    return logits[:, -1]


def _unseen(
    model: HookedModel, tokens: Tensor, mask: Tensor, state: dict[str, Any]
) -> tuple[Tensor, dict[str, Any]]:
    """The tokens the cache in `state` has not seen (a new ``DynamicCache`` at the first
    step), and the keyword arguments of a cached pass over them: the cache, the last
    position's logits, and the mask of cached and new positions where there is padding."""
    from transformers import DynamicCache

    if "cache" not in state:
        hf: Any = getattr(model, "original_model", None)
        state["cache"], state["seen"] = DynamicCache(config=hf.config), 0
    fresh = tokens[:, state["seen"] :]
    state["seen"] = tokens.shape[1]
    kwargs: dict[str, Any] = {"cache": state["cache"], "use_cache": True}
    kwargs.update(_last_only(model, fresh.shape[1], fresh.device))
    if not bool(mask.all()):
        kwargs["attention_mask"] = mask
    return fresh, kwargs


def _full_step(
    model: HookedModel, tokens: Tensor, mask: Tensor, state: dict[str, Any]
) -> Float[Tensor, "batch d_vocab"]:
    """The next-token logits, recomputing the whole sequence."""
    kwargs = _last_only(model, tokens.shape[1], tokens.device)
    if not bool(mask.all()):
        kwargs["attention_mask"] = mask
    logits: Tensor = model(tokens, **kwargs)
    return logits[:, -1]


def _last_only(model: HookedModel, n: int, device: torch.device) -> dict[str, Any]:
    """Hugging Face's ``logits_to_keep`` for the last of `n` positions, where the model has it
    (an index tensor: an int slices a view that runs 15x slower on CPU, see `run`)."""
    hf_class: Any = type(getattr(model, "original_model", None))
    if not keeps_logits(hf_class):
        return {}
    return {"logits_to_keep": torch.arange(n - 1, n, device=device)}


def _until_stop(rows: list[list[int]], stops: set[int]) -> list[list[int]]:
    """Each row up to and including its first stop token (the padding after it dropped)."""
    out = []
    for row in rows:
        end = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
        out.append(row[:end])
    return out
