"""Optimisers for the minimality term: how the L1 penalty turns into exact zeros.

Under Adam, the L1 term's gradient ``lambda * sign(theta)`` is rescaled per parameter like every
other gradient, so every scalar keeps moving by about the learning rate: the L1 term never
leaves a parameter at exactly zero and maps stay dense. Worse, Adam's first steps are nearly
``lr * sign(gradient)`` for every parameter, whatever the gradient's size, so components that
matter little move as far as those that matter most.

`ProximalAdamax` keeps the relative sizes of the gradients (one step size shared by all
parameters of the intervention, scaled by a running maximum of the gradient's magnitude, as
Adamax does per parameter) and applies the L1 penalty as its proximal operator, a
soft-threshold after each step (ISTA). A parameter then stays exactly zero unless the smooth
part of the objective pulls on it harder than ``lambda_min``: the optimality condition of the
lasso, so the components that survive are those the effectiveness and faithfulness terms need
most.
"""

from collections.abc import Iterable
from typing import Final

import torch
from torch import Tensor, nn

__all__ = ["SPARSITY", "ProximalAdamax", "soft_threshold"]

#: `ascale.fit`'s ``sparsity``: the L1 term in the gradient (``"l1"``, under Adam: dense maps) or
#: as a soft-threshold after each step (``"proximal"``, `ProximalAdamax`: exact zeros)
SPARSITY: Final = ("l1", "proximal")


def soft_threshold(x: Tensor, threshold: float | Tensor) -> Tensor:
    """``sign(x) * max(|x| - threshold, 0)``: the proximal operator of ``threshold * |x|``."""
    return x.sign() * torch.clamp(x.abs() - threshold, min=0.0)


class ProximalAdamax(torch.optim.Optimizer):
    """Adamax with one step size for all parameters, then an L1 soft-threshold.

    ``theta <- prox(theta - lr * m / u)`` with ``m`` the first moment of the gradient (per
    parameter, bias-corrected), ``u`` a running maximum of ``max |gradient|`` over every
    parameter (one number), and ``prox`` the soft-threshold at ``lr * l1 / u``. The largest
    gradient moves its parameter by about ``lr`` a step; the others move in proportion.

    Args:
        params: the intervention's parameters.
        lr: the step of the parameter with the largest gradient.
        l1: the L1 weight (``Objective.lambda_min``); the loss given to ``backward`` must not
            contain the L1 term itself.
        betas: decay of the first moment and of the running maximum.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        *,
        lr: float,
        l1: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-12,
    ) -> None:
        super().__init__(list(params), {"lr": lr, "l1": l1, "betas": betas, "eps": eps})
        self.scale = 0.0  # running max of |grad| over every parameter
        self.steps = 0

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        grads = [p.grad for group in self.param_groups for p in group["params"]]
        peak = max((float(g.abs().max()) for g in grads if g is not None), default=0.0)
        beta1, beta2 = self.param_groups[0]["betas"]
        self.scale = max(beta2 * self.scale, peak)
        self.steps += 1
        for group in self.param_groups:
            size = group["lr"] / (self.scale + group["eps"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                m = state.setdefault("m", torch.zeros_like(p))
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                p.sub_(m / (1 - beta1**self.steps), alpha=size)
                p.copy_(soft_threshold(p, size * group["l1"]))
