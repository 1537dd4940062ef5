"""The one training loop: `fit` and `fit_circuit` both run on it (`run`).

The loop owns what every fit shares: the batches (a seeded permutation of the rows, drawn anew
once it is used up: `Batches`), the model's weights frozen (`frozen`), the progress bar, a
check that the parameters stay finite after every step, interruption (a note on the exception
names the step; no partial result) and the wall time. What a fit supplies is a `Trainer`: one
gradient step on a batch (its objective and its update) and its stop rule.
"""

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ascale._types import HookedModel
from ascale.errors import AscaleError

__all__ = ["Batches", "Trainer", "frozen", "run"]


@contextlib.contextmanager
def frozen(model: HookedModel, verb: str = "fit") -> Iterator[None]:
    """Model weights get no gradients inside; their previous flags come back afterwards."""
    if not torch.is_grad_enabled():
        raise AscaleError(
            f"{verb} needs gradients, but it was called under torch.no_grad() or "
            "torch.inference_mode(): call it outside that block"
        )
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class Batches:
    """Rows in batches of `size`, in a permutation drawn from `generator`; a new permutation
    once every row has been drawn (the last batch of a permutation may be short)."""

    def __init__(self, n: int, size: int, generator: torch.Generator) -> None:
        self.n, self.size, self.generator = n, size, generator
        self.order, self.cursor = torch.randperm(n, generator=generator), 0

    def next(self) -> Tensor:
        """The row indices of the next batch."""
        if self.cursor >= len(self.order):
            self.order, self.cursor = torch.randperm(self.n, generator=self.generator), 0
        rows = self.order[self.cursor : self.cursor + self.size]
        self.cursor += self.size
        return rows


@runtime_checkable
class Trainer(Protocol):
    """What a fit supplies to the loop."""

    #: the fit's name, in the progress bar and in an interruption's note (``"fit scalars"``)
    name: str
    #: what the progress bar shows after a step
    postfix: dict[str, str]

    @property
    def params(self) -> Sequence[Tensor]:
        """The learned parameters (checked finite after every step)."""
        ...

    def step(self, step: int, rows: Tensor) -> bool:
        """One gradient step on `rows` (its objective and its update, its history recorded);
        ``True`` when the fit's stop rule says to end after this step."""
        ...

    #: per step, the loss (``"loss"``) and its terms (checked finite after every step)
    history: dict[str, list[float]]

    def hint(self) -> str:
        """What to try when the parameters or the loss become NaN or infinite: the setting
        that caused it (the learning rate, an objective weight that overflows float32)."""
        ...


def run(
    model: HookedModel,
    trainer: Trainer,
    batches: Batches,
    *,
    steps: int,
    progress: bool,
    verb: str = "fit",
) -> tuple[int, float]:
    """Run `trainer` for at most `steps` steps with the model's weights frozen; the last step
    run and the wall time in seconds.

    An interrupt (or any exception) propagates, with a note naming the step; the progress bar
    is closed and the model's ``requires_grad`` flags are restored.
    """
    started, step = time.perf_counter(), 0
    bar: Any = tqdm(total=steps, desc=trainer.name, disable=not progress, leave=False)
    try:
        with frozen(model, verb):
            for step in range(1, steps + 1):
                done = trainer.step(step, batches.next())
                _check_finite(trainer, step)
                bar.update(1)
                bar.set_postfix(trainer.postfix)
                if done:
                    break
    except KeyboardInterrupt as err:
        err.add_note(
            f"ascale.{verb} was interrupted during step {step} of {steps}: the parameters "
            f"are as they were then (trained {step - 1} steps); no FitResult was returned"
        )
        raise
    finally:
        bar.close()
    return step, time.perf_counter() - started


def _check_finite(trainer: Trainer, step: int) -> None:
    """Stop at the first step whose parameters or loss are NaN or infinite, naming the cause
    (`Trainer.hint`): training on an infinite loss only looks like training."""
    if not all(bool(torch.isfinite(p).all()) for p in trainer.params):
        raise AscaleError(f"the parameters became NaN or infinite at step {step}: {trainer.hint()}")
    losses = trainer.history.get("loss") or [0.0]
    if not math.isfinite(losses[-1]):
        raise AscaleError(f"the loss became {losses[-1]} at step {step}: {trainer.hint()}")
