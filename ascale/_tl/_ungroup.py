"""Grouped-query models, ungrouped: a copy whose key and value weights are repeated per query
head, so each query head has its own key and value input hook (MIB's edge graph needs one per
query head; TransformerLens 4.3's split inputs give one per key/value group). Also
`split_inputs`: the per-head q/k/v input hooks and the MLP input hook, switched on for a pass.

Example:
    >>> ungrouped(model) is model  # the tiny GPT-2 shares no keys
    True
"""

import contextlib
import copy
import weakref
from collections.abc import Iterator
from typing import Any

import torch

from ascale._types import HookedModel
from ascale.errors import IncompatibleModelError

__all__ = ["is_grouped", "split_inputs", "ungrouped"]

_UNGROUPED: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def is_grouped(model: HookedModel) -> bool:
    """Whether the model shares keys and values between query heads (grouped-query attention)."""
    n_kv = getattr(model.cfg, "n_key_value_heads", None)
    return n_kv is not None and int(n_kv) != int(model.cfg.n_heads)


def ungrouped(model: HookedModel) -> HookedModel:
    """The model itself, or for a grouped-query model a copy (made once per model, kept while
    the model lives) whose key and value weights are repeated per query head: the same function,
    with a key and a value input per query head. The copy is checked to give the model's logits;
    it does not follow later edits of the model's weights."""
    if not is_grouped(model):
        return model
    found = _UNGROUPED.get(model)
    if found is None:
        with torch.inference_mode(False), torch.no_grad():  # weights usable with autograd later
            found = _UNGROUPED[model] = _build_ungrouped(model)
    return found


def _build_ungrouped(model: HookedModel) -> HookedModel:
    from transformer_lens.model_bridge import TransformerBridge

    from ascale.loading import quiet

    hf: Any = getattr(model, "original_model", None)
    n_heads, n_kv = int(model.cfg.n_heads), int(model.cfg.n_key_value_heads)
    if hf is None or getattr(hf.config, "num_key_value_heads", None) != n_kv:
        raise IncompatibleModelError(
            f"cannot ungroup {type(model).__name__}: no Hugging Face model with "
            f"num_key_value_heads={n_kv} behind it"
        )
    config = copy.deepcopy(hf.config)
    config.num_key_value_heads = n_heads
    config.tie_word_embeddings = False  # weight processing may have changed one of the two
    with quiet():
        fresh = type(hf)(config)
    state = {k.replace("_original_component.", ""): v for k, v in hf.state_dict().items()}
    want = fresh.state_dict()
    rows = n_kv * int(model.cfg.d_head)
    loaded = {}
    missing = sorted(set(want) - set(state))
    if missing:
        raise IncompatibleModelError(
            f"cannot ungroup {model.cfg.model_name!r}: its weights lack {missing[:3]}"
        )
    for key, target in want.items():
        value = state[key]
        if value.shape != target.shape and value.shape[0] == rows:  # a k or v projection
            grouped = value.reshape(n_kv, -1, *value.shape[1:])
            value = grouped.repeat_interleave(n_heads // n_kv, 0).reshape(target.shape)
        loaded[key] = value
    fresh.load_state_dict(loaded)
    for key in set(state) - set(want):  # a bias weight processing added (centred unembedding)
        owner, _, leaf = key.rpartition(".")
        if leaf == "bias" and f"{owner}.weight" in want:
            module = fresh.get_submodule(owner)
            if getattr(module, "bias", None) is None:
                module.bias = torch.nn.Parameter(state[key].detach().clone())
    device = next(p.device for p in model.parameters())
    fresh.to(device=device, dtype=next(model.parameters()).dtype).eval()
    name = str(getattr(hf.config, "_name_or_path", "") or model.cfg.model_name)
    with quiet():
        copied: Any = TransformerBridge.boot_transformers(
            name, hf_model=fresh, tokenizer=model.tokenizer, dtype=fresh.dtype
        )
    if getattr(model, "compatibility_mode", False):  # weights already processed: hooks only
        copied.enable_compatibility_mode(disable_warnings=True, no_processing=True)
    copied.cfg.default_prepend_bos = model.cfg.default_prepend_bos
    copied.cfg.model_name = model.cfg.model_name
    copied.requires_grad_(False)
    copied.eval()
    _check_same(model, copied)
    return copied  # type: ignore[no-any-return]


def _check_same(model: HookedModel, other: HookedModel) -> None:
    tokens = (torch.arange(8) * 7 + 3).remainder(int(model.cfg.d_vocab))[None]
    device = next(p.device for p in model.parameters())
    with torch.inference_mode():
        a, b = model(tokens.to(device)), other(tokens.to(device))
    gap = float((a - b).abs().max())
    if gap > 1e-4 * max(1.0, float(a.abs().max())):
        raise IncompatibleModelError(
            f"the ungrouped copy of {model.cfg.model_name!r} differs from it by {gap:.3g} in logits"
        )


@contextlib.contextmanager
def split_inputs(model: HookedModel) -> Iterator[None]:
    """Inside, the model gives each head its own query, key and value input hooks and its
    MLPs an input hook (``set_use_split_qkv_input``, ``set_use_hook_mlp_in``); restored after."""
    cfg: Any = model.cfg
    before = (
        bool(getattr(cfg, "use_split_qkv_input", False)),
        bool(getattr(cfg, "use_hook_mlp_in", False)),
    )
    bridge: Any = model
    bridge.set_use_split_qkv_input(True)
    bridge.set_use_hook_mlp_in(True)
    try:
        yield
    finally:
        bridge.set_use_split_qkv_input(before[0])
        bridge.set_use_hook_mlp_in(before[1])
