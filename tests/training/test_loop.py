"""The one training loop (`ascale.training._loop`): `Batches` draws every row once per
permutation, and `run` freezes the model, stops on the trainer's word, names the step of an
interruption or of non-finite parameters, and gives the model's ``requires_grad`` flags back."""

import math

import pytest
import torch

from ascale.errors import AscaleError
from ascale.training._loop import Batches, Trainer, frozen, run


def _draws(n, size, k, seed=0):
    batches = Batches(n, size, torch.Generator().manual_seed(seed))
    return [batches.next().tolist() for _ in range(k)]


def test_batches_draw_every_row_once_per_permutation_then_draw_anew():
    draws = _draws(10, 4, 6)
    assert [len(d) for d in draws] == [4, 4, 2, 4, 4, 2]  # the last batch of a permutation: short
    first = [row for batch in draws[:3] for row in batch]
    second = [row for batch in draws[3:] for row in batch]
    assert sorted(first) == sorted(second) == list(range(10))  # each row once per permutation
    assert first != second  # a new permutation, not the old one again
    assert draws == _draws(10, 4, 6)  # the generator's seed decides the order
    assert draws != _draws(10, 4, 6, seed=1)
    # a batch larger than the rows: every row, in a new order each time
    assert all(sorted(d) == [0, 1, 2] for d in _draws(3, 5, 4))


class _Trainer:
    """A trainer that records what the loop gives it, and stops, raises or breaks when told."""

    name = "fit test"

    def __init__(self, model, *, stop_at=0, interrupt_at=0, nan_at=0, inf_loss_at=0):
        self.model, self.stop_at = model, stop_at
        self.interrupt_at, self.nan_at, self.inf_loss_at = interrupt_at, nan_at, inf_loss_at
        self.history: dict[str, list[float]] = {"loss": []}
        self.postfix: dict[str, str] = {}
        self.theta = torch.zeros(3, requires_grad=True)
        self.steps: list[int] = []
        self.rows: list[list[int]] = []
        self.model_grads: list[bool] = []

    @property
    def params(self):
        return [self.theta]

    def step(self, step, rows):
        self.steps.append(step)
        self.rows.append(rows.tolist())
        self.model_grads.append(any(p.requires_grad for p in self.model.parameters()))
        if step == self.interrupt_at:
            raise KeyboardInterrupt
        with torch.no_grad():
            self.theta.add_(math.nan if step == self.nan_at else 1.0)
        self.history["loss"].append(math.inf if step == self.inf_loss_at else 1.0)
        self.postfix = {"step": str(step)}
        return step == self.stop_at

    def hint(self):
        return "try a lower learning rate"


@pytest.fixture
def flags(tiny_gpt2):
    """The tiny model with its first weight trainable for the test (loaded models are frozen),
    and every flag as it was before; the session's model gets them back afterwards."""
    params = list(tiny_gpt2.parameters())
    before = [p.requires_grad for p in params]
    params[0].requires_grad_(True)
    given = [p.requires_grad for p in params]
    yield given
    for p, flag in zip(params, before, strict=True):
        p.requires_grad_(flag)


def _flags(model):
    return [p.requires_grad for p in model.parameters()]


def test_run_steps_on_the_batches_with_the_model_frozen_until_the_trainer_stops(tiny_gpt2, flags):
    trainer = _Trainer(tiny_gpt2, stop_at=4)
    assert isinstance(trainer, Trainer)
    last, seconds = run(tiny_gpt2, trainer, Batches(6, 4, torch.Generator().manual_seed(0)),
                        steps=10, progress=False)  # fmt: skip
    assert last == 4 and trainer.steps == [1, 2, 3, 4] and seconds >= 0
    assert trainer.rows == _draws(6, 4, 4)  # the batches, in their order
    assert not any(trainer.model_grads)  # no model weight takes gradients during a step
    assert _flags(tiny_gpt2) == flags  # and every flag comes back
    trainer = _Trainer(tiny_gpt2)  # no stop: every step runs
    last, _ = run(tiny_gpt2, trainer, Batches(6, 4, torch.Generator()), steps=3, progress=False)
    assert last == 3
    assert trainer.steps == [1, 2, 3] and trainer.theta.tolist() == [3.0] * 3


def test_an_interrupt_names_its_step_and_restores_the_flags(tiny_gpt2, flags):
    trainer = _Trainer(tiny_gpt2, interrupt_at=3)
    batches = Batches(6, 2, torch.Generator())
    with pytest.raises(KeyboardInterrupt) as caught:
        run(tiny_gpt2, trainer, batches, steps=5, progress=False, verb="fit_circuit")
    (note,) = caught.value.__notes__
    assert "ascale.fit_circuit was interrupted during step 3 of 5" in note
    assert "trained 2 steps" in note and "no FitResult" in note
    assert trainer.steps == [1, 2, 3] and trainer.theta.tolist() == [2.0] * 3
    assert _flags(tiny_gpt2) == flags


def test_non_finite_parameters_stop_the_run_at_their_step(tiny_gpt2, flags):
    trainer = _Trainer(tiny_gpt2, nan_at=2)
    batches = Batches(6, 2, torch.Generator())
    message = r"became NaN or infinite at step 2: try a lower learning rate"
    with pytest.raises(AscaleError, match=message):
        run(tiny_gpt2, trainer, batches, steps=5, progress=False)
    assert trainer.steps == [1, 2]  # no step after the one that broke
    assert _flags(tiny_gpt2) == flags


def test_a_non_finite_loss_stops_the_run_at_its_step_naming_the_cause(tiny_gpt2, flags):
    """Issue 36: finite parameters on an infinite loss (an objective weight that overflows
    float32) are not training; the loop stops there, with the trainer's hint."""
    trainer = _Trainer(tiny_gpt2, inf_loss_at=3)
    batches = Batches(6, 2, torch.Generator())
    with pytest.raises(AscaleError, match=r"the loss became inf at step 3: try a lower"):
        run(tiny_gpt2, trainer, batches, steps=5, progress=False)
    assert trainer.steps == [1, 2, 3] and _flags(tiny_gpt2) == flags


def test_a_fit_under_no_grad_is_refused_before_any_step(tiny_gpt2, flags):
    trainer = _Trainer(tiny_gpt2)
    with torch.no_grad(), pytest.raises(AscaleError, match=r"fit_circuit needs gradients"):
        run(tiny_gpt2, trainer, Batches(6, 2, torch.Generator()), steps=2, progress=False,
            verb="fit_circuit")  # fmt: skip
    assert trainer.steps == [] and _flags(tiny_gpt2) == flags
    with frozen(tiny_gpt2):  # frozen alone: the same flags inside, back afterwards
        assert not any(_flags(tiny_gpt2))
    assert _flags(tiny_gpt2) == flags
