"""The forward passes `fit` and `evaluate` share, on a `ContrastSet`.

- `answer_logits`: the logits at each prompt's answer position, with an intervention applied;
- `clean_log_probs`: the clean, answer-masked next-token distribution, computed once;
- `clean_prefix` and `prefix_rows`: prefix reuse (`_tl.Prefix`), the clean residual entering
  the intervention's lowest block, computed once and subset with each batch;
- `step_terms`: the loss terms of one training step, both signs of beta in one stacked batch
  (`stack_twice`).

`fit` and `evaluate` call these through the module (``forward.answer_logits(...)``), so a test
or a benchmark that replaces one here (``monkeypatch.setattr(forward, "clean_prefix", ...)``)
changes what both do.
"""

import contextlib

import torch
from jaxtyping import Float
from torch import Tensor

from ascale import _tl
from ascale._checks import SQUARE_MAX
from ascale._types import HookedModel
from ascale.data import ContrastSet
from ascale.errors import AscaleError
from ascale.interventions import Beta, Intervention
from ascale.training.objective import Objective, answer_logit_diff, masked_kl, masked_log_probs

__all__ = [
    "PREFIX_MEMORY",
    "answer_logits",
    "clean_log_probs",
    "clean_prefix",
    "prefix_rows",
    "stack_twice",
    "step_terms",
]

#: The largest clean residual (bytes, float32) `clean_prefix` keeps for prefix reuse.
PREFIX_MEMORY = 2**30


def answer_logits(
    model: HookedModel,
    intervention: Intervention | None,
    batch: ContrastSet,
    beta: Beta,
    prefix: _tl.Prefix | None = None,
) -> Float[Tensor, "batch d_vocab"]:
    """Logits at each prompt's last real token, with `intervention` applied at `beta`.

    ``None`` for `intervention` gives the clean model's. With `prefix` (the batch's clean
    residual entering the intervention's lowest block), only the blocks from there on run
    (`_tl.Prefix`). The logits are float32 on the model's (last) device.

    Example:
        >>> logits = answer_logits(model, scalars, train, 1.0)
        >>> tuple(logits.shape) == (len(train), model.cfg.d_vocab), logits.dtype
        (True, torch.float32)
    """
    start = 0 if prefix is None or prefix.shared is None else prefix.shared.n
    # Only the answer columns are unembedded (`_tl.run`): without right padding (always,
    # for position-tied data) the last one; with it, each length's last real token.
    last_only = bool((batch.lengths == batch.tokens.shape[1]).all())
    columns, where = None, None
    if not last_only:  # the distinct answer columns, and which of them each prompt reads
        columns, where = torch.unique(batch.lengths - 1, return_inverse=True)
    finite: list[Tensor] = []  # per edit, whether it stayed finite
    with contextlib.ExitStack() as context:
        if intervention is not None:
            context.enter_context(intervention.applied(model, beta, start=start))
            finite = context.enter_context(intervention.watch())
        logits = _tl.run(
            model,
            batch.tokens,
            batch.attention_mask,
            last_only=last_only,
            positions=columns,
            prefix=prefix,
        )
    # on the model's (last) device: the loss is computed there too (on a GPU, no copies per
    # step), and in float32 whatever the model's dtype: a bfloat16 logit is exact only to ~0.06
    # at 10 (8 significant bits), too coarse for the hinge margin, and the faithfulness KL sums
    # ~50k tiny terms that bfloat16 would round to 0; the vocabulary row of the answer position
    # alone is cast, so this costs nothing next to the forward pass
    picked = logits[:, -1] if where is None else logits[torch.arange(len(batch)), where]
    if intervention is not None:
        _check_logits(picked, finite, intervention, beta)
    return picked.float()


def _check_logits(
    logits: Tensor, edits: list[Tensor], intervention: Intervention, beta: Beta
) -> None:
    """Refuse NaN or infinite logits, or an edit that overflowed on the way (a layer norm
    can hide it), under `intervention`, naming beta and the parameters' largest magnitude: a
    finite beta or parameter can still overflow float32 once applied. (Skipped while a CUDA
    graph is recorded: the check reads the result back.)"""
    if logits.is_cuda and torch.cuda.is_current_stream_capturing():
        return
    ok = torch.isfinite(logits).all()
    for edit in edits:  # combined on the device, read back once
        ok = ok & edit.to(ok.device)
    if bool(ok):
        return
    largest = max((float(p.detach().abs().max()) for p in intervention.parameters()), default=0.0)
    shown = f"{float(beta.abs().max()):g} (largest)" if isinstance(beta, Tensor) else f"{beta:g}"
    raise AscaleError(
        f"{type(intervention).__name__} at beta={shown} overflows float32 (its largest "
        f"parameter magnitude is {largest:g}): the edited activations or the logits are NaN, "
        f"infinite or beyond {SQUARE_MAX:.3g}, which a layer norm cannot square; use a "
        "smaller beta, or refit the intervention (a lower learning rate)"
    )


def clean_log_probs(
    model: HookedModel, data: ContrastSet, batch_size: int, prefix: _tl.Prefix | None = None
) -> Tensor:
    """The clean, answer-masked next-token log-probabilities of every prompt, computed once.

    Runs `data` in batches of `batch_size` without gradients (but outside inference mode: the
    result enters the autograd graph of later steps), from `prefix` where given.

    Example:
        >>> clean = clean_log_probs(model, train, batch_size=4)
        >>> tuple(clean.shape) == (len(train), model.cfg.d_vocab)
        True
    """
    out = []
    with torch.no_grad():  # not inference_mode: these tensors enter the autograd graph later
        for start in range(0, len(data), batch_size):
            index = torch.arange(start, min(start + batch_size, len(data)))
            batch = data.subset(index)
            logits = answer_logits(model, None, batch, 0.0, prefix_rows(prefix, index, batch))
            ids = (batch.correct_ids.to(logits.device), batch.wrong_ids.to(logits.device))
            out.append(masked_log_probs(logits, *ids))
    return torch.cat(out)


def clean_prefix(
    model: HookedModel, data: ContrastSet, layer: int, batch_size: int, start: int = 0
) -> _tl.Prefix | None:
    """The clean residual entering block `layer` for every prompt of `data`, and the clean
    keys and values of its first `start` positions (`_tl.Shared`; an intervention's
    `first_position`: nothing edits before it).

    ``None`` (the full forward runs instead) at layer 0 and position 0, when the residual
    would take more than `PREFIX_MEMORY` bytes, with padding (no shared positions then), or
    where the model does not support either reuse (`_tl.prefix_supported`,
    `_tl.shared_supported`).

    Example:
        >>> clean_prefix(model, train, 0, batch_size=4) is None  # nothing below block 0
        True
    """
    d_model = int(model.cfg.d_model)
    padded = not bool((data.lengths == data.tokens.shape[1]).all())
    shared = None if padded else _tl.shared_of(model, data.tokens, start, batch_size=batch_size)
    prefix = None
    if layer > 0 and data.tokens.numel() * d_model * 4 <= PREFIX_MEMORY:
        with torch.no_grad():  # not inference_mode: the residual enters the autograd graph
            prefix = _tl.prefix_of(
                model, data.tokens, layer, data.attention_mask, batch_size=batch_size
            )
    if prefix is not None and prefix.layer > 0:
        return _tl.Prefix(prefix.layer, prefix.resid, shared).positions_from(
            0 if shared is None else shared.n
        )
    if shared is None:
        return None
    return _tl.Prefix(0, torch.zeros((len(data), data.n_pos - shared.n, 0)), shared)


def prefix_rows(prefix: _tl.Prefix | None, index: Tensor, batch: ContrastSet) -> _tl.Prefix | None:
    """`prefix` at the rows `batch` was subset at (``data.subset(index)``), trimmed to the
    batch's width (its padding); ``None`` stays ``None``."""
    if prefix is None:
        return None
    rows = prefix.rows(index)
    if rows.shared is not None:  # unpadded: the residual is the batch's width already
        return rows
    return _tl.Prefix(rows.layer, rows.resid[:, : batch.tokens.shape[1]])


def stack_twice(batch: ContrastSet) -> ContrastSet:
    """The batch followed by itself: one forward pass serves both signs of beta.

    Example:
        >>> len(stack_twice(train)) == 2 * len(train)
        True
    """
    return batch.subset(list(range(len(batch))) * 2)


def step_terms(
    model: HookedModel,
    intervention: Intervention,
    batch: ContrastSet,
    clean: Tensor,
    objective: Objective,
    prefix: _tl.Prefix | None = None,
) -> dict[str, Tensor]:
    """The loss terms of one training step on `batch`: `objective` at ``beta = +1`` and ``-1``.

    One forward pass runs the batch twice over (`stack_twice`), the first half at ``+1`` and
    the second at ``-1``. `clean` is the batch's rows of `clean_log_probs`, `prefix` its rows of
    `clean_prefix` (`prefix_rows`). Returns `objective`'s terms (``loss``, ``effectiveness``,
    ``faithfulness``, ``l1``), differentiable with respect to the intervention's parameters,
    and ``flipped``: per prompt, whether its answer changes both ways (the wrong token wins at
    ``+1``, the correct one at ``-1``).

    Example:
        >>> clean = clean_log_probs(model, train, batch_size=4)
        >>> terms = step_terms(model, scalars, train, clean, ascale.Objective())
        >>> sorted(terms), tuple(terms["flipped"].shape) == (len(train),)
        (['effectiveness', 'faithfulness', 'flipped', 'l1', 'loss'], True)
    """
    n = len(batch)
    # where the model's logits come out (the answer ids and the clean distribution go there):
    # its one device, or the last of a model split over devices (``device_map``)
    device = _tl.output_device(model)
    beta = torch.cat([torch.ones(n), -torch.ones(n)]).to(device)
    doubled = stack_twice(batch)
    if prefix is not None:
        prefix = prefix.repeat(2)
    logits = answer_logits(model, intervention, doubled, beta, prefix)
    correct, wrong = doubled.correct_ids.to(device), doubled.wrong_ids.to(device)
    delta = answer_logit_diff(logits, correct, wrong)
    kl = masked_kl(clean.repeat(2, 1), logits, correct, wrong)
    terms = objective(delta[:n], delta[n:], kl[:n], kl[n:], intervention.l1())
    terms["flipped"] = (delta[:n] > 0) & (delta[n:] < 0)  # the answer changes both ways
    return terms
