"""Agreement between rankings: do two attribution methods point at the same components?

Two numbers per pair of methods, over the components both rankings score:

- Spearman's rank correlation of the magnitudes (`scipy.stats.spearmanr`; ties get average
  ranks), from -1 to 1;
- top-k overlap: the share of one method's ``k`` largest components that are among the other's
  ``k`` largest, from 0 to 1.

A ranking that gives every shared component the same magnitude (all patching effects zero, an
untrained intervention) has no order: its Spearman is NaN, and its top-k overlap, which would
only reflect how ties are broken, is NaN too, with an `AscaleWarning` naming it.
"""

import itertools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ascale import _checks
from ascale.analysis.results import AttributionResult, check_scores
from ascale.errors import AscaleError, AscaleWarning

__all__ = ["AgreementResult", "agreement"]


@dataclass(frozen=True, eq=False)
class AgreementResult:
    """Spearman correlations and top-k overlaps between every pair of rankings.

    Attributes:
        methods: the rankings' names, in the order given.
        k: the ``k`` of the top-k overlap.
        spearman: methods × methods DataFrame of rank correlations (1 on the diagonal).
        topk_overlap: methods × methods DataFrame of top-k overlaps (1 on the diagonal).
        n_components: how many components all rankings share.
        rankings: the rankings themselves, for rank scatter plots.
    """

    methods: tuple[str, ...]
    k: int
    spearman: pd.DataFrame = field(repr=False)
    topk_overlap: pd.DataFrame = field(repr=False)
    n_components: int
    rankings: dict[str, AttributionResult] = field(repr=False)

    def pairs(self) -> list[tuple[str, str]]:
        """Every unordered pair of methods, in the order given."""
        return list(itertools.combinations(self.methods, 2))

    def to_frame(self) -> pd.DataFrame:
        """One row per pair: ``a``, ``b``, ``spearman``, ``topk_overlap``."""
        return pd.DataFrame(
            [(a, b, self.spearman.loc[a, b], self.topk_overlap.loc[a, b]) for a, b in self.pairs()],
            columns=["a", "b", "spearman", "topk_overlap"],
        )

    def _repr_html_(self) -> str:
        """Jupyter: one row per pair of methods."""
        head = (
            f"<p><b>AgreementResult</b>: {self.n_components} shared components, "
            f"top-{self.k} overlap</p>"
        )
        return head + str(self.to_frame().to_html(index=False, float_format="{:.3f}".format))

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers for JSON: ``{"spearman": {"a|b": r}, "topk_overlap": {...}, "k": k}``."""
        frame = self.to_frame()
        keys = [f"{a}|{b}" for a, b in zip(frame["a"], frame["b"], strict=True)]
        return {
            "spearman": dict(zip(keys, map(_num, frame["spearman"]), strict=True)),
            "topk_overlap": dict(zip(keys, map(_num, frame["topk_overlap"]), strict=True)),
            "k": self.k,
            "n_components": self.n_components,
        }


def agreement(
    rankings: Sequence[AttributionResult] | Mapping[str, AttributionResult], *, k: int = 10
) -> AgreementResult:
    """Compare rankings on the components they share.

    Args:
        rankings: two or more `AttributionResult`s, named by their ``method``, or a mapping
            from names to results (when two share a method).
        k: size of the top sets compared by the overlap.

    Raises:
        AscaleError: fewer than two rankings, repeated names, or no shared component.

    Example:
        >>> patching = ascale.activation_patching(model, data, corrupted, like=scalars)
        >>> agree = agreement([ranking, patching], k=10)
        >>> agree.to_dict()["spearman"]
        {'scalars|activation_patching': ...}
    """
    named = _named(rankings)
    k = _checks.whole("k", k)
    for name, ranking in named.items():
        check_scores(name, ranking.components)
    table = _aligned(named)
    methods = tuple(named)
    rho = pd.DataFrame(np.eye(len(methods)), index=methods, columns=methods)
    overlap = rho.copy()
    constant = [m for m in methods if table[m].nunique() < 2]
    if constant:
        warnings.warn(
            f"ranking(s) {constant} give all {len(table)} shared components the same magnitude: "
            "no order to compare, so their Spearman and top-k overlap are NaN (the overlap "
            "would only reflect how ties are broken)",
            AscaleWarning,
            stacklevel=2,
        )
    for a, b in itertools.combinations(methods, 2):
        r = _spearman(table[a], table[b])
        top_a = set(table[a].nlargest(k).index)
        top_b = set(table[b].nlargest(k).index)
        share = len(top_a & top_b) / min(k, len(table))
        share = float("nan") if a in constant or b in constant else share
        rho.loc[a, b] = rho.loc[b, a] = r
        overlap.loc[a, b] = overlap.loc[b, a] = share
    return AgreementResult(methods, k, rho, overlap, len(table), named)


def _named(rankings: Any) -> dict[str, AttributionResult]:  # checked here, not by type
    if isinstance(rankings, AttributionResult):
        raise AscaleError("agreement needs at least two rankings, got one AttributionResult")
    if isinstance(rankings, Mapping):
        named = dict(rankings)
    else:
        names = [r.method for r in rankings]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise AscaleError(
                f"two rankings share the method {repeated[0]!r}: pass a dict to name them"
            )
        named = dict(zip(names, rankings, strict=True))
    if len(named) < 2:
        raise AscaleError(f"agreement needs at least two rankings, got {len(named)}")
    return named


def _aligned(named: dict[str, AttributionResult]) -> pd.DataFrame:
    """Component × method table of magnitudes, inner-joined on the component name."""
    columns = [
        r.components.set_index("component")["magnitude"].rename(name) for name, r in named.items()
    ]
    table = pd.concat(columns, axis=1, join="inner")
    if table.empty:
        raise AscaleError(
            "the rankings share no component: compute them on the same grid (sites, layers, "
            "positions), e.g. activation_patching(..., like=scalars)"
        )
    return table


def _spearman(a: pd.Series, b: pd.Series) -> float:
    if a.nunique() < 2 or b.nunique() < 2:
        return float("nan")  # a constant ranking has no order to correlate
    return float(spearmanr(a.to_numpy(), b.to_numpy()).statistic)


def _num(x: Any) -> float | None:
    x = float(x)
    return None if np.isnan(x) else round(x, 6)
