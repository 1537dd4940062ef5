"""One call that holds the rankings against each other: `compare`.

For one grid of components, `compare` fits the interventions it is asked for on a training
split, runs activation and attribution patching on (part of) the same split, and then scores
every ranking as a circuit on the held-out split (`ascale.analysis.circuits`): faithfulness curves, CPR
and CMD, beside a random baseline. It also reports how far the rankings agree, overall and per
component type, and (optionally) how well scalars refitted on only their top-k components flip
the held-out prompts.

Methods: any of `METHODS` (the table in `ascale.analysis.compare_methods`, where each is a
class).

Example:
    >>> result = compare(model, data, corrupted, sites="heads", positions=[-1],
    ...                  methods=("scalars", "activation_patching"), n_random=1,
    ...                  fit_options={"scalars": {"steps": 2}}, progress=False)
    >>> list(result.rankings)
    ['scalars', 'activation_patching']
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ascale import _checks
from ascale._types import HookedModel
from ascale.analysis import compare_methods
from ascale.analysis.agreement import AgreementResult, agreement
from ascale.analysis.circuits import CircuitResult, score_circuits
from ascale.analysis.compare_methods import METHODS
from ascale.analysis.results import AttributionResult, rerank
from ascale.data import ContrastSet, check_aligned, check_data
from ascale.errors import AscaleError
from ascale.grid import Grid
from ascale.interventions import Intervention
from ascale.training.metrics import Metrics

__all__ = ["CompareResult", "compare"]


@dataclass(frozen=True, eq=False)
class CompareResult:
    """Rankings on one grid, their agreement, and their circuits.

    Attributes:
        grid: the components.
        rankings: method -> `AttributionResult` (made on the training split).
        circuits: faithfulness curves, CPR and CMD of every ranking on the test split.
        agreement: Spearman and top-k overlap between the rankings, over the whole grid.
        agreement_by_type: the same within each component type (site).
        metrics: test-split `Metrics` of each fitted intervention.
        interventions: the fitted interventions.
        refit: flip rates of scalars refitted on only the top ``k`` components of the
            ``scalars`` ranking, one row per ``k`` (empty when not asked for).
        info: settings, sizes and timings.
    """

    grid: Grid = field(repr=False)
    rankings: dict[str, AttributionResult] = field(repr=False)
    circuits: CircuitResult
    agreement: AgreementResult | None = field(repr=False)
    agreement_by_type: dict[str, AgreementResult] = field(repr=False)
    metrics: dict[str, Metrics] = field(repr=False)
    interventions: dict[str, Intervention] = field(repr=False)
    refit: pd.DataFrame = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict, repr=False)

    def summary(self) -> pd.DataFrame:
        """One row per method: CPR, CMD, ``f`` (absolute order) at a few sizes, and for fitted
        methods the test flip rates and active parameters."""
        table = self.circuits.summary()
        ks = sorted(set(self.circuits.curves["k"]))[:4]
        for k in ks:
            table[f"f@{k}"] = self.circuits.f_at(k)
        for method, m in self.metrics.items():
            if method in table.index:
                table.loc[method, "flip+1"] = m.flip_rate_forward
                table.loc[method, "flip-1"] = m.flip_rate_backward
                table.loc[method, "active"] = m.n_active
        return table

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers for JSON."""
        return {
            "summary": _records(self.summary()),
            "curves": self.circuits.curves.to_dict("records"),
            "m_clean": self.circuits.m_clean,
            "m_ablated": self.circuits.m_ablated,
            "n_components": len(self.grid),
            "agreement": None if self.agreement is None else self.agreement.to_dict(),
            "agreement_by_type": {t: a.to_dict() for t, a in self.agreement_by_type.items()},
            "metrics": {m: v.to_dict() for m, v in self.metrics.items()},
            "refit": self.refit.reset_index().to_dict("records"),
            "top": {
                m: r.top(10)[["component", "token", "value"]].to_dict("records")
                for m, r in self.rankings.items()
            },
            "info": self.info,
        }

    def __repr__(self) -> str:
        return f"CompareResult(grid={len(self.grid)} components, {self.circuits!r})"

    def _repr_html_(self) -> str:
        head = (
            f"<p><b>CompareResult</b>: {len(self.grid)} components, "
            f"{self.circuits.ablation} ablation on {self.circuits.n_prompts} test prompts "
            "(CPR: higher is better; CMD: lower is better)</p>"
        )
        return head + str(self.summary().to_html(float_format="{:.3f}".format, na_rep=""))


def compare(
    model: HookedModel,
    data: ContrastSet,
    corrupted: ContrastSet | None = None,
    *,
    methods: Sequence[str] = ("scalars", "activation_patching", "attribution_patching", "random"),
    sites: str | Sequence[str] = "attn_out,mlp_out",
    layers: Sequence[int] | None = None,
    positions: str | Sequence[int] = "all",
    test_size: float = 0.5,
    seed: int = 0,
    patch_n: int = 16,
    ablation: str | None = None,
    k: int = 10,
    refit_ks: Sequence[int] = (),
    fit_options: dict[str, dict[str, Any]] | None = None,
    fitted: dict[str, Intervention] | None = None,
    fitted_metrics: dict[str, Metrics] | None = None,
    n_random: int = 5,
    progress: bool = True,
) -> CompareResult:
    """Fit, patch, rank and score every method on one grid.

    Args:
        model: the model.
        data: prompts of one token length.
        corrupted: counterfactual prompts aligned with `data` (same lengths and answers), for
            patching and counterfactual ablation; without them both use mean ablation.
        methods: any of `METHODS`.
        sites: the grid's sites (as for `ActivationScalars`).
        layers: the grid's layers (default: all).
        positions: the grid's positions (as for `ActivationScalars`).
        test_size: share of `data` held out for the circuit curves and metrics.
        seed: the split, fits and random orders.
        patch_n: training prompts patched (activation and attribution patching).
        ablation: circuit ablation, ``"counterfactual"`` (default with `corrupted`),
            ``"mean"`` or ``"zero"``.
        k: the top-k of the agreement overlap.
        refit_ks: sizes of the refit curve (scalars refitted on their own top k).
        fit_options: per method, keyword arguments for `fit` (or `fit_circuit`) over the
            method's defaults (``scalars``: over `compare_methods.SPARSE_MAP`, the sparse map's
            settings).
        fitted: per method, an intervention already fitted on this grid and on the same
            split (``data.split(test_size, seed)``'s first part) to use instead of fitting one.
        fitted_metrics: per method of `fitted`, its `evaluate` on the test split when already
            measured (it is not measured again).
        n_random: random orders in the ``random`` baseline.

    Raises:
        AscaleError: an unknown method, a size or count out of range (``refit_ks`` past the
            grid), or corrupted prompts not aligned with `data` (answers, lengths) row by row.
    """
    methods = _check(data, corrupted, methods, patch_n, k, n_random, refit_ks)
    _check_given(fit_options, fitted, fitted_metrics)
    grid = Grid.build(model, data.n_pos, sites=sites, layers=layers, positions=positions)
    refit_ks = _checks.sizes("refit_ks", refit_ks, high=len(grid), why="the grid's components")
    run = compare_methods.Run.start(
        model, data, corrupted, grid, test_size, seed, fit_options or {}, progress
    )
    run.where = {"sites": sites, "layers": layers, "positions": positions}
    run.given, run.measured = fitted or {}, fitted_metrics or {}
    run.ablation = ablation or ("counterfactual" if corrupted is not None else "mean")
    run.n_patched = min(patch_n, len(run.train))
    compare_methods.run_methods(run, methods)
    with run.timed("circuits"):
        circuits = score_circuits(
            model, run.test, run.rankings, grid=grid, corrupted=run.ctest,
            ablation=run.ablation,  # type: ignore[arg-type]
            n_random=n_random if "random" in methods else 0, seed=seed, progress=progress,
        )  # fmt: skip
    agree, by_type = _agreements(run.rankings, grid, k)
    refit = pd.DataFrame()
    if refit_ks:
        with run.timed("refit"):
            refit = compare_methods.refit_curve(run, refit_ks)
    info = run.info(positions, circuits.ablation)
    return CompareResult(
        grid, run.rankings, circuits, agree, by_type, run.metrics, run.interventions, refit, info
    )


def _check(
    data: object,
    corrupted: object,
    methods: object,
    patch_n: object,
    k: object,
    n_random: object,
    refit_ks: object,
) -> list[str]:
    """`compare`'s arguments checked before any work, as users pass them (not by type); the
    methods as a list."""
    clean = check_data(data)
    if corrupted is not None:
        check_aligned(clean, corrupted)
    chosen = _checks.names("methods", methods, allowed=METHODS, what="method")
    _checks.whole("patch_n", patch_n)
    _checks.whole("k", k)
    _checks.whole("n_random", n_random, low=0)
    if "random" in chosen and n_random == 0:
        raise AscaleError(
            "methods include 'random' but n_random=0 draws no random order: give n_random >= 1, "
            "or leave 'random' out"
        )
    if _checks.sizes("refit_ks", refit_ks) and "scalars" not in chosen:
        raise AscaleError("refit_ks needs the 'scalars' method")
    return chosen


def _check_given(fit_options: object, fitted: object, fitted_metrics: object) -> None:
    """`fit_options`, `fitted` and `fitted_metrics` as dicts by method name, of what each
    holds (options dicts, interventions, metrics)."""
    for name, given, kind in (
        ("fit_options", fit_options, dict),
        ("fitted", fitted, Intervention),
        ("fitted_metrics", fitted_metrics, Metrics),
    ):
        if given is None:
            continue
        by_method: dict[str, Any] = _checks.instance(
            name, given, dict, f"method -> {kind.__name__}"
        )
        if by_method:
            _checks.names(f"{name}'s keys", list(by_method), allowed=METHODS, what="method")
        for method, value in by_method.items():
            _checks.instance(f"{name}[{method!r}]", value, kind)
    if stray := sorted(set(fitted_metrics or {}) - set(fitted or {})):  # type: ignore[call-overload]
        raise AscaleError(f"fitted_metrics for {stray}, which fitted does not hold")


# ---- helpers ----


def _agreements(
    rankings: dict[str, AttributionResult], grid: Grid, k: int
) -> tuple[AgreementResult | None, dict[str, AgreementResult]]:
    if len(rankings) < 2:
        return None, {}
    on_grid = {m: r.select(list(grid.site_names)) for m, r in rankings.items()}
    on_grid = {m: _on(r, grid) for m, r in on_grid.items()}
    overall = agreement(on_grid, k=k)
    by_type = {}
    if len(grid.site_names) > 1:
        for site in grid.site_names:
            by_type[site] = agreement({m: r.select(site) for m, r in on_grid.items()}, k=k)
    else:
        by_type[grid.site_names[0]] = overall
    return overall, by_type


def _on(ranking: AttributionResult, grid: Grid) -> AttributionResult:
    """Only the components of `grid` (a ranking may cover more positions)."""
    keep = ranking.components["component"].isin(set(grid.names))
    return ranking if bool(keep.all()) else rerank(ranking, keep)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts, NaN as None (valid JSON)."""
    flat = frame.reset_index().astype(object)
    records: list[dict[str, Any]] = flat.where(flat.notna(), None).to_dict("records")
    return records
