"""Generating text with an intervention applied, under the ``beta`` dial.

Position-tied interventions (`ActivationScalars`, `SteeringVectors` with ``positions="all"`` or a
list) act on the prompt positions they were trained for and leave every generated token alone;
the prompt must have the training length. `DynamicScalars` and ``positions="shared"`` act on
every position, the prompt's and each newly generated token's (KV-cached steps included).

The KV cache stays off: with transformer-lens 4.3's Bridge and transformers 5.x its cached steps
see an empty cache and write degenerate text even for the clean model, so
``use_past_kv_cache=True`` is turned off with an `AscaleWarning` (the test suite tracks the fix
upstream; docs/generation.md).
"""

import math
import warnings
from typing import Any

import torch

from ascale import _tl
from ascale._rows import short
from ascale._types import HookedModel
from ascale.errors import AscaleError, AscaleWarning
from ascale.interventions import Intervention

# False while the Bridge's KV cache is broken (tests/test_generation.py tracks it upstream)
KV_CACHE_WORKS = False

__all__ = ["generate"]


def generate(
    model: HookedModel,
    intervention: Intervention | None,
    prompt: str,
    *,
    beta: float = 1.0,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    **kwargs: Any,
) -> str:
    """The text `model` writes after `prompt` with `intervention` applied at `beta`.

    Greedy by default, so the same call gives the same text, and ``beta=0`` (or
    ``intervention=None``) gives exactly the clean model's text.

    Args:
        model: the model the intervention was trained on.
        intervention: the intervention to apply, or ``None`` for the clean model.
        prompt: one prompt; for a position-tied intervention it must have the training length.
        beta: the steering dial (``+1`` towards the wrong answer, ``-1`` towards the correct).
        max_new_tokens: at most this many tokens are added (generation stops at end-of-text).
        do_sample: sample instead of taking the most likely token.
        **kwargs: passed on to TransformerLens' ``model.generate`` (``temperature``, ...);
            ``use_past_kv_cache=True`` is turned off, with an `AscaleWarning`, while the
            Bridge's cache is broken.

    Returns:
        The prompt followed by the generated text.

    Raises:
        PromptLengthError: a position-tied intervention and a prompt of another length.
        AscaleError: a prompt that is not one non-empty string (call once per prompt), a
            `beta` that is not one finite number, `max_new_tokens` not a whole number of 1 or
            more, prompt and new tokens together past the model's context window, or an
            intervention whose parameters hold NaN or infinite values.

    Example:
        >>> dyn = ascale.DynamicScalars(model, sites="mlp_out")
        >>> for beta in (-1.0, 0.0, 1.0):
        ...     print(beta, generate(model, dyn, "Rome is the capital of France. Rome is in",
        ...                          beta=beta, max_new_tokens=8))
        -1.0 Rome is the capital of France. Rome is in...
        0.0 Rome is the capital of France. Rome is in...
        1.0 Rome is the capital of France. Rome is in...
    """
    beta = _check(model, intervention, prompt, beta, max_new_tokens)
    if kwargs.get("use_past_kv_cache") and not KV_CACHE_WORKS:
        warnings.warn(
            "use_past_kv_cache=True is turned off: the TransformerBridge's KV cache is broken "
            "(cached steps see an empty cache and write degenerate text); generating without it",
            AscaleWarning,
            stacklevel=2,
        )
        kwargs["use_past_kv_cache"] = False
    options = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, **kwargs}
    if intervention is None:
        return _tl.generate_text(model, prompt, **options)
    with intervention.applied(model, beta):
        return _tl.generate_text(model, prompt, **options)


def _check(
    model: HookedModel, intervention: Intervention | None, prompt: Any, beta: Any, new: Any
) -> float:
    """Refuse what generation would get wrong silently or fail on deep inside; `beta` as a
    float."""
    if not isinstance(prompt, str):
        raise AscaleError(
            f"prompt must be one string, got {type(prompt).__name__} {short(prompt)}; "
            "call generate once per prompt"
        )
    if not prompt:
        raise AscaleError("the prompt is empty; give the text to continue")
    if isinstance(new, bool) or not isinstance(new, int) or new < 1:
        raise AscaleError(f"max_new_tokens must be a whole number of 1 or more, got {new!r}")
    if isinstance(beta, torch.Tensor) and beta.numel() == 1:
        beta = float(beta)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta):
        shown = (
            f"a tensor of shape {list(beta.shape)}"
            if isinstance(beta, torch.Tensor)
            else repr(beta)
        )
        raise AscaleError(f"beta must be one finite number, got {shown}")
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx is not None:
        n = int(model.to_tokens(prompt, truncate=False).shape[1])
        if n + new > n_ctx:
            raise AscaleError(
                f"the prompt is {n} tokens and max_new_tokens is {new}: {n + new} tokens, past "
                f"the model's context window of {n_ctx}; use max_new_tokens <= {max(n_ctx - n, 0)}"
            )
    for name, param in intervention.params.items() if intervention is not None else ():
        if not bool(torch.isfinite(param).all()):
            raise AscaleError(
                f"the intervention's parameter {name!r} holds NaN or infinite values; its text "
                "would be meaningless (refit it, or load a good save)"
            )
    return float(beta)
