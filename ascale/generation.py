"""Generating text with an intervention applied, under the ``beta`` dial.

Position-tied interventions (`ActivationScalars`, `SteeringVectors` with ``positions="all"`` or a
list) act on the prompt positions they were trained for and leave every generated token alone;
the prompt must have the training length. `DynamicScalars` and ``positions="shared"`` act on
every position, the prompt's and each newly generated token's (KV-cached steps included).
"""

from __future__ import annotations

from typing import Any

from ascale import models
from ascale.errors import AscaleError
from ascale.interventions import Intervention

__all__ = ["generate"]


def generate(
    model: Any,
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
        **kwargs: passed on to TransformerLens' ``model.generate`` (``temperature``, ...).

    Returns:
        The prompt followed by the generated text.

    Raises:
        PromptLengthError: a position-tied intervention and a prompt of another length.

    Example:
        >>> for beta in (-1.0, 0.0, 1.0):  # doctest: +SKIP
        ...     print(beta, generate(model, dyn, "Rome is the capital of France. Rome is in",
        ...                          beta=beta, max_new_tokens=8))
    """
    if max_new_tokens < 1:
        raise AscaleError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    options = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, **kwargs}
    if intervention is None:
        return models.generate(model, prompt, **options)
    with intervention.applied(model, beta):
        return models.generate(model, prompt, **options)
