"""Learning an intervention: `fit` -> `FitResult`, with per-method defaults (`DEFAULTS`) and
the stopping rules (flip target and settling steps, validation, Ctrl-C).

The forward passes live in `ascale.forward`, the measuring in `ascale.metrics`, the checks,
keep masks and validation bookkeeping around the loop in `ascale._fitting`; `Metrics`,
`evaluate`, `metrics_table` and `format_metrics` are re-exported here, where they were first.
"""

import dataclasses
import html
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ascale import _fitting, distributed, forward, models
from ascale._fitting import SPARSITY as SPARSITY  # importable here, as before
from ascale._fitting import STOPS as STOPS
from ascale.data import ContrastSet
from ascale.errors import AscaleError
from ascale.interventions import Intervention
from ascale.metrics import Metrics, evaluate, format_metrics, metrics_table
from ascale.objective import Objective
from ascale.optim import ProximalAdamax

__all__ = [
    "DEFAULTS",
    "FitDefaults",
    "FitResult",
    "Metrics",
    "evaluate",
    "fit",
    "format_metrics",
    "metrics_table",
]


@dataclass(frozen=True)
class FitResult:
    """What a `fit` run did: its settings and the loss history, one entry per step.

    ``steps_run`` steps ran; the parameters kept are those after step ``kept_step`` (the best
    validation score with ``stop="validation"``, else the last step); ``stop_reason`` says why
    training ended and which step was kept.
    """

    method: str
    steps_run: int
    stopped_early: bool
    wall_time_s: float
    objective: Objective
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
    model: Any,
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
    early_stop: bool = True,
    progress: bool = True,
) -> FitResult:
    """Learn `intervention` on `data`; the model's weights stay frozen.

    Each step runs one forward pass over the batch twice over, once at ``beta=+1`` and once at
    ``beta=-1``, stacked into one batch. The clean next-token distributions are computed once,
    before the first step. Settings left at ``None`` take the method's defaults (`DEFAULTS`).
    Under torchrun (`ascale.distributed`) each process runs its share of every batch and the
    gradients are summed over processes: the same steps as one process with the whole batch.

    Args:
        steps: most optimiser steps (cosine-decayed learning rate over them).
        lr: learning rate (default: the method's for `sparsity`, `FitDefaults.rate`).
        batch_size: prompts a step (each run at both signs of beta).
        objective: the three terms' weights (default `Objective()`).
        sparsity: ``"l1"``: Adam on the whole objective (dense maps); ``"proximal"``: the L1
            term as a soft-threshold after each step (`ascale.optim.ProximalAdamax`), which
            leaves exact zeros (sparse maps).
        stop: ``"train"`` (default): once at least `flip_target` of the training prompts
            flipped both ways (the wrong answer at ``beta=+1``, the correct one at ``-1``) when
            their batch last ran (``history["flipped"]``), run `settle` more steps with the
            learning rate falling linearly towards zero, then stop (within `steps` in all);
            ``"validation"``: hold out `val_size` of `data`, score the objective on it every
            `eval_every` steps, keep the parameters of the best score and stop after
            `patience` scores without improvement (falls back to ``"train"`` below 10 prompts;
            on the small sets measured it stopped too early); ``"none"``: run every step.
            Ctrl-C (``KeyboardInterrupt``) stops any of them cleanly: `fit` returns, with the
            best validation step's parameters where there is a validation split, and says so
            in ``stop_reason``.
        flip_target: the share of training prompts ``stop="train"`` waits for, in (0, 1].
        settle: steps ``stop="train"`` runs after reaching `flip_target`; ``None`` (default):
            as many as it took to reach it. The training flips are met at a high learning rate,
            ahead of the held-out ones, and these steps trade the rest of the budget for
            faithfulness and generalisation (CCC: KL 1.08 stopping at once; dynamic scalars on
            a small mixed-length set: 0.71 of the held-out prompts flipped after 10 settling
            steps, 0.79 after as many as the target took; see `DEFAULTS`).
        keep: per site, a 0/1 mask broadcastable to its parameters: parameters where it is 0
            stay at the identity (a refit on a chosen set of components).
        early_stop: ``False`` is ``stop="none"`` (kept for older code).

    Example:
        >>> fresh = ascale.ActivationScalars(model, sites="mlp_out", n_pos=train.n_pos)
        >>> result = fit(model, fresh, train, steps=3, progress=False)
        >>> result.steps_run, len(result.history["loss"])
        (3, 3)
    """
    defaults = DEFAULTS.get(intervention.method, DEFAULTS["scalars"])
    steps = defaults.steps if steps is None else steps
    batch_size = defaults.batch_size if batch_size is None else batch_size
    sparsity = defaults.sparsity if sparsity is None else sparsity
    lr = defaults.rate(sparsity) if lr is None else lr  # each sparsity mode its own rate
    objective = objective or Objective()
    stop = stop if early_stop else "none"
    _fitting.check_settings(
        steps, lr, batch_size, sparsity, stop, val_size, eval_every, patience, flip_target, settle
    )
    if intervention.position_tied:
        intervention.bind(data.n_pos)
    train, val = data, None
    if stop == "validation":
        if len(data) >= 10:
            train, val = data.split(test_size=val_size, seed=seed)
        else:
            stop = "train"
    generator = torch.Generator().manual_seed(seed)
    # the blocks below the intervention's lowest layer see clean prompts: computed once
    first = models.first_block(intervention.hook_names)
    # before any work that could exhaust memory (each prompt runs at both signs of beta)
    width = int(train.tokens.shape[1])
    models.check_step_memory(model, 2, min(batch_size, len(train)), width, first)
    prefix = forward.clean_prefix(model, train, first, batch_size)
    val_prefix = None if val is None else forward.clean_prefix(model, val, first, batch_size)
    clean = forward.clean_log_probs(model, train, batch_size, prefix)
    val_clean = None if val is None else forward.clean_log_probs(model, val, batch_size, val_prefix)
    params = list(intervention.parameters())
    distributed.broadcast_parameters(params)  # one starting point on every rank
    optimizer: torch.optim.Optimizer = (
        ProximalAdamax(params, lr=lr, l1=objective.lambda_min)
        if sparsity == "proximal"
        else torch.optim.Adam(params, lr=lr)
    )
    # the proximal step applies the L1 term itself: the gradient sees only the smooth terms
    smooth = dataclasses.replace(objective, lambda_min=0.0) if sparsity == "proximal" else objective
    # cosine decay to zero over `steps`: late steps settle the parameters
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    masks = _fitting.keep_masks(intervention, keep)
    flipped = torch.zeros(len(train), dtype=torch.bool)  # each prompt as last seen
    history: dict[str, list[float]] = {}
    tracker = _fitting.Best(intervention, patience)
    start, step, reason = time.perf_counter(), 0, "ran every step"
    reached: int | None = None  # the step at which stop="train" met its flip target
    settling = 0  # the settling steps after it
    peak: list[float] = []
    bar = tqdm(
        total=steps,
        desc=f"fit {intervention.method}",
        disable=not (progress and distributed.is_main()),
        leave=False,
    )
    with _fitting.frozen(model):
        try:
            order, cursor = torch.randperm(len(train), generator=generator), 0
            for step in range(1, steps + 1):
                if cursor >= len(order):
                    order, cursor = torch.randperm(len(train), generator=generator), 0
                index = order[cursor : cursor + batch_size]
                cursor += batch_size
                # under torchrun each process runs its share of the rows, its loss weighted by
                # that share, and the gradients are summed: the step of the whole batch
                mine, part = distributed.shard(index), None
                optimizer.zero_grad(set_to_none=True)
                if len(mine):
                    batch = train.subset(mine)
                    rows = forward.prefix_rows(prefix, mine, batch)
                    part = forward.step_terms(model, intervention, batch, clean[mine], smooth, rows)
                    (part["loss"] * (len(mine) / len(index))).backward()
                terms = distributed.reduce_step(part, params, len(index)) or {}
                optimizer.step()
                if reached is None:
                    schedule.step()
                else:  # settling: linear decay from the rate at which the target was reached
                    left = 1 - (step - reached) / (settling + 1)
                    for group, rate in zip(optimizer.param_groups, peak, strict=True):
                        group["lr"] = rate * left
                _fitting.apply_masks(intervention, masks)
                if not all(bool(torch.isfinite(p).all()) for p in params):
                    raise AscaleError(
                        f"the parameters became NaN or infinite at step {step} (lr={lr}): "
                        "lower the learning rate"
                    )
                flipped[index] = terms.pop("flipped").cpu()
                terms["l1"] = intervention.l1().detach()
                if sparsity == "proximal":  # log the whole objective, as the "l1" mode does
                    terms["loss"] = terms["loss"].detach() + objective.lambda_min * terms["l1"]
                for key, value in terms.items():
                    history.setdefault(key, []).append(float(value.detach()))
                history.setdefault("flipped", []).append(float(flipped.float().mean()))
                postfix = {
                    "loss": f"{history['loss'][-1]:.3f}",
                    "flipped": f"{history['flipped'][-1]:.2f}",
                }
                if (
                    val is not None
                    and val_clean is not None
                    and (step % eval_every == 0 or step == steps)
                ):
                    score = _fitting.held_out_score(
                        model, intervention, val, val_clean, objective, batch_size, val_prefix
                    )
                    score = distributed.from_main(score)  # every rank stops at the same step
                    history.setdefault("val_step", []).append(step)
                    history.setdefault("val_loss", []).append(score)
                    postfix["val"] = f"{score:.3f}"
                    if tracker.update(step, score):
                        reason = f"validation loss did not improve for {patience} checks"
                        break
                bar.update(1)
                bar.set_postfix(postfix)
                if stop == "train" and reached is None and history["flipped"][-1] >= flip_target:
                    reached, peak = step, [g["lr"] for g in optimizer.param_groups]
                    settling = reached if settle is None else settle
                    reason = (
                        f"{history['flipped'][-1]:.0%} of the training prompts flipped both ways "
                        f"(target {flip_target:.0%}) at step {step}"
                    )
                if reached is not None and step >= reached + settling:
                    break
        except KeyboardInterrupt:  # Ctrl-C: keep what was learned (the best step, with validation)
            reason = f"interrupted (Ctrl-C) during step {step}"
    bar.close()
    if reached is not None and not reason.startswith("interrupted"):
        reason += f", then {step - reached} settling steps"
    done = min((len(v) for k, v in history.items() if not k.startswith("val_")), default=0)
    history = {k: v if k.startswith("val_") else v[:done] for k, v in history.items()}
    kept = done
    if val is not None and tracker.step > 0:
        kept = tracker.restore()
        reason += f"; kept the parameters of step {kept} (best validation loss)"
    settings = {
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "sparsity": sparsity,
        "stop": stop,
        "flip_target": flip_target,
        "settle": settling if reached is not None else settle,
        "val_size": val_size if val is not None else 0.0,
        "seed": seed,
        "n_train": len(train),
        "n_val": 0 if val is None else len(val),
    }
    return FitResult(
        intervention.method,
        done,
        reason != "ran every step",
        time.perf_counter() - start,
        objective,
        settings,
        history,
        kept_step=kept,
        stop_reason=reason,
    )
