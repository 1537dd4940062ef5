"""Generating text with an intervention applied, under the ``beta`` dial: one prompt or many,
one ``beta`` or several, in batches with a KV cache (`generate`, `GenerationResult`).

Position-tied interventions (`ActivationScalars`, `SteeringVectors` with ``positions="all"`` or a
list) act on the prompt positions they were trained for and leave every generated token alone;
the prompts must have the training length. `DynamicScalars` and ``positions="shared"`` act on
every position, the prompt's and each newly generated token's.

Every (prompt, ``beta``) pair is a row of one batch (``beta`` per row), so a table of prompts at
``beta`` -1, 0, +1 costs one batched generation, and each step feeds one new token per row
through the KV cache (`ascale._tl.decode`). A row's tokens equal its tokens generated alone,
and with the cache equal recomputing the sequence (greedy; tested on every kind).
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
import torch
from tqdm.auto import tqdm

from ascale import _tl
from ascale._checks import finite, real, whole
from ascale._rows import short
from ascale._types import HookedModel
from ascale.data import ContrastSet
from ascale.errors import AscaleError, PromptLengthError
from ascale.interventions import Intervention

__all__ = ["Generated", "GenerationResult", "generate"]

FirstToken = Literal["correct", "wrong", "other"]


@dataclass(frozen=True)
class Generated:
    """One prompt's continuation at one ``beta``.

    Attributes:
        prompt: the prompt as given.
        beta: the dial (``0``: the clean model).
        text: the generated text alone (decoded new tokens; the prompt not repeated).
        tokens: the new token ids (ending at end-of-text, where it came).
        correct: the row's correct answer, where the prompts carry answers.
        wrong: the row's wrong answer, likewise.
        first: whether the first new token is the ``"correct"`` answer's first token, the
            ``"wrong"`` one's, or ``"other"``; ``None`` without answers.
    """

    prompt: str
    beta: float
    text: str
    tokens: tuple[int, ...]
    correct: str | None = None
    wrong: str | None = None
    first: FirstToken | None = None


@dataclass(frozen=True)
class GenerationResult:
    """Continuations, one row per prompt and ``beta`` (prompt-major: every ``beta`` of the
    first prompt, then the second's), with the settings that made them in `info`."""

    rows: tuple[Generated, ...]
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Generated:
        return self.rows[i]

    def to_frame(self) -> pd.DataFrame:
        """One row per prompt and ``beta``: the fields of `Generated` as columns."""
        return pd.DataFrame([vars(r) for r in self.rows], columns=list(Generated.__annotations__))

    def to_records(self) -> list[dict[str, Any]]:
        """The rows as JSON-ready dicts (token ids as lists)."""
        return [{**vars(r), "tokens": list(r.tokens)} for r in self.rows]

    def texts(self, beta: float) -> list[str]:
        """The continuations at `beta`, in prompt order."""
        return [r.text for r in self.rows if r.beta == beta]

    def first_rates(self) -> dict[float, dict[str, float]]:
        """Per ``beta``, the share of prompts whose first new token is the correct answer, the
        wrong one or neither (rows with answers only; empty without)."""
        frame = self.to_frame().dropna(subset=["first"])
        shares = frame.groupby("beta")["first"].value_counts(normalize=True)
        return {
            float(b): {k: float(shares.get((b, k), 0.0)) for k in ("correct", "wrong", "other")}
            for b in frame["beta"].unique()
        }


def generate(
    model: HookedModel,
    intervention: Intervention | None,
    prompts: str | Sequence[str] | ContrastSet,
    *,
    beta: float | Sequence[float] = 1.0,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    batch_size: int = 32,
    use_cache: bool = True,
    stop_at_eos: bool = True,
    progress: bool = False,
) -> "str | GenerationResult":
    """The text `model` writes after each prompt with `intervention` applied at each `beta`.

    Greedy by default, so the same call gives the same text, and ``beta=0`` (or
    ``intervention=None``) gives exactly the clean model's text.

    Args:
        model: the model the intervention was trained on.
        intervention: the intervention to apply, or ``None`` for the clean model.
        prompts: one prompt, a list of prompts (any lengths), or a `ContrastSet` (its rows'
            answers then say which answer each continuation starts with). For a position-tied
            intervention every prompt must have the training length.
        beta: the steering dial (``+1`` towards the wrong answer, ``-1`` towards the correct),
            or several: every prompt is continued at each.
        max_new_tokens: at most this many tokens are added (a row stops at end-of-text).
        do_sample: sample instead of taking the most likely token, with `temperature`,
            `top_k` and `top_p` (Hugging Face's logits warpers) and `seed`.
        batch_size: rows (prompt and ``beta`` pairs) generated together.
        use_cache: feed one new token a step through the KV cache (``False`` recomputes the
            sequence each step: the same text, slower; the oracle of the tests).
        stop_at_eos: end a row at the end-of-text token (``False``: always `max_new_tokens`).
        progress: a progress bar over the batches.

    Returns:
        For one prompt string and one ``beta``, the prompt and its continuation (a string, as
        ``model.generate`` gives it); otherwise a `GenerationResult`, a row per prompt and beta.

    Raises:
        PromptLengthError: a position-tied intervention and a prompt of another length.
        AscaleError: an empty prompt or list, a `beta` that is not finite, `max_new_tokens`
            not a whole number of 1 or more, a prompt and its new tokens past the model's
            context window, or an intervention whose parameters hold NaN or infinite values.

    Example:
        >>> table = generate(model, ascale.DynamicScalars(model, sites="mlp_out"),
        ...                  ["Rome is in"], beta=[-1.0, 0.0, 1.0], max_new_tokens=8)
        >>> [row.beta for row in table.rows], len({row.text for row in table.rows})  # identity
        ([-1.0, 0.0, 1.0], 1)
    """
    one = isinstance(prompts, str) and not isinstance(beta, Sequence)
    data = prompts if isinstance(prompts, ContrastSet) else None
    texts = _prompts(prompts)
    betas = _betas(beta)
    _check_sizes(max_new_tokens, batch_size, temperature, top_k, top_p)
    rows = [model.to_tokens(p, truncate=False)[0].cpu() for p in texts]
    _check_lengths(model, intervention, texts, rows, max_new_tokens)
    pairs, start = [(i, b) for i in range(len(texts)) for b in betas], time.perf_counter()
    decode: dict[str, Any] = {"max_new_tokens": max_new_tokens, "use_cache": use_cache,
              "pick": _picker(do_sample, temperature, top_k, top_p, seed),
              "stop_ids": _stop_ids(model) if stop_at_eos else [],
              "cause": _cause(intervention)}  # fmt: skip
    new: list[list[int]] = []
    for lo in tqdm(range(0, len(pairs), batch_size), desc="generate", disable=not progress):
        chunk = pairs[lo : lo + batch_size]
        hooks = [] if intervention is None else _hooks(model, intervention, [b for _, b in chunk])
        new += _tl.decode(model, [rows[i] for i, _ in chunk], hooks=hooks, **decode)
    if one:
        return _full_text(model, rows[0], new[0])
    info = {"n_prompts": len(texts), "betas": betas, "max_new_tokens": max_new_tokens,
            "do_sample": do_sample, "seed": seed, "use_cache": use_cache,
            "stop_at_eos": stop_at_eos, "wall_s": time.perf_counter() - start}  # fmt: skip
    return GenerationResult(
        tuple(_row(model, texts, data, p, t) for p, t in zip(pairs, new, strict=True)), info
    )


def _cause(intervention: Intervention | None) -> str:
    if intervention is None:
        return "the clean model itself overflows here"
    return "beta or the intervention's parameters overflow float32 here: lower |beta|"


def _hooks(model: HookedModel, intervention: Intervention, betas: list[float]) -> list[Any]:
    _tl.check_same_shape(intervention.dims, _tl.dims(model))
    beta = torch.tensor(betas) if len(set(betas)) > 1 else betas[0]
    return intervention.hooks(beta)


def _row(
    model: HookedModel, texts: list[str], data: ContrastSet | None, pair: tuple[int, float],
    new: list[int],
) -> Generated:  # fmt: skip
    i, beta = pair
    text = model.tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    if data is None:
        return Generated(texts[i], beta, text, tuple(new))
    first: FirstToken = "other"
    if new and new[0] == int(data.correct_ids[i]):
        first = "correct"
    elif new and new[0] == int(data.wrong_ids[i]):
        first = "wrong"
    return Generated(texts[i], beta, text, tuple(new), data.correct[i], data.wrong[i], first)


def _full_text(model: HookedModel, prompt: torch.Tensor, new: list[int]) -> str:
    """The prompt and its continuation as ``model.generate`` returns them (no BOS)."""
    start = 1 if getattr(model.cfg, "default_prepend_bos", True) else 0
    ids = torch.cat([prompt[start:], torch.tensor(new, dtype=torch.long)])
    return str(model.tokenizer.decode(ids, clean_up_tokenization_spaces=False))


def _stop_ids(model: HookedModel) -> list[int]:
    eos = getattr(model.tokenizer, "eos_token_id", None)
    return [] if eos is None else [int(eos)]


def _picker(
    do_sample: bool, temperature: float, top_k: int | None, top_p: float | None, seed: int
) -> _tl.Pick:
    """Each row's next token: the most likely, or sampled through Hugging Face's warpers."""
    if not do_sample:
        return lambda logits: logits.argmax(-1)
    from transformers import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k is not None:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p is not None:
        warpers.append(TopPLogitsWarper(top_p))
    generator = torch.Generator().manual_seed(seed)

    def sample(logits: torch.Tensor) -> torch.Tensor:
        probs = warpers(None, logits.cpu()).softmax(-1)  # type: ignore[arg-type]
        return torch.multinomial(probs, 1, generator=generator)[:, 0].to(logits.device)

    return sample


# ---- checks: what generation would get wrong silently or fail on deep inside ----


def _prompts(prompts: Any) -> list[str]:
    if isinstance(prompts, ContrastSet):
        return list(prompts.prompts)
    texts = [prompts] if isinstance(prompts, str) else prompts
    if not isinstance(texts, Sequence) or not texts:
        raise AscaleError(
            f"prompts must be a string, a non-empty list of strings or a ContrastSet, got "
            f"{type(prompts).__name__} {short(prompts)}"
        )
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text:
            raise AscaleError(
                f"prompt {i} must be a non-empty string, got {type(text).__name__} {short(text)}"
            )
    return list(texts)


def _betas(beta: Any) -> list[float]:
    values = list(beta) if isinstance(beta, Sequence) and not isinstance(beta, str) else [beta]
    if not values:
        raise AscaleError("beta is an empty list; give one number or several")
    return [real("beta", float(v) if isinstance(v, torch.Tensor) and v.numel() == 1 else v)
            for v in values]  # fmt: skip


def _check_sizes(
    new: Any, batch_size: Any, temperature: Any, top_k: Any, top_p: Any
) -> None:  # fmt: skip
    whole("max_new_tokens", new)
    whole("batch_size", batch_size)
    real("temperature", temperature, low=0.0, open_low=True)
    if top_k is not None:
        whole("top_k", top_k)
    if top_p is not None:
        real("top_p", top_p, low=0.0, high=1.0, open_low=True)


def _check_lengths(
    model: HookedModel, intervention: Intervention | None, texts: list[str],
    rows: list[torch.Tensor], new: int,
) -> None:  # fmt: skip
    n_ctx = getattr(model.cfg, "n_ctx", None)
    for text, row in zip(texts, rows, strict=True):
        n = len(row)
        if n_ctx is not None and n >= n_ctx:
            raise AscaleError(
                f"the prompt {short(text, 40)} is {n} tokens, at or past the model's context "
                f"window of {n_ctx}: no token can follow it; shorten the prompt"
            )
        if n_ctx is not None and n + new > n_ctx:
            raise AscaleError(
                f"the prompt {short(text, 40)} is {n} tokens and max_new_tokens is {new}: "
                f"{n + new} tokens, past the model's context window of {n_ctx}; use "
                f"max_new_tokens <= {n_ctx - n}"
            )
        n_pos = getattr(intervention, "n_pos", None)
        if getattr(intervention, "position_tied", False) and n != n_pos:
            raise PromptLengthError(
                f"{type(intervention).__name__} is tied to prompts of {n_pos} tokens, got "
                f"{n} for {short(text, 40)}; filter with `data.with_length({n_pos})`, or use "
                "positions='shared' or DynamicScalars for prompts of other lengths"
            )
    for name, param in intervention.params.items() if intervention is not None else ():
        cause = "its text would be meaningless (refit it, or load a good save)"
        finite(f"the values of the intervention's parameter {name!r}", param.detach(), cause)
