"""The minimality term's optimiser (`ascale.training.optim`): the soft-threshold, and
`ProximalAdamax` leaving exact zeros where the smooth gradient pulls less than the L1 weight."""

import pytest
import torch
from torch import nn

from ascale.training.optim import ProximalAdamax, soft_threshold


def test_soft_threshold_shrinks_towards_zero_and_zeroes_what_is_within_the_threshold():
    x = torch.tensor([-3.0, -0.5, 0.0, 0.2, 2.0])
    assert soft_threshold(x, 1.0).tolist() == [-2.0, 0.0, 0.0, 0.0, 1.0]
    # a threshold per element
    per = torch.tensor([0.0, 0.0, 0.0, 0.1, 3.0])
    assert soft_threshold(x, per).tolist() == pytest.approx([-3.0, -0.5, 0.0, 0.1, 0.0])
    assert torch.equal(soft_threshold(x, 0.0), x)  # no threshold, no change


def _steps(params, grads, n, **kwargs):
    optimiser = ProximalAdamax(params, **kwargs)
    for _ in range(n):
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        optimiser.step()
    return optimiser


def test_gradients_below_lambda_leave_exact_zeros_and_the_others_move_in_proportion():
    # constant gradients: the bias-corrected first moment is the gradient, the running maximum 1,
    # so each step is theta <- soft_threshold(theta - lr * g, lr * l1)
    theta = nn.Parameter(torch.zeros(4))
    grads = [torch.tensor([1.0, -0.5, 0.05, -0.001])]
    optimiser = _steps([theta], grads, 3, lr=0.1, l1=0.1)
    assert optimiser.steps == 3 and optimiser.scale == pytest.approx(1.0)
    assert torch.equal(theta.data[2:], torch.zeros(2))  # |g| < l1: exactly zero, every step
    # |g| > l1: each step moves by lr * (|g| - l1), against the gradient
    assert theta.data[:2].tolist() == pytest.approx([-3 * 0.09, 3 * 0.04])


def test_the_step_size_is_shared_and_a_parameter_without_pull_shrinks_to_exact_zero():
    big = nn.Parameter(torch.zeros(1))
    idle = nn.Parameter(torch.tensor([0.015]))
    untouched = nn.Parameter(torch.tensor([0.5]))  # no gradient at all: skipped
    optimiser = ProximalAdamax([big, idle, untouched], lr=0.1, l1=0.1)
    kept = []
    for _ in range(3):
        big.grad, idle.grad = torch.tensor([2.0]), torch.tensor([0.0])
        optimiser.step()
        kept.append(idle.item())
    # the running maximum is the largest gradient (2.0): a step of lr / 2 per unit of gradient,
    # and a threshold of lr * l1 / 2 = 0.005
    assert optimiser.scale == pytest.approx(2.0)
    assert big.item() == pytest.approx(-3 * (0.1 - 0.005))
    assert kept == pytest.approx([0.01, 0.005, 0.0]) and kept[-1] == 0.0  # exactly zero
    assert untouched.item() == 0.5


def test_a_zero_l1_weight_is_plain_adamax_with_one_step_size():
    theta = nn.Parameter(torch.zeros(3))
    _steps([theta], [torch.tensor([4.0, -2.0, 0.001])], 1, lr=0.1, l1=0.0)
    assert theta.data.tolist() == pytest.approx([-0.1, 0.05, -0.1 * 0.001 / 4])  # lr * g / max|g|
