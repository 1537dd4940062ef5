"""`ascale.fit`'s part of the training loop (`ascale.training._loop`): its settings (`Settings`,
checked), its step (`SteeringTrainer`: both signs of beta in one pass, Adam or the proximal
step, keep masks), its stop rules (the flip target and settling, or the validation stop: the
held-out score, the best step's parameters kept).
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Final

import torch
from torch import Tensor

from ascale import _checks, _tl, distributed
from ascale._checks import FLOAT32_MAX
from ascale._types import HookedModel
from ascale.data import ContrastSet
from ascale.errors import AscaleError
from ascale.interventions import Intervention
from ascale.training import _loop, _memory, _passes
from ascale.training.objective import Objective
from ascale.training.optim import SPARSITY, ProximalAdamax

__all__ = [
    "STOPS",
    "Best",
    "Settings",
    "SteeringTrainer",
    "apply_masks",
    "check_settings",
    "held_out_score",
    "keep_masks",
]

#: `fit`'s stop rules
STOPS: Final = ("validation", "train", "none")


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
    model: HookedModel,
    intervention: Intervention,
    data: ContrastSet,
    clean: Tensor,
    objective: Objective,
    batch_size: int,
    prefix: _tl.Prefix | None = None,
) -> float:
    """The whole objective (L1 included) on held-out prompts, without gradients."""
    total = 0.0
    with torch.no_grad():
        for begin in range(0, len(data), batch_size):
            index = torch.arange(begin, min(begin + batch_size, len(data)))
            batch = data.subset(index)
            rows = _passes.prefix_rows(prefix, index, batch)
            terms = _passes.step_terms(model, intervention, batch, clean[index], objective, rows)
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
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise AscaleError(f"{name} must be a positive integer, got {value!r}")
    if not (_checks.is_number(lr) and math.isfinite(lr) and 0 < lr <= 10):
        raise AscaleError(f"lr must be a finite number in (0, 10], got {lr!r}")
    if sparsity not in SPARSITY:
        raise AscaleError(f"sparsity must be one of {SPARSITY}, got {sparsity!r}")
    if stop not in STOPS:
        raise AscaleError(f"stop must be one of {STOPS}, got {stop!r}")
    if not (_checks.is_number(val_size) and 0 < val_size < 1):
        raise AscaleError(f"val_size must lie in (0, 1), got {val_size!r}")
    if not (_checks.is_number(flip_target) and 0.0 < flip_target <= 1.0):
        raise AscaleError(f"flip_target must be a share in (0, 1], got {flip_target!r}")
    if settle is not None and (not isinstance(settle, int) or settle < 0):
        raise AscaleError(
            f"settle must be None (as many steps as reaching the flip target took) or a whole "
            f"number of steps >= 0, got {settle!r}"
        )


@dataclass(frozen=True)
class Settings:
    """A fit's settings, every default resolved (`ascale.fit`'s arguments of the same names)."""

    steps: int
    lr: float
    batch_size: int
    sparsity: str
    stop: str
    flip_target: float
    settle: int | None
    val_size: float
    eval_every: int
    patience: int
    seed: int

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise AscaleError(f"seed must be a whole number, got {self.seed!r}")
        check_settings(
            self.steps,
            self.lr,
            self.batch_size,
            self.sparsity,
            self.stop,
            self.val_size,
            self.eval_every,
            self.patience,
            self.flip_target,
            self.settle,
        )


class SteeringTrainer:
    """`fit`'s `ascale.training._loop.Trainer`: the clean passes (computed once), the
    optimiser and its rate, the stop rules and the history."""

    def __init__(
        self,
        model: HookedModel,
        intervention: Intervention,
        data: ContrastSet,
        settings: Settings,
        objective: Objective,
        keep: dict[str, Tensor] | None,
    ) -> None:
        s = settings
        if intervention.position_tied:
            intervention.bind(data.n_pos)
        train, val = data, None
        if s.stop == "validation" and len(data) >= 10:  # below 10 prompts: the train stop
            train, val = data.split(test_size=s.val_size, seed=s.seed)
        elif s.stop == "validation":
            s = dataclasses.replace(s, stop="train")
        self.model, self.intervention = model, intervention
        self.settings, self.objective = s, objective
        self.train, self.val = train, val
        # the blocks below the intervention's lowest layer see clean prompts: computed once,
        # after the memory check (each prompt runs at both signs of beta)
        first = _tl.first_block(intervention.hook_names)
        width = int(train.tokens.shape[1])
        _memory.check_step_memory(model, 2, min(s.batch_size, len(train)), width, first)
        position = intervention.first_position  # and the positions before its first edit
        self.prefix = _passes.clean_prefix(model, train, first, s.batch_size, position)
        self.clean = _passes.clean_log_probs(model, train, s.batch_size, self.prefix)
        if val is not None:
            self.val_prefix = _passes.clean_prefix(model, val, first, s.batch_size, position)
            self.val_clean = _passes.clean_log_probs(model, val, s.batch_size, self.val_prefix)
        self.params = list(intervention.parameters())
        distributed.broadcast_parameters(self.params)  # one starting point on every rank
        proximal = s.sparsity == "proximal"
        self.optimizer: torch.optim.Optimizer = (
            ProximalAdamax(self.params, lr=s.lr, l1=objective.lambda_min)
            if proximal
            else torch.optim.Adam(self.params, lr=s.lr)
        )
        # the proximal step applies the L1 term itself: the gradient sees only the smooth terms
        self.smooth = dataclasses.replace(objective, lambda_min=0.0) if proximal else objective
        # cosine decay to zero over `steps`: late steps settle the parameters
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=s.steps)
        self.masks = keep_masks(intervention, keep)
        self.flipped = torch.zeros(len(train), dtype=torch.bool)  # each prompt as last seen
        self.history: dict[str, list[float]] = {}
        self.best = Best(intervention, s.patience)
        generator = torch.Generator().manual_seed(s.seed)
        self.batches = _loop.Batches(len(train), s.batch_size, generator)
        self.reason = "ran every step"
        self.reached: int | None = None  # the step at which stop="train" met its flip target
        self.settling, self.peak = 0, [0.0]
        self.name = f"fit {intervention.method}"
        self.postfix: dict[str, str] = {}

    def hint(self) -> str:
        """The objective weight whose term overflowed float32, else the learning rate."""
        last = {k: v[-1] for k, v in self.history.items() if v and not k.startswith("val_")}
        o = self.objective
        terms = (
            ("margin", o.margin, last.get("effectiveness", 0.0)),
            ("lambda_faith", o.lambda_faith, o.lambda_faith * last.get("faithfulness", 0.0)),
            ("lambda_min", o.lambda_min, o.lambda_min * last.get("l1", 0.0)),
        )
        for name, weight, term in terms:
            if not math.isfinite(term):
                return (
                    f"its term with Objective.{name}={weight:g} overflows float32 (largest "
                    f"{FLOAT32_MAX:.3g}): lower {name}"
                )
        return f"lr={self.settings.lr}: lower the learning rate"

    def step(self, step: int, index: Tensor) -> bool:
        """Run step `step` on rows `index`; ``True`` when a stop rule says to end here."""
        terms = self._gradient_step(index)
        self._set_rate(step)
        apply_masks(self.intervention, self.masks)
        if not all(bool(torch.isfinite(p).all()) for p in self.params):
            return False  # the loop names the step and the cause
        self._record(index, terms)
        return self._validation_says_stop(step) or self._train_says_stop(step)

    def _gradient_step(self, index: Tensor) -> dict[str, Tensor]:
        """Under torchrun each process runs its share of the rows, its loss weighted by that
        share, and the gradients are summed: the step of the whole batch."""
        mine, part = distributed.shard(index), None
        self.optimizer.zero_grad(set_to_none=True)
        if len(mine):
            batch = self.train.subset(mine)
            rows = _passes.prefix_rows(self.prefix, mine, batch)
            part = _passes.step_terms(
                self.model, self.intervention, batch, self.clean[mine], self.smooth, rows
            )
            (part["loss"] * (len(mine) / len(index))).backward()
        terms = distributed.reduce_step(part, self.params, len(index)) or {}
        self.optimizer.step()
        return terms

    def _set_rate(self, step: int) -> None:
        """Cosine decay; once the flip target is met, linear decay from the rate it was met at."""
        if self.reached is None:
            self.schedule.step()
            return
        left = 1 - (step - self.reached) / (self.settling + 1)
        for group, rate in zip(self.optimizer.param_groups, self.peak, strict=True):
            group["lr"] = rate * left

    def _record(self, index: Tensor, terms: dict[str, Tensor]) -> None:
        self.flipped[index] = terms.pop("flipped").cpu()
        terms["l1"] = self.intervention.l1().detach()
        if self.settings.sparsity == "proximal":  # log the whole objective, as "l1" does
            terms["loss"] = terms["loss"].detach() + self.objective.lambda_min * terms["l1"]
        for key, value in terms.items():
            self.history.setdefault(key, []).append(float(value.detach()))
        self.history.setdefault("flipped", []).append(float(self.flipped.float().mean()))
        self.postfix = {
            "loss": f"{self.history['loss'][-1]:.3f}",
            "flipped": f"{self.history['flipped'][-1]:.2f}",
        }

    def _validation_says_stop(self, step: int) -> bool:
        s = self.settings
        if self.val is None or not (step % s.eval_every == 0 or step == s.steps):
            return False
        score = held_out_score(
            self.model,
            self.intervention,
            self.val,
            self.val_clean,
            self.objective,
            s.batch_size,
            self.val_prefix,
        )
        score = distributed.from_main(score)  # every rank stops at the same step
        self.history.setdefault("val_step", []).append(step)
        self.history.setdefault("val_loss", []).append(score)
        self.postfix["val"] = f"{score:.3f}"
        if self.best.update(step, score):
            self.reason = f"validation loss did not improve for {s.patience} checks"
            return True
        return False

    def _train_says_stop(self, step: int) -> bool:
        s, share = self.settings, self.history["flipped"][-1]
        if s.stop == "train" and self.reached is None and share >= s.flip_target:
            self.reached, self.peak = step, [g["lr"] for g in self.optimizer.param_groups]
            self.settling = self.reached if s.settle is None else s.settle
            self.reason = (
                f"{share:.0%} of the training prompts flipped both ways "
                f"(target {s.flip_target:.0%}) at step {step}"
            )
        return self.reached is not None and step >= self.reached + self.settling

    def finish(self, step: int, wall_time_s: float) -> dict[str, Any]:
        """`FitResult`'s fields (but the method) once the loop has ended at `step`."""
        s, reason = self.settings, self.reason
        if self.reached is not None:
            reason += f", then {step - self.reached} settling steps"
        per_step = [len(v) for k, v in self.history.items() if not k.startswith("val_")]
        done = min(per_step, default=0)
        history = {k: v if k.startswith("val_") else v[:done] for k, v in self.history.items()}
        kept = done
        if self.val is not None and self.best.step > 0:
            kept = self.best.restore()
            reason += f"; kept the parameters of step {kept} (best validation loss)"
        settings = {
            **{k: getattr(s, k) for k in ("steps", "lr", "batch_size", "sparsity", "stop")},
            "flip_target": s.flip_target,
            "settle": self.settling if self.reached is not None else s.settle,
            "val_size": s.val_size if self.val is not None else 0.0,
            "seed": s.seed,
            "n_train": len(self.train),
            "n_val": 0 if self.val is None else len(self.val),
        }
        return {
            "steps_run": done,
            "stopped_early": reason != "ran every step",
            "wall_time_s": wall_time_s,
            "objective": self.objective,
            "settings": settings,
            "history": history,
            "kept_step": kept,
            "stop_reason": reason,
        }
