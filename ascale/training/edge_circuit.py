"""Fitting edge circuit scalars: one learned score per edge of MIB's graph, read as how much of
the edge a circuit keeps (`fit_edge_circuit`).

The node recipe carried to edges (`ascale.training.circuit`, ``docs/circuits.md``): each step
draws a circuit size ``k`` from MIB's sizes (``int(p * N)`` edges, weighted by their share of
the trapezoid area CPR and CMD measure), keeps the top ``k`` scores through a soft mask
``sigmoid((score - tau_k) / T)`` (`ascale.interventions.soft_top_k`), ablates every other edge
(its destination reads the source's counterfactual output instead of its live one,
`ascale._tl.masked_run`) and takes a plain SGD step on ``-(m(C) - m(∅)) / (m(N) - m(∅))``, ``m``
the logit difference. Plain SGD keeps the scores' absolute order meaningful, as at node level.

The scores start tiny, in the order of a first-order ranking (EAP-IG's by default:
``0.01 * start / max|start|``), so edges the fit never moves keep that order; ``T`` is a share of
the starting scores' spread, and the learning rate is set so the first step moves the largest
score by ``T / 2``. Gradients reach every score through the one buffer of source differences the
masked pass keeps, not a copy per destination. The model's weights stay frozen.
"""

import time
from typing import Final

import torch
from jaxtyping import Float
from torch import Tensor

from ascale import _tl, passes
from ascale._types import HookedModel
from ascale.data import ContrastSet, check_aligned, check_data
from ascale.errors import AscaleError
from ascale.graph import EdgeGraph
from ascale.grid import FRACTIONS
from ascale.interventions import soft_top_k
from ascale.training import _loop
from ascale.training.fit import FitResult
from ascale.training.objective import answer_logit_diff

__all__ = ["EdgeCircuitTrainer", "edge_sizes", "fit_edge_circuit"]

#: the starting scores' scale, and the mask's temperature as a share of their spread
START_SCALE: Final = 0.01
TEMPERATURE_SHARE: Final = 0.05


def edge_sizes(n_edges: int) -> tuple[list[int], Tensor]:
    """MIB's circuit sizes below the whole graph (``int(p * N)``, at least one edge) and their
    weights in the trapezoid area over `FRACTIONS`.

    Example:
        >>> edge_sizes(1000)[0]
        [1, 2, 5, 10, 20, 50, 100, 200, 500]
    """
    fractions = list(FRACTIONS)
    weights: dict[int, float] = {}
    for i, p in enumerate(fractions):
        k = max(1, int(p * n_edges))
        width = (fractions[min(i + 1, len(fractions) - 1)] - fractions[max(i - 1, 0)]) / 2
        if k < n_edges:
            weights[k] = weights.get(k, 0.0) + width
    sizes = sorted(weights) or [n_edges]
    return sizes, torch.tensor([weights.get(k, 1.0) for k in sizes])


def fit_edge_circuit(
    model: HookedModel,
    data: ContrastSet,
    corrupted: ContrastSet | None,
    start: Float[Tensor, " edge"],
    *,
    ablation: str = "counterfactual",
    steps: int = 50,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> tuple[Float[Tensor, " edge"], FitResult]:
    """Learn one score per edge on `data` so that each top-k edge circuit keeps the clean
    behaviour, the other edges ablated (to `corrupted`, row by row, by default).

    Args:
        model: the model (frozen).
        data: prompts of one token length.
        corrupted: their counterfactual prompts, row by row (``None`` with a mean or zero
            `ablation`).
        start: a first-order score per edge (EAP-IG's, say): the scores start in its order.
        ablation: what an ablated edge carries from its source: its counterfactual output,
            its mean over `data` at each position, or zero (`ascale.passes.EdgeSources`).
        steps: SGD steps.
        batch_size: prompts a step (8: on SmolLM2 the fit then peaks at 2.9 GB, the model and
            its ungrouped copy included, against 3.8 GB at 16; ``benchmarks/results/edges_ioi.json``).
        seed: the batches and the sizes drawn.
        progress: show a progress bar.

    Returns:
        The learned scores (``[edge]``, MIB's order; positive supports the correct answer) and
        the fit's `FitResult`.

    Example:
        >>> start = ascale.eap(model, data, corrupted).scores
        >>> scores, result = fit_edge_circuit(model, data, corrupted, start, steps=2)
        >>> scores.shape == start.shape, result.steps_run
        (True, 2)
    """
    graph = EdgeGraph.of(model)
    _check(graph, data, corrupted, start, steps, batch_size)
    started = time.perf_counter()
    sources = passes.EdgeSources(model, graph, data, corrupted, ablation)
    trainer = EdgeCircuitTrainer(model, graph, data, sources, start, seed=seed)
    batches = _loop.Batches(len(data), batch_size, trainer.generator)
    _loop.run(model, trainer, batches, steps=steps, progress=progress, verb="fit_edge_circuit")
    settings = {
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "n_train": len(data),
        "lr": trainer.lr,
        "temperature": trainer.temperature,
        "gap": trainer.gap,
        "n_edges": graph.n_edges,
        "ablation": ablation,
    }
    wall = time.perf_counter() - started
    result = FitResult("edge_circuit", steps, False, wall, None, settings, trainer.history,
                       kept_step=steps, stop_reason="ran every step")  # fmt: skip
    return trainer.scores.detach().clone(), result


class EdgeCircuitTrainer:
    """`fit_edge_circuit`'s `ascale.training._loop.Trainer`."""

    def __init__(
        self,
        model: HookedModel,
        graph: EdgeGraph,
        data: ContrastSet,
        sources: passes.EdgeSources,
        start: Tensor,
        *,
        seed: int,
    ) -> None:
        self.model, self.graph, self.data, self.sources = model, graph, data, sources
        self.generator = torch.Generator().manual_seed(seed)
        start = start.detach().float().cpu()
        largest = float(start.abs().max())
        scores = START_SCALE * start / largest if largest > 0 else torch.zeros_like(start)
        self.scores = torch.nn.Parameter(scores)
        spread = float(scores.std())
        self.temperature = TEMPERATURE_SHARE * spread if spread > 0 else 1e-4
        self.gap, self.m_empty = _gap(model, graph, data, sources)
        self.sizes, self.weights = edge_sizes(graph.n_edges)
        self.optimizer = torch.optim.SGD([self.scores], lr=1.0)  # set at the first step
        self.lr = 0.0
        self.history: dict[str, list[float]] = {"loss": [], "f": [], "k": []}
        self.name, self.postfix = "fit edge circuit", dict[str, str]()

    @property
    def params(self) -> list[Tensor]:
        return [self.scores]

    def step(self, step: int, rows: Tensor) -> bool:
        """One SGD step on a circuit of a size drawn for this step; it runs every step."""
        k = self.sizes[int(torch.multinomial(self.weights, 1, generator=self.generator))]
        keep = soft_top_k(self.scores, k, self.temperature)
        batch = self.data.subset(rows)
        with torch.no_grad():
            corrupt = self.sources(rows)
        logits = _tl.masked_run(self.model, self.graph, batch.tokens, keep[None], corrupt)
        m = _m(logits, batch)
        f = (m.mean() - self.m_empty) / self.gap
        loss = -f
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step == 1:  # the first step moves the largest score by T / 2
            largest = float(self.scores.grad.abs().max()) if self.scores.grad is not None else 0.0
            self.lr = self.temperature / 2 / largest if largest > 0 else 1.0
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr
        self.optimizer.step()
        self.history["loss"].append(float(loss.detach()))
        self.history["f"].append(float(f.detach()))
        self.history["k"].append(float(k))
        self.postfix = {"f": f"{self.history['f'][-1]:.3f}", "k": str(k)}
        return False

    def hint(self) -> str:
        return f"the first step's rate {self.lr:.3g} overshot: try another start or seed"


def _m(logits: Tensor, batch: ContrastSet) -> Float[Tensor, " batch"]:
    """The logit difference, correct minus wrong, at the last position."""
    correct, wrong = (ids.to(logits.device) for ids in (batch.correct_ids, batch.wrong_ids))
    return -answer_logit_diff(logits[:, -1].float(), correct, wrong)


def _gap(
    model: HookedModel, graph: EdgeGraph, data: ContrastSet, sources: passes.EdgeSources
) -> tuple[float, float]:
    """``m(N) - m(∅)`` over `data` and ``m(∅)`` (the empty circuit: the counterfactual run, or
    every edge ablated to the mean or zero)."""
    device = _tl.first_device(model)
    clean: list[Tensor] = []
    empty: list[Tensor] = []
    with torch.inference_mode():
        for begin in range(0, len(data), 32):
            rows = list(range(begin, min(begin + 32, len(data))))
            batch = data.subset(rows)
            logits = _tl.run(model, batch.tokens.to(device), last_only=True)
            clean.append(_m(logits, batch))
            if sources.corrupted is not None and sources.ablation == "counterfactual":
                tokens = sources.corrupted.subset(rows).tokens.to(device)
                logits = _tl.run(model, tokens, last_only=True)
            else:
                none = torch.zeros(1, graph.n_edges)
                logits = _tl.masked_run(model, graph, batch.tokens, none, sources(rows))
            empty.append(_m(logits, batch))
    m_clean, m_empty = float(torch.cat(clean).mean()), float(torch.cat(empty).mean())
    if abs(m_clean - m_empty) < 1e-6:
        raise AscaleError(
            f"ablating every edge ({sources.ablation}) gives the clean logit difference on "
            "these prompts: there is no circuit to find"
        )
    return m_clean - m_empty, m_empty


def _check(
    graph: EdgeGraph,
    data: ContrastSet,
    corrupted: ContrastSet | None,
    start: Tensor,
    steps: int,
    batch_size: int,
) -> None:
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise AscaleError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(start, Tensor) or tuple(start.shape) != (graph.n_edges,):
        shape = tuple(start.shape) if isinstance(start, Tensor) else type(start).__name__
        raise AscaleError(f"start must hold one score per edge ({graph.n_edges}), got {shape}")
    if not bool(torch.isfinite(start).all()):
        raise AscaleError("start holds NaN or infinite scores")
    check_data(data)
    if corrupted is not None:
        check_aligned(data, corrupted)
