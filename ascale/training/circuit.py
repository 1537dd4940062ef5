"""Fitting circuit scalars: learn which components, kept, carry the clean behaviour with every
other component of the grid ablated (`fit_circuit`).

Each step draws a circuit size ``k`` from the sizes CPR and CMD measure, each with its weight in
their trapezoid area (the sizes the areas weigh most are trained most), keeps the top ``k``
scores through a soft mask (`ascale.interventions.soft_top_k`), ablates the rest of the grid,
and follows the gradient of what the circuit kept:

- ``"logit_diff"`` (default): the circuit's logit difference ``m`` (correct minus wrong), to be
  high;
- ``"faithful"``: ``(m - m_clean)²`` per prompt, to be small.

Both are divided by the clean-to-ablated gap ``m(N) - m(∅)`` of the training prompts. The
optimiser is plain SGD, on purpose: a score then moves in proportion to its component's effect
on ``m`` in the circuits drawn (at the clean model the gradient is attribution patching's
score), so its sign says whether the component supports the answer (CPR's order) and its size
how much it matters either way (CMD's order, `rank_components`). Adam, which moves every score by
about the learning rate whatever its gradient, kept the sign but lost the size: on SmolLM2's IOI
heads its scores gave CPR 1.55 but CMD 0.58, no better than random (`docs/circuits.md`).

The ablated activations, the clean ``m`` and the gap are computed once, before the first step;
the model's weights stay frozen. The steps run on the one training loop
(`ascale.training._loop`), as `ascale.fit`'s do: this module supplies the step
(`CircuitTrainer`) and its checks.
"""

import math
import time
from typing import Final

import torch
from torch import Tensor

from ascale import _checks, _tl, passes
from ascale._types import HookedModel
from ascale.data import ContrastSet, check_aligned, check_data
from ascale.errors import AscaleError
from ascale.grid import FRACTIONS, circuit_sizes
from ascale.interventions import CircuitScalars
from ascale.training import _loop
from ascale.training.fit import FitResult
from ascale.training.objective import answer_logit_diff

__all__ = ["OBJECTIVES", "CircuitTrainer", "fit_circuit"]

#: what the circuit fit asks of a circuit (the module docstring says what each asks)
OBJECTIVES: Final = ("logit_diff", "faithful")


def fit_circuit(
    model: HookedModel,
    scalars: CircuitScalars,
    data: ContrastSet,
    corrupted: ContrastSet | None = None,
    *,
    objective: str = "logit_diff",
    steps: int = 120,
    lr: float = 0.3,
    batch_size: int = 16,
    temperature: float = 0.5,
    seed: int = 0,
    progress: bool = True,
) -> FitResult:
    """Learn `scalars`' scores on `data` so that each top-k circuit keeps the clean behaviour.

    Args:
        model: the model (frozen).
        scalars: the circuit scalars to fit (their grid; the scores start tiny, in attribution
            patching's order: the gradient at the clean model).
        data: prompts of one token length.
        corrupted: their counterfactual prompts, row by row (needed for the counterfactual
            ablation, the default of `CircuitScalars`).
        objective: ``"logit_diff"`` or ``"faithful"`` (the module docstring says what each
            asks).
        steps: optimiser steps (SGD, constant rate).
        lr: learning rate of the scores.
        batch_size: prompts a step.
        temperature: of the soft top-k mask (`ascale.interventions.soft_top_k`).
        seed: the batches and the sizes drawn.
        progress: show a progress bar.

    Example:
        >>> circuit = ascale.CircuitScalars(model, sites="heads", positions=[-1])
        >>> result = fit_circuit(model, circuit, data, corrupted, steps=3, progress=False)
        >>> result.steps_run, circuit.scores().shape == (len(ascale.Grid.of(circuit)),)
        (3, True)
    """
    _check(scalars, data, corrupted, objective, steps, lr, batch_size, temperature)
    started = time.perf_counter()
    scalars.bind(data.n_pos)
    generator = torch.Generator().manual_seed(seed)
    source = _ablated(model, scalars, data, corrupted)
    # before the first token a counterfactual changes, ablation is a no-op, and before the
    # grid's first position nothing is ablated: every pass starts after those positions, from
    # their clean keys and values (`_tl.Shared`)
    counterfactual = scalars.ablation == "counterfactual"
    clean = passes.clean_length(scalars.grid, data, corrupted if counterfactual else None)
    shared = _tl.shared_of(model, data.tokens, clean)
    m_clean, gap = _clean(model, scalars, data, source, shared)
    with _loop.frozen(model, "fit_circuit"):  # the gradient goes to the keep mask only
        _first_order_start(model, scalars, data, source, gap, shared)
    trainer = CircuitTrainer(model, scalars, data, source, shared, m_clean, gap,
                             objective=objective, lr=lr, temperature=temperature,
                             generator=generator)  # fmt: skip
    batches = _loop.Batches(len(data), batch_size, generator)
    show = progress and len(data) > 0
    _loop.run(model, trainer, batches, steps=steps, progress=show, verb="fit_circuit")
    settings = {
        "objective": objective,
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "temperature": temperature,
        "seed": seed,
        "n_train": len(data),
        "ablation": scalars.ablation,
        "gap": gap,
    }
    return FitResult(
        "circuit", steps, False, time.perf_counter() - started, None, settings, trainer.history,
        kept_step=steps, stop_reason="ran every step",
    )  # fmt: skip


class CircuitTrainer:
    """`fit_circuit`'s `ascale.training._loop.Trainer`: each step draws a circuit size,
    keeps the top scores through a soft mask, ablates the rest and takes an SGD step on the
    objective."""

    def __init__(
        self,
        model: HookedModel,
        scalars: CircuitScalars,
        data: ContrastSet,
        source: dict[str, Tensor],
        shared: _tl.Shared | None,
        m_clean: Tensor,
        gap: float,
        *,
        objective: str,
        lr: float,
        temperature: float,
        generator: torch.Generator,
    ) -> None:
        self.model, self.scalars, self.data, self.source = model, scalars, data, source
        self.shared, self.m_clean, self.gap = shared, m_clean, gap
        self.objective, self.temperature, self.generator = objective, temperature, generator
        self.sizes, self.weights = _sizes(len(scalars.grid))
        self.params: list[Tensor] = list(scalars.parameters())
        self.optimizer = torch.optim.SGD(self.params, lr=lr)
        self.history: dict[str, list[float]] = {"loss": [], "f": [], "k": []}
        self.name, self.postfix = "fit circuit", dict[str, str]()
        self.lr = lr

    def step(self, step: int, rows: Tensor) -> bool:
        """One SGD step on a circuit of a size drawn for this step; it runs every step."""
        k = self.sizes[int(torch.multinomial(self.weights, 1, generator=self.generator))]
        keep = self.scalars.mask(k, self.temperature)
        batch = self.data.subset(rows)
        part = {n: a[rows] for n, a in self.source.items()}
        m = _masked_m(self.model, self.scalars, batch, part, keep, _rows(self.shared, rows))
        loss = _loss(self.objective, m, self.m_clean[rows], self.gap)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.history["loss"].append(float(loss.detach()))
        self.history["f"].append(float((m.detach() - self.m_clean[rows]).mean() / self.gap + 1))
        self.history["k"].append(float(k))
        self.postfix = {"loss": f"{self.history['loss'][-1]:.4f}", "k": str(k)}
        return False

    def hint(self) -> str:
        if self.history["loss"] and not math.isfinite(self.history["loss"][-1]):
            return (
                f"the circuit's logit difference overflowed (lr={self.lr}, temperature="
                f"{self.temperature}): lower the learning rate"
            )
        return f"lr={self.lr}: lower the learning rate"


def _check(
    scalars: CircuitScalars,
    data: ContrastSet,
    corrupted: ContrastSet | None,
    objective: str,
    steps: int,
    lr: float,
    batch_size: int,
    temperature: float,
) -> None:
    if not isinstance(scalars, CircuitScalars):
        raise AscaleError(f"fit_circuit fits CircuitScalars, got a {type(scalars).__name__}")
    if objective not in OBJECTIVES:
        raise AscaleError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise AscaleError(f"{name} must be a positive integer, got {value!r}")
    _checks.real("lr", lr, low=0.0, open_low=True)
    _checks.real("temperature", temperature, low=0.0, open_low=True)
    check_data(data)
    if not torch.is_grad_enabled():  # before any work (`_loop.frozen` says it again)
        raise AscaleError(
            "fit_circuit needs gradients, but it was called under torch.no_grad() or "
            "torch.inference_mode(): call it outside that block"
        )
    if scalars.ablation == "counterfactual" and corrupted is None:
        raise AscaleError(
            "counterfactual ablation needs each prompt's counterfactual: give `corrupted` (a "
            "jsonl row's 'corrupted' field; ascale.tasks.ccc_corrupt / ioi_corrupt), or build "
            "the CircuitScalars with ablation='mean' or 'zero'"
        )
    if corrupted is not None:
        check_aligned(data, corrupted)


def _ablated(
    model: HookedModel, scalars: CircuitScalars, data: ContrastSet, corrupted: ContrastSet | None
) -> dict[str, Tensor]:
    """What each component is ablated to, for every prompt: its counterfactual activation, its
    mean over `data` at each position, or zero (as `ascale.score_circuits` ablates)."""
    names = scalars.hook_names
    mean = passes.mean_acts(model, data, names) if scalars.ablation == "mean" else None
    parts: dict[str, list[Tensor]] = {n: [] for n in names}
    with torch.inference_mode():
        for rows in passes.chunks(range(len(data)), 64):
            acts = passes.capture_source(
                model, data, corrupted, rows, names, scalars.ablation, mean
            )
            for n in names:
                parts[n].append(acts[n])
    return {n: torch.cat(p).clone() for n, p in parts.items()}


def _clean(
    model: HookedModel,
    scalars: CircuitScalars,
    data: ContrastSet,
    source: dict[str, Tensor],
    shared: _tl.Shared | None,
) -> tuple[Tensor, float]:
    """Each prompt's clean ``m``, and the clean-to-ablated gap of the mean ``m``."""
    n = len(scalars.grid)
    with torch.no_grad():
        m_clean = -passes.clean_deltas(model, data)
        m_empty = torch.cat(
            [
                _masked_m(model, scalars, data.subset(r), {k: a[r] for k, a in source.items()},
                          torch.zeros(n), _rows(shared, r))
                for r in passes.chunks(range(len(data)), 64)
            ]
        )  # fmt: skip
    gap = float((m_clean - m_empty).mean())
    if abs(gap) < 1e-6:
        raise AscaleError(
            "ablating the whole grid does not change the logit difference on these prompts: "
            "no circuit to find here"
        )
    return m_clean.clone(), gap


def _first_order_start(
    model: HookedModel,
    scalars: CircuitScalars,
    data: ContrastSet,
    source: dict[str, Tensor],
    gap: float,
    shared: _tl.Shared | None,
) -> None:
    """Scores start tiny, in attribution patching's order: ``∂m/∂s`` at the clean model (``s =
    1``) over `data`, scaled to at most 0.01. Components the fit never moves keep that order
    instead of a random one (on IOI's 3,780 heads x positions: CMD 0.018 against 0.046)."""
    n = len(scalars.grid)
    keep = torch.ones(n, requires_grad=True)
    total = torch.zeros(n)
    for rows in passes.chunks(range(len(data)), 16):
        batch = data.subset(rows)
        part = {k: a[rows] for k, a in source.items()}
        m = _masked_m(model, scalars, batch, part, keep, _rows(shared, rows))
        (grad,) = torch.autograd.grad(m.sum() / gap, keep)
        total += grad.detach().cpu()
    largest = float(total.abs().max())
    start = 1e-2 * total / largest if largest > 0 else torch.zeros(n)
    with torch.no_grad():
        for name, value in scalars.grid.to_params(start).items():
            scalars.params[name].copy_(value)


def _sizes(n: int) -> tuple[list[int], Tensor]:
    """The circuit sizes below the whole grid and their weights in CPR's trapezoid area."""
    fractions, ks = list(FRACTIONS), circuit_sizes(n)
    weights: dict[int, float] = {}
    for i, k in enumerate(ks):
        width = (fractions[min(i + 1, len(ks) - 1)] - fractions[max(i - 1, 0)]) / 2
        if k < n:
            weights[k] = weights.get(k, 0.0) + width
    if not weights:  # a grid of one component
        return [n], torch.ones(1)
    sizes = sorted(weights)
    return sizes, torch.tensor([weights[k] for k in sizes])


def _masked_m(
    model: HookedModel,
    scalars: CircuitScalars,
    batch: ContrastSet,
    source: dict[str, Tensor],
    keep: Tensor,
    shared: _tl.Shared | None = None,
) -> Tensor:
    """``m`` of each prompt with the circuit `keep` (everything else ablated to `source`),
    from `shared`'s positions on where given."""
    device = _tl.first_device(model)
    with scalars.circuit(model, source, keep, start=0 if shared is None else shared.n):
        logits = _tl.run(model, batch.tokens.to(device), last_only=True, shared=shared)[:, -1]
    correct, wrong = (ids.to(logits.device) for ids in (batch.correct_ids, batch.wrong_ids))
    return -answer_logit_diff(logits.float(), correct, wrong)


def _rows(shared: _tl.Shared | None, rows: Tensor | list[int]) -> _tl.Shared | None:
    return None if shared is None else shared.rows(rows)


def _loss(objective: str, m: Tensor, m_clean: Tensor, gap: float) -> Tensor:
    if objective == "logit_diff":
        return -m.mean() / gap
    return (((m - m_clean) / gap) ** 2).mean()
