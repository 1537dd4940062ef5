"""Computing what a pass can skip, once: `prefix_of` (the residual entering a block) and
`shared_of` (the keys and values of the first positions), each checked per model
(`prefix_supported`, `shared_supported`) to reproduce the full forward pass."""

import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ascale._tl._blocks import Prefix, Shared, blocks_from, cache_seen, layer_list
from ascale._tl._run import capture, keeps_logits, run
from ascale._types import HookedModel

__all__ = ["prefix_layers", "prefix_of", "prefix_supported", "shared_of", "shared_supported"]


def prefix_of(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    layer: int,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    *,
    batch_size: int = 64,
) -> Prefix:
    """The clean residual stream entering block `layer`, for every row of `tokens`.

    Hooks already attached act on it (attach none below `layer`). Layer 0, or a model where
    starting part-way does not reproduce the full forward (`prefix_supported`), gives
    ``Prefix(0, ...)``: `run` then runs the whole model.
    """
    layer = int(layer)
    if layer <= 0 or not prefix_supported(model, layer):
        return Prefix(0, torch.zeros((*tokens.shape, 0)))
    parts = _resid_before(model, tokens, layer, attention_mask, batch_size)
    return Prefix(layer, torch.cat(list(parts)))


def _resid_before(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    layer: int,
    attention_mask: Int[Tensor, "batch pos"] | None,
    batch_size: int,
) -> Iterator[Float[Tensor, "rows pos d_model"]]:
    """The residual entering block `layer`, a batch at a time (the forward stops there)."""
    device = getattr(model.cfg, "device", None) or "cpu"
    with torch.no_grad():
        for start in range(0, len(tokens), batch_size):
            rows = slice(start, start + batch_size)
            kwargs: dict[str, Any] = {}
            if attention_mask is not None and not bool(attention_mask[rows].all()):
                kwargs["attention_mask"] = attention_mask[rows].to(device)
            yield model(tokens[rows].to(device), stop_at_layer=layer, **kwargs).detach()


_PREFIX_OK: weakref.WeakKeyDictionary[Any, dict[int, bool]] = weakref.WeakKeyDictionary()


def prefix_supported(model: HookedModel, layer: int) -> bool:
    """Whether running from block `layer` reproduces `model`'s full forward (checked once).

    A Hugging Face model that looks a layer's settings up by its index in the stack (Gemma 3
    reads ``config.layer_types[i]``: sliding or full attention, local or global rotary) would
    run the upper blocks with the lower blocks' settings. Refused when the per-layer types do
    not repeat with that shift; otherwise the logits of a short prompt are compared both ways.
    """
    return layer in prefix_layers(model, [layer])


def prefix_layers(model: HookedModel, layers: Sequence[int]) -> list[int]:
    """The `layers` a forward pass can start at (`prefix_supported`), checked together: one full
    forward of a short prompt, then one partial forward per layer not checked before."""
    checked = _PREFIX_OK.setdefault(model, {})
    todo = sorted({int(layer) for layer in layers} - set(checked))
    if todo:
        checked.update(_check_prefix(model, todo))
    return [layer for layer in layers if checked[int(layer)]]


def _check_prefix(model: HookedModel, layers: Sequence[int]) -> dict[int, bool]:
    n_layers = int(model.cfg.n_layers)
    ok = {layer: 0 < layer < n_layers for layer in layers}
    if layer_list(model) is None:
        return dict.fromkeys(layers, False)
    hf_config = getattr(getattr(model, "original_model", None), "config", None)
    text_config = getattr(hf_config, "text_config", None) or hf_config
    types = list(getattr(text_config, "layer_types", None) or [])
    for layer in layers:
        if types and types[layer:] != types[: len(types) - layer]:
            ok[layer] = False
    wanted = [layer for layer in layers if ok[layer]]
    if not wanted:
        return ok
    vocab = int(model.cfg.d_vocab)
    tokens = torch.arange(1, 9).remainder(vocab - 1).add(1)[None].repeat(2, 1)
    tokens[1] = tokens[1].flip(0)
    names = [f"blocks.{layer}.hook_resid_pre" for layer in wanted]
    try:
        with torch.no_grad():
            full, resid = capture(model, tokens, names)
    except Exception:  # any failure means: run the whole model
        return dict.fromkeys(layers, False)
    scale = full.abs().max().clamp_min(1.0)
    for layer, name in zip(wanted, names, strict=True):
        try:
            with torch.no_grad(), blocks_from(model, layer):
                part = model(resid[name], start_at_layer=layer)
            ok[layer] = bool(((full - part).abs().max() / scale) < 1e-4)
        except Exception:  # any failure means: run the whole model
            ok[layer] = False
    return ok


# ---- shared positions: run only the positions an edit can change ----


def shared_of(
    model: HookedModel, tokens: Int[Tensor, "batch pos"], n: int, *, batch_size: int = 64
) -> Shared | None:
    """The attention keys and values of every row's first `n` positions (see `Shared`).

    Hooks already attached act on them (attach none that edits those positions). ``None``
    where there is nothing to share (``n < 1``, or no position after it) or where the model
    does not run from a cache as from the full prompt (`shared_supported`): run it whole.
    """
    n = int(n)
    if not 0 < n < tokens.shape[1] or not shared_supported(model):
        return None
    parts = [
        _keys_values(model, tokens[i : i + batch_size, :n])
        for i in range(0, len(tokens), batch_size)
    ]
    keys, values = (
        tuple(torch.cat(layer) for layer in zip(*side, strict=True))
        for side in zip(*parts, strict=True)
    )
    return Shared(n, keys, values)


def _keys_values(
    model: HookedModel, tokens: Int[Tensor, "batch pos"]
) -> tuple[list[Tensor], list[Tensor]]:
    from transformers import DynamicCache

    hf: Any = getattr(model, "original_model", None)
    cache = DynamicCache(config=hf.config)
    kwargs: dict[str, Any] = {"cache": cache, "use_cache": True}
    hf_class: Any = type(hf)
    if keeps_logits(hf_class):  # the logits are not needed: keep one column
        kwargs["logits_to_keep"] = torch.arange(tokens.shape[1] - 1, tokens.shape[1])
    with torch.no_grad(), cache_seen(model):
        model(tokens.to(getattr(model.cfg, "device", None) or "cpu"), **kwargs)
    layers: list[Any] = list(cache.layers)
    return [layer.keys.detach() for layer in layers], [layer.values.detach() for layer in layers]


_SHARED_OK: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def shared_supported(model: HookedModel) -> bool:
    """Whether running the later positions of a prompt from the earlier ones' keys and values
    reproduces the full forward on `model` (the last position's logits of two short prompts
    compared both ways; checked once per model)."""
    if model not in _SHARED_OK:
        _SHARED_OK[model] = _check_shared(model)
    return _SHARED_OK[model]


def _check_shared(model: HookedModel) -> bool:
    if getattr(model, "original_model", None) is None:
        return False
    vocab = int(model.cfg.d_vocab)
    tokens = torch.arange(1, 9).remainder(vocab - 1).add(1)[None].repeat(2, 1)
    tokens[1] = tokens[1].flip(0)
    try:
        with torch.no_grad():
            full = run(model, tokens, last_only=True)
            keys, values = _keys_values(model, tokens[:, :3])
            part = run(model, tokens, last_only=True, shared=Shared(3, tuple(keys), tuple(values)))
    except Exception:  # any failure means: run the whole prompt
        return False
    scale = full.abs().max().clamp_min(1.0)
    return part.shape == full.shape and bool(((full - part).abs().max() / scale) < 1e-4)
