"""Learning a steering intervention: `fit` -> `FitResult`, with each kind's defaults
(`SteeringIntervention.fit_defaults`).

The one training loop lives in `ascale.training._loop`, `fit`'s step and stop rules in
`ascale.training._steering`, its forward passes in `ascale.training._passes`, the measuring in
`ascale.training.metrics`.

Stopping:

- ``stop="train"`` (default): once at least ``flip_target`` of the training prompts flipped both
  ways (the wrong answer at ``beta=+1``, the correct one at ``-1``) when their batch last ran
  (``history["flipped"]``), run ``settle`` more steps with the learning rate falling linearly
  towards zero, then stop (within ``steps`` in all). By default as many settling steps as
  reaching the target took: the training flips are met at a high rate, ahead of the held-out
  ones, and these steps trade the rest of the budget for faithfulness and generalisation (CCC:
  KL 1.08 stopping at once; dynamic scalars on a small mixed-length set: 0.71 of the held-out
  prompts flipped after 10 settling steps, 0.79 after as many as the target took).
- ``stop="validation"``: hold out ``val_size`` of the data, score the objective on it every
  ``eval_every`` steps, keep the parameters of the best score and stop after ``patience``
  scores without improvement (the train stop below 10 prompts; on the small sets measured it
  stopped too early).
- ``stop="none"``: run every step.

Interruption is an outcome, not a result: Ctrl-C (``KeyboardInterrupt``, or any other exception)
during `fit` propagates; `fit` returns no partial `FitResult`. Before it does, the model's
``requires_grad`` flags are back as they were, the progress bar is closed, and the intervention
is as it was when interrupted (a note on the exception names the step), so a
loop of fits, `ascale.sweep` and the command line stop instead of reporting a half-trained
intervention as a result. Under torchrun (`ascale.distributed`) each process runs its share of
every batch and the gradients are summed over processes: the same steps as one process.
"""

import html
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ascale import _checks, distributed
from ascale._types import HookedModel
from ascale.data import ContrastSet, check_data
from ascale.errors import AscaleError
from ascale.interventions import Intervention, SteeringIntervention
from ascale.training import _loop, _steering, positions
from ascale.training.objective import Objective

__all__ = ["FitResult", "fit"]


@dataclass(frozen=True)
class FitResult:
    """What a `fit` run did: its settings and the loss history, one entry per step.

    ``steps_run`` steps ran; the parameters kept are those after step ``kept_step`` (the best
    validation score with ``stop="validation"``, else the last step); ``stop_reason`` says why
    training ended and which step was kept. `ascale.fit_circuit` returns one too, with no
    steering ``objective`` (its own is in ``settings``).
    """

    method: str
    steps_run: int
    stopped_early: bool
    wall_time_s: float
    objective: Objective | None
    settings: dict[str, Any]
    history: dict[str, list[float]] = field(repr=False)
    kept_step: int = 0
    stop_reason: str = ""

    def to_frame(self) -> Any:
        """The history as a pandas DataFrame, one row per step."""
        import pandas as pd

        per_step = {k: v for k, v in self.history.items() if not k.startswith("val_")}
        frame = pd.DataFrame(per_step, index=pd.RangeIndex(1, self.steps_run + 1, name="step"))
        if "val_step" in self.history:
            val = pd.Series(self.history["val_loss"], index=self.history["val_step"])
            frame["val_loss"] = val.reindex(frame.index)
        return frame

    def _repr_html_(self) -> str:
        """Jupyter: what ran and why it stopped, then the loss terms at the first, kept and
        last steps."""
        head = (
            f"<p><b>FitResult</b> {html.escape(self.method)}: {self.steps_run} steps "
            f"({self.wall_time_s:.1f} s), kept step {self.kept_step}; "
            f"{html.escape(self.stop_reason)}</p>"
        )
        if not self.steps_run:
            return head
        frame = self.to_frame()
        steps = sorted({1, self.kept_step or self.steps_run, self.steps_run})
        return head + str(frame.loc[steps].to_html(float_format="{:.4g}".format, na_rep=""))


def fit(
    model: HookedModel,
    intervention: Intervention,
    data: ContrastSet,
    *,
    steps: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    objective: Objective | None = None,
    sparsity: str | None = None,
    stop: str = "train",
    flip_target: float = 0.95,
    settle: int | None = None,
    val_size: float = 0.2,
    eval_every: int = 5,
    patience: int = 4,
    keep: dict[str, Tensor] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> FitResult:
    """Learn `intervention` on `data`; the model's weights stay frozen.

    Each step runs the batch at ``beta=+1`` and ``beta=-1`` in one stacked forward pass; the
    clean next-token distributions are computed once. Settings left at ``None`` take the
    kind's `fit_defaults`; the stop rules are described above (Stopping). A position-tied
    intervention made with ``positions="auto"`` (the default) is bound to the last positions
    of the prompts (`ascale.training.positions`); ``settings["positions"]`` and
    ``settings["positions_rule"]`` say where it steers and why.

    Args:
        steps: most optimiser steps (cosine-decayed learning rate over them).
        lr: learning rate (default: the kind's for `sparsity`, `FitDefaults.rate`).
        batch_size: prompts a step (each run at both signs of beta).
        objective: the three terms' weights (default `Objective()`).
        sparsity: ``"l1"`` (Adam on the whole objective: dense maps) or ``"proximal"`` (the
            L1 term as a soft-threshold, `ProximalAdamax`: exact zeros, sparse maps).
        stop: ``"train"`` (default), ``"validation"`` or ``"none"``.
        flip_target: the share of training prompts ``stop="train"`` waits for, in (0, 1].
        settle: steps run after reaching `flip_target`; ``None``: as many as reaching it took.
        val_size: the share of `data` ``stop="validation"`` holds out.
        eval_every: steps between two held-out scores.
        patience: held-out scores without improvement before ``stop="validation"`` ends.
        keep: per site, a 0/1 mask broadcastable to its parameters: where it is 0, parameters
            stay at the identity (a refit on chosen components).
        seed: the order of the batches and the validation split.
        progress: show a progress bar.

    Raises:
        KeyboardInterrupt: Ctrl-C during training propagates (no partial `FitResult`), with
            the model's ``requires_grad`` flags restored and the intervention as it was when
            interrupted; a note on the exception names the step.

    Example:
        >>> fresh = ascale.ActivationScalars(model, sites="mlp_out", n_pos=train.n_pos)
        >>> result = fit(model, fresh, train, steps=3, progress=False)
        >>> result.steps_run, len(result.history["loss"])
        (3, 3)
    """
    if not isinstance(intervention, SteeringIntervention):
        raise AscaleError(
            f"fit trains steering interventions with the beta dial; fit "
            f"{type(intervention).__name__} with ascale.fit_circuit"
        )
    defaults = intervention.fit_defaults
    sparsity = defaults.sparsity if sparsity is None else sparsity
    steps = defaults.steps if steps is None else steps
    lr = defaults.rate(sparsity) if lr is None else lr  # each sparsity mode its own rate
    batch_size = defaults.batch_size if batch_size is None else batch_size
    settings = _steering.Settings(
        steps, lr, batch_size, sparsity, stop, flip_target, settle, val_size, eval_every,
        patience, seed,
    )  # fmt: skip
    where = positions.bind_for_fit(intervention, check_data(data))  # "auto": chosen for data
    objective = _checks.instance("objective", objective or Objective(), Objective)
    trainer = _steering.SteeringTrainer(model, intervention, data, settings, objective, keep)
    show = progress and distributed.is_main()
    step, wall = _loop.run(model, trainer, trainer.batches, steps=steps, progress=show)
    done = trainer.finish(step, wall)
    return FitResult(intervention.method, **{**done, "settings": {**done["settings"], **where}})
