"""What `ascale.fit.fit` needs around its loop: its settings checked, keep masks, the model's
weights frozen, and the validation stop (the held-out score; the best step's parameters, kept).
"""

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from ascale import forward, models
from ascale.data import ContrastSet
from ascale.errors import AscaleError
from ascale.interventions import Intervention
from ascale.objective import Objective

__all__ = [
    "SPARSITY",
    "STOPS",
    "Best",
    "apply_masks",
    "check_settings",
    "frozen",
    "held_out_score",
    "keep_masks",
]

SPARSITY = ("l1", "proximal")
STOPS = ("validation", "train", "none")


class Best:
    """The parameters of the best validation score so far, and patience bookkeeping."""

    def __init__(self, intervention: Intervention, patience: int) -> None:
        self.intervention, self.patience = intervention, patience
        self.best, self.step, self.waited = float("inf"), 0, 0
        self.state = {k: v.detach().clone() for k, v in intervention.state_dict().items()}

    def update(self, step: int, score: float) -> bool:
        """Record a score; ``True`` when patience has run out."""
        if score < self.best - 1e-6:
            self.best, self.step, self.waited = score, step, 0
            self.state = {k: v.detach().clone() for k, v in self.intervention.state_dict().items()}
        else:
            self.waited += 1
        return self.waited >= self.patience

    def restore(self) -> int:
        with torch.no_grad():
            self.intervention.load_state_dict(self.state)
        return self.step


def held_out_score(
    model: Any,
    intervention: Intervention,
    data: ContrastSet,
    clean: Tensor,
    objective: Objective,
    batch_size: int,
    prefix: models.Prefix | None = None,
) -> float:
    """The whole objective (L1 included) on held-out prompts, without gradients."""
    total = 0.0
    with torch.no_grad():
        for begin in range(0, len(data), batch_size):
            index = torch.arange(begin, min(begin + batch_size, len(data)))
            batch = data.subset(index)
            rows = forward.prefix_rows(prefix, index, batch)
            terms = forward.step_terms(model, intervention, batch, clean[index], objective, rows)
            total += float(terms["loss"]) * len(index)
    return total / len(data)


def keep_masks(intervention: Intervention, keep: dict[str, Tensor] | None) -> dict[str, Tensor]:
    """`fit`'s `keep` as masks shaped like each site's parameters, applied once already."""
    if keep is None:
        return {}
    unknown = sorted(set(keep) - set(intervention.params))
    if unknown:
        raise AscaleError(f"keep names sites {unknown} the intervention does not have")
    out = {}
    for name, mask in keep.items():
        param = intervention.params[name]
        mask = mask.to(param.device, param.dtype)
        out[name] = mask.reshape(*mask.shape, *[1] * (param.ndim - mask.ndim))
    apply_masks(intervention, out)
    return out


def apply_masks(intervention: Intervention, masks: dict[str, Tensor]) -> None:
    """Parameters where a mask is 0 back to the identity (in place, without gradients)."""
    with torch.no_grad():
        for name, mask in masks.items():
            intervention.params[name].mul_(mask)


def check_settings(
    steps: int,
    lr: float,
    batch_size: int,
    sparsity: str,
    stop: str,
    val_size: float,
    eval_every: int,
    patience: int,
    flip_target: float,
    settle: int | None,
) -> None:
    """Refuse a bad setting of `fit` before any work, naming it and the value given."""
    for name, value in (
        ("steps", steps),
        ("batch_size", batch_size),
        ("eval_every", eval_every),
        ("patience", patience),
    ):
        if not isinstance(value, int) or value < 1:
            raise AscaleError(f"{name} must be a positive integer, got {value!r}")
    if not (math.isfinite(lr) and 0 < lr <= 10):
        raise AscaleError(f"lr must be a finite number in (0, 10], got {lr!r}")
    if sparsity not in SPARSITY:
        raise AscaleError(f"sparsity must be one of {SPARSITY}, got {sparsity!r}")
    if stop not in STOPS:
        raise AscaleError(f"stop must be one of {STOPS}, got {stop!r}")
    if not 0 < val_size < 1:
        raise AscaleError(f"val_size must lie in (0, 1), got {val_size!r}")
    if not 0.0 < flip_target <= 1.0:
        raise AscaleError(f"flip_target must be a share in (0, 1], got {flip_target!r}")
    if settle is not None and (not isinstance(settle, int) or settle < 0):
        raise AscaleError(
            f"settle must be None (as many steps as reaching the flip target took) or a whole "
            f"number of steps >= 0, got {settle!r}"
        )


@contextlib.contextmanager
def frozen(model: Any) -> Iterator[None]:
    """Model weights get no gradients inside; their previous flags come back afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
