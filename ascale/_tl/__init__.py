"""The one place that talks to TransformerLens: run, capture, tokenize, hook points, and the
parts of a pass that can be computed once (`Prefix`: blocks; `Shared`: positions; in `_blocks`),
the edge-level passes of MIB's graph (`masked_run`, `source_outputs`, `edge_gradients` in
`_edges`; grouped-query models ungrouped in `_ungroup`), and decoding with a KV cache, many
prompts a batch (`decode` in `_generate`, on the plain Hugging Face model of `_plain` where
it reproduces the Bridge).

Everything else in `ascale` goes through the functions here (`attach`, `run`, `capture`,
`tokenize`, `hook_names`, `dims`, `first_device`), written against the hook-point interface
(`ascale._types.HookedModel`: `hooks()`, `hook_dict`, `cfg`, `to_tokens`), so a
`TransformerBridge` (transformer-lens 4.x) and an older `HookedTransformer` both work. Loading
and the model cache live in `ascale.loading`.
"""

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from ascale._tl._blocks import Prefix, Shared, first_block
from ascale._tl._edges import edge_gradients, masked_run, source_outputs
from ascale._tl._generate import Pick, decode
from ascale._tl._reuse import (
    prefix_layers,
    prefix_of,
    prefix_supported,
    shared_of,
    shared_supported,
)
from ascale._tl._run import HookFn, attach, capture, run
from ascale._tl._ungroup import is_grouped, split_inputs, ungrouped
from ascale._types import HookedModel
from ascale.errors import IncompatibleModelError

__all__ = [
    "HookFn",
    "Pick",
    "Prefix",
    "Shared",
    "answer_token_ids",
    "attach",
    "capture",
    "check_same_shape",
    "decode",
    "dims",
    "edge_gradients",
    "first_block",
    "first_device",
    "hook_names",
    "is_grouped",
    "masked_run",
    "output_device",
    "prefix_layers",
    "prefix_of",
    "prefix_supported",
    "run",
    "shared_of",
    "shared_supported",
    "source_outputs",
    "split_inputs",
    "str_tokens",
    "tokenize",
    "ungrouped",
]

# ---- the hook-point interface: everything else in ascale calls these ----


def dims(model: HookedModel) -> dict[str, Any]:
    """The model's name and shape: what a saved intervention must match."""
    cfg = model.cfg
    return {
        "model_name": str(getattr(cfg, "model_name", "unknown")),
        "n_layers": int(cfg.n_layers),
        "n_heads": int(cfg.n_heads),
        "d_model": int(cfg.d_model),
        "d_head": int(cfg.d_head),
        "d_vocab": int(cfg.d_vocab),
    }


def check_same_shape(
    saved: dict[str, Any], here: dict[str, Any], what: str = "this intervention"
) -> None:
    """Raise `IncompatibleModelError` unless two `dims()` agree on every shape entry."""
    keys = ("n_layers", "n_heads", "d_model", "d_head", "d_vocab")
    mismatched = {k: (saved[k], here[k]) for k in keys if saved[k] != here[k]}
    if mismatched:
        detail = ", ".join(f"{k}: saved {a}, model {b}" for k, (a, b) in mismatched.items())
        raise IncompatibleModelError(
            f"{what} was trained on {saved['model_name']!r}, which does not match "
            f"{here['model_name']!r} ({detail})"
        )


def first_device(model: HookedModel) -> torch.device:
    """Where the model's first parameter (its embeddings, where the tokens go) lives.

    Weights offloaded through a device map sit on ``meta`` between uses; they are skipped.
    """
    placed = (p.device for p in model.parameters() if p.device.type != "meta")
    return next(placed, torch.device(getattr(model.cfg, "device", None) or "cpu"))


def output_device(model: HookedModel) -> torch.device:
    """Where the logits come out: the model's device, or, for a model split over devices
    (``device_map``), the device of its output embedding (the last layer's)."""
    hf: Any = getattr(model, "original_model", None)
    if getattr(hf, "hf_device_map", None) and hasattr(hf, "get_output_embeddings"):
        device = torch.device(hf.get_output_embeddings().weight.device)
        if device.type != "meta":  # offloaded to CPU or disk: computed on cfg.device
            return device
    return torch.device(getattr(model.cfg, "device", None) or "cpu")


def hook_names(model: HookedModel) -> list[str]:
    """Every hook point name the model exposes."""
    return list(model.hook_dict)


def tokenize(
    model: HookedModel, prompts: Sequence[str]
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    """Token ids right-padded to the longest prompt, and each prompt's length.

    Each prompt is tokenised on its own, exactly as the model would see it alone.
    """
    rows = [model.to_tokens(p)[0].cpu() for p in prompts]
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    pad_id = model.tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else int(pad_id)
    tokens = pad_sequence(rows, batch_first=True, padding_value=pad_id)
    return tokens, lengths


def answer_token_ids(model: HookedModel, answer: str) -> list[int]:
    """The token ids of an answer string, as it would follow the prompt (no BOS)."""
    return [int(t) for t in model.to_tokens(answer, prepend_bos=False)[0]]


def str_tokens(model: HookedModel, tokens: Int[Tensor, " pos"]) -> list[str]:
    """Each token id as its string."""
    return [model.tokenizer.decode([int(t)]) for t in tokens]
