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

from ascale import _tl
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
        AscaleError: an empty prompt, a `beta` that is NaN or infinite, or `max_new_tokens`
            below 1.

    Example:
        >>> dyn = ascale.DynamicScalars(model, sites="mlp_out")
        >>> for beta in (-1.0, 0.0, 1.0):
        ...     print(beta, generate(model, dyn, "Rome is the capital of France. Rome is in",
        ...                          beta=beta, max_new_tokens=8))
        -1.0 Rome is the capital of France. Rome is in...
        0.0 Rome is the capital of France. Rome is in...
        1.0 Rome is the capital of France. Rome is in...
    """
    if max_new_tokens < 1:
        raise AscaleError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not prompt:
        raise AscaleError("the prompt is empty; give the text to continue")
    if not math.isfinite(beta):
        raise AscaleError(f"beta must be a finite number, got {beta}")
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
