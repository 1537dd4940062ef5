"""Learning an intervention: `fit` -> `FitResult`, with per-method defaults (`DEFAULTS`).

The loop, a step at a time, lives in `ascale.training._loop`, its forward passes in
`ascale.training._passes`, the measuring in `ascale.training.metrics`.

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
from tqdm.auto import tqdm

from ascale import distributed
from ascale._types import HookedModel
from ascale.data import ContrastSet
from ascale.errors import AscaleError
from ascale.interventions import Intervention
from ascale.training import _loop, positions
from ascale.training.objective import Objective

__all__ = ["DEFAULTS", "FitDefaults", "FitResult", "fit"]


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


@dataclass(frozen=True)
class FitDefaults:
    """Per-method defaults of `fit` (see ``benchmarks/results/fit_defaults.json``).

    ``lr`` is the rate under Adam (``sparsity="l1"``), ``proximal_lr`` under the proximal step
    (``sparsity="proximal"``): ProximalAdamax moves the parameter with the largest gradient by
    the rate and every other in proportion, so it needs a larger rate than Adam, which moves
    every parameter by about the rate.
    """

    lr: float
    steps: int
    batch_size: int
    sparsity: str
    proximal_lr: float

    def rate(self, sparsity: str) -> float:
        """The default learning rate under `sparsity`."""
        return self.proximal_lr if sparsity == "proximal" else self.lr


# Chosen by measurement (benchmarks/results/fit_defaults.json; sites attn_out+mlp_out at every
# position, 70/30 splits, 2 CPU threads; test flips +1 / -1, KL, steps):
# - The stop. The rule before waited for every training prompt to flip by the margin; a few CCC
#   prompts never do, so every fit ran all 100 steps (the demo: 100 steps, 0.93 / 0.97, KL 0.58,
#   proximal scalars). The flips are met early: 95% of the CCC training prompts flip both ways by
#   step ~12. Stopping there: 1.00 / 1.00, KL 1.08 (scalars); 10 settling steps with a falling
#   rate after it: 22 steps, 1.00 / 1.00, KL 0.99; IOI 20 steps, 1.00 / 1.00, KL 0.43. A fixed
#   40-step cosine run: CCC 1.00 / 1.00, KL 0.80; IOI KL 0.33: KL is what the extra steps buy.
# - The settling steps: as many as reaching the target took (settle=None) rather than 10. The
#   held-out flips lag the training ones: dynamic scalars on pronouns_mixed reached the target
#   at step 61, flipped 0.71 / 1.00 of the held-out prompts after 10 more steps, 0.79 / 1.00
#   after 61 (KL 0.28 and 0.27), 0.86 / 1.00 running all 200; vectors on pronouns 0.64 -> 0.79
#   (KL 0.16 both). On CCC and IOI, which reach it in ~10 steps, it changes little (CCC
#   scalars 24 steps, 1.00 / 1.00, KL 0.98 against 22 steps, KL 0.99).
# - 200 steps for scalars (the small sets never reach the target, and their held-out flips
#   still rose at step 100) did not carry over: with settling as above, plural 0.79, antonyms
#   0.67, country_language 0.53 forward, against 0.79 / 0.80 / 0.60 at 100.
# - vectors: lr 0.1 moves each of a vector's 576 numbers by 0.1 at the first Adam step, and the
#   L1 term then dominated all 100 steps (CCC loss 300 -> 9.7; 1.00 / 1.00, KL 0.90, 584 of 720
#   vectors active); lr 0.01: 19 steps, 0.98 / 1.00, KL 0.88 (40 steps: 0.98 / 0.98, KL 0.71,
#   217 active); lr 0.001 over 40 steps: 0.93 / 0.97, KL 0.49.
# - The small hand-written sets (35 train / 15 test) never reach the flip target, so they run
#   every step, as before (plural 100 steps: 0.79 / 1.00 both times). 40 steps there gave 0.57
#   (plural) and 0.60 (antonyms) forward; no setting tried reached 0.85 forward on antonyms and
#   country_language (lambda_min 1e-3, margin 4, lr 0.3, shared positions, lambda_faith 0.3);
#   lambda_min 1e-3 reached 0.86 on plural. Stopping on a validation split stopped too early.
# - dynamic: lr 0.01 (lr 0.1 gave KL 3.9 on mixed lengths).
# - Under the proximal step (benchmarks/results/tradeoffs.json: 8 lambda_min values, 20 steps at
#   batch 16 on CCC, 40 on IOI, best test flips +1 / -1): vectors at 0.01 reached only 0.82 / 0.95
#   (CCC) and 0.13 / 1.00 (IOI), at 0.1 0.98 / 0.97 and 0.98 / 0.98; scalars at 0.1 reached 0.98
#   / 1.00 on CCC (0.3: the top of the curve worse, KL 0.92-1.03) and 0.88 / 1.00 on IOI (0.3:
#   1.00 / 1.00). 0.1 for both; dynamic not measured there (its Adam rate).
# Maps use the proximal fit (compare.SPARSE_MAP).
DEFAULTS: dict[str, FitDefaults] = {
    "scalars": FitDefaults(lr=0.1, steps=100, batch_size=32, sparsity="l1", proximal_lr=0.1),
    "vectors": FitDefaults(lr=0.01, steps=100, batch_size=32, sparsity="l1", proximal_lr=0.1),
    "dynamic": FitDefaults(lr=0.01, steps=200, batch_size=64, sparsity="l1", proximal_lr=0.01),
}


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
    method's `DEFAULTS`; the stop rules are described above (Stopping). A position-tied
    intervention made with ``positions="auto"`` (the default) is bound to the last positions
    of the prompts (`ascale.training.positions`); ``settings["positions"]`` and
    ``settings["positions_rule"]`` say where it steers and why.

    Args:
        steps: most optimiser steps (cosine-decayed learning rate over them).
        lr: learning rate (default: the method's for `sparsity`, `FitDefaults.rate`).
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
    if not intervention.steers:
        raise AscaleError(
            f"fit trains steering interventions with the beta dial; fit "
            f"{type(intervention).__name__} with ascale.fit_circuit"
        )
    defaults = DEFAULTS.get(intervention.method, DEFAULTS["scalars"])
    sparsity = defaults.sparsity if sparsity is None else sparsity
    steps = defaults.steps if steps is None else steps
    lr = defaults.rate(sparsity) if lr is None else lr  # each sparsity mode its own rate
    batch_size = defaults.batch_size if batch_size is None else batch_size
    settings = _loop.Settings(
        steps, lr, batch_size, sparsity, stop, flip_target, settle, val_size, eval_every,
        patience, seed,
    )  # fmt: skip
    where = positions.bind_for_fit(intervention, data)  # "auto": the positions chosen for data
    loop = _loop.Loop(model, intervention, data, settings, objective or Objective(), keep)
    show = progress and distributed.is_main()
    bar = tqdm(total=steps, desc=f"fit {intervention.method}", disable=not show, leave=False)
    with _loop.frozen(model):
        step = loop.run(bar)
    done = loop.finish(step)
    return FitResult(intervention.method, **{**done, "settings": {**done["settings"], **where}})
