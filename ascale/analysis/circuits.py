"""Scoring a ranking as a circuit: faithfulness curves, CPR and CMD.

The protocol of the Mechanistic Interpretability Benchmark's circuit track (Mueller et al.
2025), at the level of the grid's components (``docs/circuits.md``):

- ``m`` is the mean ``logit(correct) - logit(wrong)`` at the answer position;
- ``m(N)``: the clean model; ``m(∅)``: every component of the grid ablated; ``m(C)``: only the
  components of ``C`` run as they are, every other component of the grid is ablated. Ablation
  replaces a component's activation with its value on the counterfactual prompt
  (``"counterfactual"``, the default), its mean over the prompts at that position (``"mean"``),
  or zero (``"zero"``). Components off the grid always run as they are;
- faithfulness ``f(C) = (m(C) - m(∅)) / (m(N) - m(∅))``, so ``f(∅) = 0`` and ``f(all) = 1``;
- for each fraction ``p`` of `FRACTIONS`, ``C`` is the ranking's top ``k = max(1, round(p * n))``
  components (MIB uses ``int(p * n)``, 0 on small grids);
- **CPR**: trapezoid area under ``f`` over ``p``, ranking by *signed* support for the correct
  answer (`AttributionResult.support`); higher is better;
- **CMD**: trapezoid area under ``|1 - f|`` over ``p``, ranking by *absolute* score; lower is
  better;
- ``random``: the same for seeded random orders (the mean of `n_random` draws).

Many circuits are scored per forward pass: the prompts are repeated once per circuit and each
copy is ablated by its own mask, as `ascale.activation_patching` does.

Example:
    >>> patched = ascale.activation_patching(model, data, corrupted, like=scalars)
    >>> scored = score_circuits(model, data, [ranking, patched], grid=Grid.of(scalars),
    ...                         corrupted=corrupted, n_random=1)
    >>> list(scored.summary().index)
    ['scalars', 'activation_patching', 'random']
"""

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ascale import _checks, _tl, passes
from ascale._types import HookedModel
from ascale.analysis.results import AttributionResult, check_scores
from ascale.data import ContrastSet, check_aligned, check_data
from ascale.errors import AscaleError, AscaleWarning
from ascale.grid import FRACTIONS, Grid, circuit_sizes
from ascale.interventions import Ablation, check_ablation

__all__ = ["CircuitResult", "average_random", "curve_areas", "score_circuits"]


@dataclass(frozen=True, eq=False)
class CircuitResult:
    """Faithfulness curves and their areas, one per ranking.

    Attributes:
        curves: one row per method and fraction: ``method, fraction, k, f_signed, f_abs``
            (``f`` of the top ``k`` by signed support and by absolute score).
        m_clean: ``m(N)``, the clean mean logit difference (correct minus wrong).
        m_ablated: ``m(∅)``, with every component of the grid ablated.
        n_components: the grid's size ``n``.
        ablation: how components outside a circuit were ablated.
        n_prompts: prompts the curves were measured on.
    """

    curves: pd.DataFrame = field(repr=False)
    m_clean: float
    m_ablated: float
    n_components: int
    ablation: str
    n_prompts: int

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.curves["method"]))

    def summary(self) -> pd.DataFrame:
        """One row per method: ``cpr`` (higher is better), ``cmd`` (lower is better)."""
        return curve_areas(self.curves)

    def to_frame(self) -> pd.DataFrame:
        """The curves with each method's CPR and CMD on every row (long form, for plotting)."""
        return self.curves.join(self.summary(), on="method")

    def f_at(self, k: int, *, absolute: bool = True) -> pd.Series:
        """Each method's ``f`` at circuit size `k` (one of the curve's sizes)."""
        column = "f_abs" if absolute else "f_signed"
        rows = self.curves[self.curves["k"] == k]
        if rows.empty:
            raise AscaleError(
                f"k={k} is not a circuit size here; sizes: {sorted(set(self.curves['k']))}"
            )
        return rows.drop_duplicates("method").set_index("method")[column]

    def __repr__(self) -> str:
        table = self.summary().round(3)
        pairs = ", ".join(f"{m}: CPR {r.cpr} CMD {r.cmd}" for m, r in table.iterrows())
        return f"CircuitResult(n={self.n_components}, ablation={self.ablation!r}, {pairs})"

    def _repr_html_(self) -> str:
        head = (
            f"<p><b>CircuitResult</b>: {self.n_components} components, {self.ablation} "
            f"ablation, {self.n_prompts} prompts, m(N) {self.m_clean:.3f}, "
            f"m(∅) {self.m_ablated:.3f}</p>"
        )
        return head + str(self.summary().to_html(float_format="{:.3f}".format))


def score_circuits(
    model: HookedModel,
    data: ContrastSet,
    rankings: Sequence[AttributionResult] | Mapping[str, AttributionResult],
    *,
    grid: Grid,
    corrupted: ContrastSet | None = None,
    ablation: Ablation | None = None,
    fractions: Sequence[float] = FRACTIONS,
    n_random: int = 5,
    seed: int = 0,
    max_batch: int = 128,
    progress: bool = False,
) -> CircuitResult:
    """Faithfulness ``f(k)`` of each ranking's top-k circuits, with CPR and CMD.

    Args:
        model: the model.
        data: the prompts the curves are measured on (one token length; a test split).
        rankings: `AttributionResult`s on `grid`'s components (by name: a mapping, or each
            result's ``method``). Components a ranking lacks come last, in grid order.
        grid: the components (e.g. ``Grid.of(scalars)``).
        corrupted: counterfactual prompts aligned with `data` (needed for
            ``"counterfactual"``).
        ablation: ``"counterfactual"`` (default when `corrupted` is given), ``"mean"``
            (default otherwise) or ``"zero"``.
        fractions: the circuit sizes as fractions of the grid.
        n_random: random orders averaged into the ``random`` row (0 for none).
        max_batch: rows per forward pass (prompts × circuits scored at once).

    Example:
        >>> scored = score_circuits(model, data, {"scalars": ranking}, grid=Grid.of(scalars),
        ...                         corrupted=corrupted, n_random=0)
        >>> sorted(set(scored.curves["method"]))
        ['scalars']
    """
    check_data(data)
    _checks.instance("grid", grid, Grid, "e.g. ascale.Grid.of(scalars)")
    if corrupted is not None:
        check_aligned(data, corrupted)
    n_random = _checks.whole("n_random", n_random, low=0)
    max_batch = _checks.whole("max_batch", max_batch)
    named = _named(rankings)
    if not named and not n_random:
        raise AscaleError("nothing to score: no ranking given and n_random=0 (no random order)")
    ablation = ablation or ("counterfactual" if corrupted is not None else "mean")
    if ablation == "counterfactual" and corrupted is None:
        raise AscaleError("counterfactual ablation needs corrupted prompts; use 'mean' or 'zero'")
    check_ablation(ablation)
    grid = grid.with_length(data.n_pos)
    n = len(grid)
    ks = circuit_sizes(n, fractions)
    orders = {name: _orders(r, grid) for name, r in named.items()}
    orders |= _random_orders(n, n_random, seed)
    # a component whose ablation is a no-op (before the first token a counterfactual changes)
    # counts as kept, so circuits that differ only there are scored once
    n_shared = passes.shared_length(data, corrupted) if ablation == "counterfactual" else 0
    no_op = torch.tensor([c.pos is not None and c.pos < n_shared for c in grid.components])
    circuits, plan = _plan_circuits(orders, fractions, ks, no_op)
    empty = no_op.clone()
    circuits.setdefault(empty.numpy().tobytes(), empty)
    full = torch.ones(n, dtype=torch.bool).numpy().tobytes()
    circuits.pop(full, None)  # the whole grid kept is the clean model
    with torch.inference_mode():
        m = _circuit_metrics(model, data, corrupted, grid, ablation, circuits, max_batch, progress)
        m[full] = _clean_metric(model, data)
    m_clean = m[full]
    m_empty = m[empty.numpy().tobytes()]
    gap = m_clean - m_empty
    if abs(gap) < 1e-6:
        raise AscaleError("ablating the whole grid does not change the logit difference: no curve")
    rows = [
        (name, p, k, (m[a] - m_empty) / gap, (m[b] - m_empty) / gap) for name, p, k, a, b in plan
    ]
    curves = pd.DataFrame(rows, columns=["method", "fraction", "k", "f_signed", "f_abs"])
    curves = average_random(curves)
    return CircuitResult(curves, float(m_clean), float(m_empty), n, ablation, len(data))


def _random_orders(n: int, n_random: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`n_random` seeded random orders of `n` components (``random#i``; signed = absolute)."""
    rng = np.random.default_rng(seed)
    orders = {}
    for i in range(n_random):
        perm = rng.permutation(n)
        orders[f"random#{i}"] = (perm, perm)
    return orders


def _plan_circuits(
    orders: dict[str, tuple[np.ndarray, np.ndarray]],
    fractions: Sequence[float],
    ks: list[int],
    no_op: Tensor,
) -> tuple[dict[bytes, Tensor], list[tuple[str, float, int, bytes, bytes]]]:
    """Every distinct circuit (a keep mask, by its bytes) that the orders' top-k make, and the
    plan: for each order and size, the keys of its signed and absolute circuits. The
    components in `no_op` are kept in every circuit."""
    circuits: dict[bytes, Tensor] = {}
    plan: list[tuple[str, float, int, bytes, bytes]] = []
    for name, (signed, absolute) in orders.items():
        for p, k in zip(fractions, ks, strict=True):
            keys = []
            for order in (signed, absolute):
                keep = no_op.clone()
                keep[torch.as_tensor(order[:k])] = True
                key = keep.numpy().tobytes()
                circuits.setdefault(key, keep)
                keys.append(key)
            plan.append((name, p, k, keys[0], keys[1]))
    return circuits, plan


def _named(
    rankings: Sequence[AttributionResult] | Mapping[str, AttributionResult],
) -> dict[str, AttributionResult]:
    if isinstance(rankings, AttributionResult):
        rankings = [rankings]
    if isinstance(rankings, Mapping):
        named = dict(rankings)
    else:
        named = {r.method: r for r in rankings}
        if len(named) != len(rankings):
            raise AscaleError("two rankings share a method name: pass a dict to name them")
    for name, ranking in named.items():
        if not isinstance(ranking, AttributionResult):
            raise AscaleError(
                f"rankings must be AttributionResults (or a dict of them), got "
                f"{type(ranking).__name__} for {name!r}"
            )
        check_scores(name, ranking.components)
    return named


def _orders(ranking: AttributionResult, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Grid indices, best first: by signed support (descending) and by magnitude."""
    support = ranking.support().reindex(list(grid.names))
    magnitude = ranking.components.set_index("component")["magnitude"].reindex(list(grid.names))
    if support.isna().all():
        raise AscaleError(
            f"ranking {ranking.method!r} shares no component with the grid; compute it on the "
            "same sites, layers and positions"
        )
    scores = magnitude.dropna()
    if scores.nunique() < 2:
        warnings.warn(
            f"ranking {ranking.method!r} gives all {len(scores)} components it scores the same "
            f"magnitude ({float(scores.iloc[0]) if len(scores) else float('nan'):g}): its order "
            "is the grid's (ties keep grid order), not a ranking, so its f(k), CPR and CMD say "
            "nothing about the method",
            AscaleWarning,
            stacklevel=4,
        )
    # stable sorts: ties (and missing components, last) keep grid order
    signed = np.argsort(-support.fillna(-np.inf).to_numpy(), kind="stable")
    absolute = np.argsort(-magnitude.fillna(-np.inf).to_numpy(), kind="stable")
    return signed, absolute


def _circuit_metrics(
    model: HookedModel,
    data: ContrastSet,
    corrupted: ContrastSet | None,
    grid: Grid,
    ablation: str,
    circuits: dict[bytes, Tensor],
    max_batch: int,
    progress: bool,
) -> dict[bytes, float]:
    """``m(C)`` for every circuit: ablate the grid's components outside ``C``."""
    keys = list(circuits)
    ablate = ~torch.stack([circuits[k] for k in keys])  # [circuit, component]
    totals = torch.zeros(len(keys))
    per_pass = max(1, max_batch // max(1, min(len(data), max_batch)))
    chunk = max(1, min(len(data), max_batch))
    bar = tqdm(
        total=len(keys) * -(-len(data) // chunk), desc="circuits", disable=not progress, leave=False
    )
    names = grid.hook_names()
    mean = passes.mean_acts(model, data, names) if ablation == "mean" else None
    # before the first token a counterfactual changes, ablating to it is a no-op, and before
    # the grid's first position nothing is ablated: those positions run once per batch, not
    # once per circuit
    n_clean = passes.clean_length(grid, data, corrupted if ablation == "counterfactual" else None)
    for start in range(0, len(data), chunk):
        rows = list(range(start, min(start + chunk, len(data))))
        batch = data.subset(rows)
        source = passes.capture_source(model, data, corrupted, rows, names, ablation, mean)
        shared = _tl.shared_of(model, batch.tokens, n_clean)
        for first in range(0, len(keys), per_pass):
            group = ablate[first : first + per_pass]
            delta = passes.patched_deltas(model, batch, grid, group, source, shared=shared)
            totals[first : first + len(group)] += (-delta).sum(-1).cpu()  # m = -Δ
            bar.update(len(group))
    bar.close()
    return {k: float(t) / len(data) for k, t in zip(keys, totals, strict=True)}


def _clean_metric(model: HookedModel, data: ContrastSet) -> float:
    return float(-passes.clean_deltas(model, data).mean())


def curve_areas(curves: pd.DataFrame) -> pd.DataFrame:
    """MIB's areas of faithfulness curves (columns ``method, fraction, f_signed, f_abs``), one
    row per method: ``cpr``, the trapezoid area under ``f_signed``; ``cmd``, under
    ``|1 - f_abs|`` (node and edge circuits alike)."""
    rows = {}
    for method, curve in curves.groupby("method", sort=False):
        p = curve["fraction"].to_numpy()
        rows[method] = {
            "cpr": float(np.trapezoid(curve["f_signed"].to_numpy(), p)),
            "cmd": float(np.trapezoid(np.abs(1 - curve["f_abs"].to_numpy()), p)),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")


def average_random(
    curves: pd.DataFrame, columns: Sequence[str] = ("f_signed", "f_abs")
) -> pd.DataFrame:
    """The ``random#i`` curves replaced by their mean, ``random`` (of `columns`, per fraction)."""
    is_random = curves["method"].str.startswith("random#")
    if not is_random.any():
        return curves
    mean = curves[is_random].groupby(["fraction", "k"], as_index=False)[list(columns)].mean()
    mean = mean.assign(method="random")
    return pd.concat([curves[~is_random], mean[curves.columns]], ignore_index=True)
