"""Edge-level circuits in MIB's convention: EAP and EAP-IG scores, and faithfulness curves.

Edges are those of `ascale.graph.EdgeGraph`. Ablating an edge adds, at its destination and every
position, its source's counterfactual minus live output (`ascale._tl.masked_run`).

- `eap`: attribution patching on edges (Syed et al. 2023; EAP-IG's ``get_scores_eap``):
  ``score = Σ over prompts and positions of (corrupted - clean)_src · ∂loss/∂input_dst`` with
  ``loss = -(logit(correct) - logit(wrong))`` at the last position: a **positive score supports
  the correct answer**. MIB divides by the number of prompts; the order is the same.
- `eap_ig`: EAP-IG-inputs (Hanna et al. 2024): the gradient averaged over `steps` runs whose
  token embeddings are ``corrupted + k/steps · (clean - corrupted)``, ``k = 0 .. steps-1``.
- `score_edges`: MIB's protocol. For each fraction ``p`` of `FRACTIONS`, the top ``int(p * N)``
  edges, pruned (`EdgeGraph.prune`); ``f = (m(C) - m(∅)) / (m(N) - m(∅))``, ``m`` the mean logit
  difference; CPR is the area under ``f`` (order by signed score), CMD the area under ``|1 - f|``
  (order by absolute score); ``random`` averages seeded random orders.

Example:
    >>> scores = eap(model, data, corrupted)
    >>> scored = score_edges(model, data, corrupted, [scores], n_random=1)
    >>> list(scored.summary().index)
    ['eap', 'random']
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ascale import _tl, passes
from ascale._types import HookedModel
from ascale.analysis.circuits import average_random
from ascale.analysis.edge_results import (
    EdgeAttributionResult,
    EdgeCircuitResult,
    edge_order,
    top_circuit,
)
from ascale.data import ContrastSet, check_aligned, check_data
from ascale.errors import AscaleError
from ascale.graph import EdgeGraph
from ascale.grid import FRACTIONS

__all__ = ["eap", "eap_ig", "score_edges"]


# ---- the metric ----


def _logit_diff(logits: Tensor, correct: Tensor, wrong: Tensor) -> Float[Tensor, " batch"]:
    """``logit(correct) - logit(wrong)`` at the last position, per row (copies repeat `correct`)."""
    last = logits[:, -1].float()
    copies = len(last) // len(correct)
    pick = torch.stack([correct, wrong], 1).repeat(copies, 1).to(last.device)
    both = last.gather(1, pick)
    return both[:, 0] - both[:, 1]


def _check(data: ContrastSet, corrupted: ContrastSet | None) -> None:
    """A non-empty set of one token length, and its counterfactuals row by row (`check_aligned`:
    each row's answers and length)."""
    check_data(data)
    _ = data.n_pos  # one length
    if corrupted is not None:
        check_aligned(data, corrupted)


def _chunks(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(n, i + size))) for i in range(0, n, max(1, size))]


# ---- rankings ----


def eap(
    model: HookedModel,
    data: ContrastSet,
    corrupted: ContrastSet | None = None,
    *,
    ablation: str = "counterfactual",
    batch_size: int = 16,
) -> EdgeAttributionResult:
    """Edge attribution patching: one corrupted forward, one clean forward and backward per batch.

    With ``ablation="mean"`` or ``"zero"`` (no `corrupted` needed), a source's ablated output
    is its mean over `data` at each position, or zero (`ascale.passes.EdgeSources`).

    Example:
        >>> scores = eap(model, data, corrupted)
        >>> scores.scores.shape
        torch.Size([110])
    """
    return _attribute(model, data, corrupted, ablation, steps=0, batch_size=batch_size)


def eap_ig(
    model: HookedModel,
    data: ContrastSet,
    corrupted: ContrastSet | None = None,
    *,
    ablation: str = "counterfactual",
    steps: int = 5,
    batch_size: int = 16,
) -> EdgeAttributionResult:
    """EAP-IG-inputs: EAP's gradient averaged over `steps` embeddings interpolated between the
    ablated and the clean ones (`eap`'s `ablation`).

    Example:
        >>> eap_ig(model, data, corrupted, steps=2).info
        {'steps': 2}
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AscaleError(f"steps must be a positive integer, got {steps!r}")
    return _attribute(model, data, corrupted, ablation, steps=steps, batch_size=batch_size)


def _attribute(
    model: HookedModel,
    data: ContrastSet,
    corrupted: ContrastSet | None,
    ablation: str,
    *,
    steps: int,
    batch_size: int,
) -> EdgeAttributionResult:
    _check(data, corrupted)
    graph = EdgeGraph.of(model)
    sources = passes.EdgeSources(model, graph, data, corrupted, ablation)
    total = torch.zeros(graph.n_src, graph.n_dst)
    for rows in _chunks(len(data), batch_size):
        batch = data.subset(rows)

        def loss(logits: Tensor, batch: ContrastSet = batch) -> Tensor:
            return -_logit_diff(logits, batch.correct_ids, batch.wrong_ids).sum()

        corrupt = sources(rows)
        if steps == 0:
            total += _tl.edge_gradients(model, graph, batch.tokens, corrupt, loss).cpu()
            continue
        clean = _tl.source_outputs(model, graph, batch.tokens)
        for k in range(steps):
            embed = corrupt[0] + (k / steps) * (clean[0] - corrupt[0])
            total += (
                _tl.edge_gradients(
                    model, graph, batch.tokens, corrupt, loss, clean=clean, embed=embed
                ).cpu()
                / steps
            )
    info: dict[str, Any] = {"steps": steps} if steps else {}
    method = "eap_ig" if steps else "eap"
    if ablation != "counterfactual":
        info["ablation"] = ablation
    return EdgeAttributionResult(method, graph, graph.sparse(total), len(data), info)


# ---- scoring ----


def score_edges(
    model: HookedModel,
    data: ContrastSet,
    corrupted: ContrastSet | None,
    rankings: Sequence[EdgeAttributionResult] | Mapping[str, EdgeAttributionResult | Tensor],
    *,
    ablation: str = "counterfactual",
    fractions: Sequence[float] = FRACTIONS,
    n_random: int = 5,
    seed: int = 0,
    max_batch: int = 64,
    progress: bool = False,
) -> EdgeCircuitResult:
    """Faithfulness ``f`` of each ranking's top ``int(p * N)`` edges (pruned), CPR and CMD.

    Args:
        model: the model.
        data: the prompts (one token length; a test split).
        corrupted: their counterfactual prompts, aligned with `data` (``None`` with a mean or
            zero `ablation`).
        rankings: `EdgeAttributionResult`s (by ``method``), or a mapping from names to results
            or to ``[edge]`` score tensors; a positive score supports the correct answer.
        ablation: what an edge outside a circuit carries from its source: its output on the
            counterfactual prompt (default), its mean over `data` at each position, or zero.
        fractions: the circuit sizes as fractions of the edges.
        n_random: random orders averaged into the ``random`` row (0 for none).
        max_batch: rows per forward pass (prompts × circuits scored at once).

    Example:
        >>> scored = score_edges(model, data, corrupted, {"eap": eap(model, data, corrupted)},
        ...                      n_random=0)
        >>> scored.curves["k"].tolist()[-1]
        110
    """
    _check(data, corrupted)
    graph = EdgeGraph.of(model)
    named = _named(rankings, graph)
    orders = _orders(named, graph.n_edges, n_random, seed)
    circuits, plan = _plan(graph, orders, fractions)
    empty = torch.zeros(graph.n_edges, dtype=torch.bool)
    full = torch.ones(graph.n_edges, dtype=torch.bool).numpy().tobytes()
    circuits.setdefault(empty.numpy().tobytes(), empty)
    circuits.pop(full, None)  # every edge kept is the clean model
    sources = passes.EdgeSources(model, graph, data, corrupted, ablation)
    m = _metrics(model, graph, data, sources, circuits, max_batch, progress)
    m[full] = _clean_metric(model, data, max_batch)
    m_clean, m_empty = m[full], m[empty.numpy().tobytes()]
    gap = m_clean - m_empty
    if abs(gap) < 1e-6:
        raise AscaleError(
            f"the counterfactual run gives the clean logit difference ({m_clean:.4g}): no curve"
        )
    rows = [
        (name, p, k, ns, na, (m[a] - m_empty) / gap, (m[b] - m_empty) / gap)
        for name, p, k, ns, na, a, b in plan
    ]
    columns = ["method", "fraction", "k", "n_signed", "n_abs", "f_signed", "f_abs"]
    curves = average_random(pd.DataFrame(rows, columns=columns), columns[3:])
    return EdgeCircuitResult(
        curves, float(m_clean), float(m_empty), graph.n_edges, len(data), sources.ablation
    )


def _orders(
    named: dict[str, Tensor], n_edges: int, n_random: int, seed: int
) -> dict[str, tuple[Tensor, Tensor]]:
    """Edge indices, best first, by signed score and by magnitude (`edge_order`); the random
    orders use one permutation for both."""
    orders = {
        name: (edge_order(scores), edge_order(scores, absolute=True))
        for name, scores in named.items()
    }
    rng = np.random.default_rng(seed)
    for i in range(n_random):
        perm = torch.as_tensor(rng.permutation(n_edges))
        orders[f"random#{i}"] = (perm, perm)
    return orders


Plan = list[tuple[str, float, int, int, int, bytes, bytes]]


def _plan(
    graph: EdgeGraph, orders: dict[str, tuple[Tensor, Tensor]], fractions: Sequence[float]
) -> tuple[dict[bytes, Tensor], Plan]:
    """Every distinct pruned circuit (by its bytes), and per method and fraction: ``k``, the
    edges left after pruning and the keys of the signed and the absolute circuit."""
    circuits: dict[bytes, Tensor] = {}
    plan: Plan = []
    for name, pair in orders.items():
        for p in fractions:
            k = int(p * graph.n_edges)  # MIB's size (0 for small graphs and fractions)
            keys, sizes = [], []
            for order in pair:
                keep = top_circuit(graph, order, k)
                key = keep.numpy().tobytes()
                circuits.setdefault(key, keep)
                keys.append(key)
                sizes.append(int(keep.sum()))
            plan.append((name, p, k, sizes[0], sizes[1], keys[0], keys[1]))
    return circuits, plan


def _named(
    rankings: Sequence[EdgeAttributionResult] | Mapping[str, EdgeAttributionResult | Tensor],
    graph: EdgeGraph,
) -> dict[str, Tensor]:
    items = rankings.items() if isinstance(rankings, Mapping) else [(r.method, r) for r in rankings]
    named: dict[str, Tensor] = {}
    for name, ranking in items:
        if name in named or name == "random" or name.startswith("random#"):
            raise AscaleError(f"ranking name {name!r} is taken: pass a dict to name them")
        if isinstance(ranking, EdgeAttributionResult):
            if ranking.graph != graph:
                raise AscaleError(f"ranking {name!r} is on {ranking.graph}, the model on {graph}")
            ranking = ranking.scores
        scores = torch.as_tensor(ranking).detach().cpu().float()
        if tuple(scores.shape) != (graph.n_edges,):
            raise AscaleError(
                f"ranking {name!r}: expected {graph.n_edges} edge scores, got {tuple(scores.shape)}"
            )
        named[name] = scores
    return named


def _metrics(
    model: HookedModel,
    graph: EdgeGraph,
    data: ContrastSet,
    sources: passes.EdgeSources,
    circuits: dict[bytes, Tensor],
    max_batch: int,
    progress: bool,
) -> dict[bytes, float]:
    """``m(C)`` for every circuit, many circuits per pass (copies of a batch)."""
    # circuits of like size share passes: a pass multiplies only the sources some copy keeps
    # (or ablates, whichever is fewer) at each destination
    keys = sorted(circuits, key=lambda k: int(circuits[k].sum()))
    keep = torch.stack([circuits[k] for k in keys]).float()
    totals = torch.zeros(len(keys))
    chunk = max(1, min(len(data), max_batch))
    per_pass = max(1, max_batch // chunk)
    rows_list = _chunks(len(data), chunk)
    bar = tqdm(total=len(rows_list) * len(keys), desc="edge circuits", disable=not progress)
    with torch.inference_mode():
        for rows in rows_list:
            batch = data.subset(rows)
            corrupt = sources(rows)
            for first in range(0, len(keys), per_pass):
                group = keep[first : first + per_pass]
                logits = _tl.masked_run(model, graph, batch.tokens, group, corrupt)
                diff = _logit_diff(logits, batch.correct_ids, batch.wrong_ids)
                totals[first : first + len(group)] += diff.view(len(group), -1).sum(1).cpu()
                bar.update(len(group))
    bar.close()
    return {k: float(t) / len(data) for k, t in zip(keys, totals, strict=True)}


def _clean_metric(model: HookedModel, data: ContrastSet, batch_size: int) -> float:
    total = 0.0
    with torch.inference_mode():
        for rows in _chunks(len(data), batch_size):
            batch = data.subset(rows)
            logits = _tl.run(model, batch.tokens.to(_tl.first_device(model)), last_only=True)
            total += float(_logit_diff(logits, batch.correct_ids, batch.wrong_ids).sum())
    return total / len(data)
