"""Learning an intervention (`fit`) and measuring it (`evaluate`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ascale import models
from ascale.data import ContrastSet
from ascale.errors import AscaleError
from ascale.interventions import Beta, Intervention
from ascale.objective import Objective, answer_logit_diff, masked_kl, masked_log_probs

__all__ = ["FitResult", "Metrics", "evaluate", "fit"]


@dataclass(frozen=True)
class FitResult:
    """What a `fit` run did: its settings and the loss history, one entry per step."""

    method: str
    steps_run: int
    stopped_early: bool
    wall_time_s: float
    objective: Objective
    settings: dict[str, Any]
    history: dict[str, list[float]] = field(repr=False)

    def to_frame(self) -> Any:
        """The history as a pandas DataFrame, one row per step."""
        import pandas as pd

        return pd.DataFrame(self.history).rename_axis("step")


@dataclass(frozen=True)
class Metrics:
    """Effectiveness, faithfulness and minimality of an intervention on one contrast set.

    ``flip_rate_forward``: share of prompts whose answer is the wrong token at ``beta=+1``;
    ``flip_rate_backward``: share whose answer is the correct token at ``beta=-1``;
    ``logit_diff_*``: mean ``logit(wrong) - logit(correct)`` at each sign (and clean);
    ``faithfulness_kl``: mean KL of the non-answer distribution over both signs;
    ``n_params``, ``l1``, ``n_active`` (magnitude above the threshold; vectors by norm).
    """

    flip_rate_forward: float
    flip_rate_backward: float
    logit_diff_forward: float
    logit_diff_backward: float
    faithfulness_kl: float
    n_params: int
    l1: float
    n_active: int
    logit_diff_clean: float
    n_prompts: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain numbers, ready for JSON."""
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"flip +1 {self.flip_rate_forward:.2f} / -1 {self.flip_rate_backward:.2f} | "
            f"logit diff +1 {self.logit_diff_forward:+.2f} / -1 {self.logit_diff_backward:+.2f} "
            f"(clean {self.logit_diff_clean:+.2f}) | KL {self.faithfulness_kl:.4f} | "
            f"params {self.n_params} (active {self.n_active}, L1 {self.l1:.3g}) | "
            f"n={self.n_prompts}"
        )


def fit(
    model: Any,
    intervention: Intervention,
    data: ContrastSet,
    *,
    steps: int = 100,
    lr: float = 0.1,
    batch_size: int = 32,
    objective: Objective | None = None,
    seed: int = 0,
    early_stop: bool = True,
    progress: bool = True,
) -> FitResult:
    """Learn `intervention` on `data` with Adam; the model's weights stay frozen.

    Each step runs one forward pass over the batch twice over, once at ``beta=+1`` and once at
    ``beta=-1``, stacked into one batch. The clean next-token distributions are computed once, before
    the first step. With `early_stop`, training ends once every training prompt has been seen
    flipped by the margin in both directions (each at its latest visit).

    Example:
        >>> result = fit(model, scalars, train, steps=100)  # doctest: +SKIP
        >>> result.to_frame().tail(1)  # doctest: +SKIP
    """
    objective = objective or Objective()
    if steps < 1 or batch_size < 1:
        raise AscaleError(f"steps and batch_size must be positive, got {steps}, {batch_size}")
    if intervention.position_tied:
        intervention.bind(data.n_pos)
    generator = torch.Generator().manual_seed(seed)
    clean = _clean_log_probs(model, data, batch_size)
    optimizer = torch.optim.Adam(intervention.parameters(), lr=lr)
    # cosine decay to zero over `steps`: late steps settle the L1-driven scalars near zero
    # instead of letting Adam keep them oscillating at about +-lr
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    satisfied = torch.zeros(len(data), dtype=torch.bool)
    history: dict[str, list[float]] = {}
    start, step, stopped = time.perf_counter(), 0, False
    bar = tqdm(total=steps, desc=f"fit {intervention.method}", disable=not progress, leave=False)
    with _frozen(model):
        order = torch.randperm(len(data), generator=generator)
        cursor = 0
        for step in range(1, steps + 1):  # noqa: B007 - `step` is reported after the loop
            if cursor >= len(order):
                order, cursor = torch.randperm(len(data), generator=generator), 0
            index = order[cursor : cursor + batch_size]
            cursor += batch_size
            terms = _step(model, intervention, data.subset(index), clean[index], objective)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            schedule.step()
            satisfied[index] = terms.pop("satisfied").cpu()
            for key, value in terms.items():
                history.setdefault(key, []).append(float(value.detach()))
            bar.update(1)
            bar.set_postfix(
                loss=f"{float(terms['loss'].detach()):.3f}",
                flipped=f"{satisfied.float().mean():.2f}",
            )
            if early_stop and bool(satisfied.all()):
                stopped = True
                break
    bar.close()
    settings = {
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "early_stop": early_stop,
        "n_train": len(data),
    }
    return FitResult(
        intervention.method,
        step,
        stopped,
        time.perf_counter() - start,
        objective,
        settings,
        history,
    )


def _step(
    model: Any, intervention: Intervention, batch: ContrastSet, clean: Tensor, objective: Objective
) -> dict[str, Tensor]:
    n = len(batch)
    device = _device(model)
    beta = torch.cat([torch.ones(n), -torch.ones(n)]).to(device)
    doubled = _stack_twice(batch)
    logits = _answer_logits(model, intervention, doubled, beta)
    correct, wrong = doubled.correct_ids.to(device), doubled.wrong_ids.to(device)
    delta = answer_logit_diff(logits, correct, wrong)
    kl = masked_kl(clean.repeat(2, 1), logits, correct, wrong)
    terms = objective(delta[:n], delta[n:], kl[:n], kl[n:], intervention.l1())
    terms["satisfied"] = (delta[:n] >= objective.margin) & (delta[n:] <= -objective.margin)
    return terms


def evaluate(
    model: Any,
    intervention: Intervention,
    data: ContrastSet,
    *,
    batch_size: int = 64,
    threshold: float = 1e-2,
) -> Metrics:
    """Flip rates, logit differences and faithfulness at ``beta = +1`` and ``-1``, and minimality.

    Example:
        >>> print(evaluate(model, scalars, test))  # doctest: +SKIP
        flip +1 0.97 / -1 1.00 | ...
    """
    if intervention.position_tied:
        if not intervention.is_bound:
            raise AscaleError("this intervention has not been fitted (it has no parameters yet)")
        data.n_pos  # noqa: B018 - raises PromptLengthError with the length counts
    deltas: dict[float, list[Tensor]] = {0.0: [], 1.0: [], -1.0: []}
    kls: list[Tensor] = []
    device = _device(model)
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            batch = data.subset(range(start, min(start + batch_size, len(data))))
            ids = (batch.correct_ids.to(device), batch.wrong_ids.to(device))
            clean_logits = _answer_logits(model, None, batch, 0.0)
            clean = masked_log_probs(clean_logits, *ids)
            deltas[0.0].append(answer_logit_diff(clean_logits, *ids))
            for beta in (1.0, -1.0):
                logits = _answer_logits(model, intervention, batch, beta)
                deltas[beta].append(answer_logit_diff(logits, *ids))
                kls.append(masked_kl(clean, logits, *ids))
    d = {beta: torch.cat(v) for beta, v in deltas.items()}
    return Metrics(
        flip_rate_forward=float((d[1.0] > 0).float().mean()),
        flip_rate_backward=float((d[-1.0] < 0).float().mean()),
        logit_diff_forward=float(d[1.0].mean()),
        logit_diff_backward=float(d[-1.0].mean()),
        faithfulness_kl=float(torch.cat(kls).mean()),
        n_params=intervention.n_params,
        l1=float(intervention.l1().detach()),
        n_active=intervention.n_active(threshold),
        logit_diff_clean=float(d[0.0].mean()),
        n_prompts=len(data),
    )


def _answer_logits(
    model: Any, intervention: Intervention | None, batch: ContrastSet, beta: Beta
) -> Float[Tensor, "batch d_vocab"]:
    """Logits at each prompt's last real token, with `intervention` applied at `beta`."""
    context = (
        contextlib.nullcontext() if intervention is None else intervention.applied(model, beta)
    )
    # Without right padding (always, for position-tied data) the answer is read at the last
    # column, and only that column is unembedded: see `models.run(last_only=True)`.
    last_only = bool((batch.lengths == batch.tokens.shape[1]).all())
    with context:
        logits = models.run(model, batch.tokens, batch.attention_mask, last_only=last_only)
    # on the model's device: the loss is computed there too (on a GPU, no copies per step)
    return logits[:, -1] if last_only else logits[torch.arange(len(batch)), batch.lengths - 1]


def _device(model: Any) -> torch.device:
    """Where the model computes (the answer ids and the clean distribution go there)."""
    return torch.device(getattr(model.cfg, "device", None) or "cpu")


def _clean_log_probs(model: Any, data: ContrastSet, batch_size: int) -> Tensor:
    """The clean, answer-masked next-token log-probabilities of every prompt, computed once."""
    out = []
    with torch.no_grad():  # not inference_mode: these tensors enter the autograd graph later
        for start in range(0, len(data), batch_size):
            batch = data.subset(range(start, min(start + batch_size, len(data))))
            logits = _answer_logits(model, None, batch, 0.0)
            ids = (batch.correct_ids.to(logits.device), batch.wrong_ids.to(logits.device))
            out.append(masked_log_probs(logits, *ids))
    return torch.cat(out)


def _stack_twice(batch: ContrastSet) -> ContrastSet:
    """The batch followed by itself: one forward pass serves both signs of beta."""
    return batch.subset(list(range(len(batch))) * 2)


@contextlib.contextmanager
def _frozen(model: Any) -> Iterator[None]:
    """Model weights get no gradients inside; their previous flags come back afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
