"""How each of `ascale.compare`'s methods makes its ranking, on one split and one grid.

`Run` holds what the methods share (the model, the grid, the train and test splits, the fit
options) and collects what they make (rankings, fitted interventions, test metrics, timings);
`refit_curve` refits scalars on a ranking's top components (`refit_top_k`) for several sizes.
"""

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ascale._types import HookedModel
from ascale.analysis.attribution import rank_components
from ascale.analysis.circuit_fit import fit_circuit
from ascale.analysis.cumulative import refit_top_k
from ascale.analysis.patching import activation_patching, attribution_patching
from ascale.analysis.results import AttributionResult
from ascale.data import ContrastSet
from ascale.grid import Grid
from ascale.interventions import CircuitScalars, Intervention, build
from ascale.training.fit import fit
from ascale.training.metrics import Metrics, evaluate
from ascale.training.objective import Objective

__all__ = ["FITTED", "Run", "refit_curve"]

FITTED = ("scalars", "scalars_dense", "vectors", "dynamic")


@dataclass
class Run:
    """One comparison: the shared inputs, and the rankings and timings the methods add."""

    model: HookedModel
    grid: Grid
    train: ContrastSet
    test: ContrastSet
    ctrain: ContrastSet | None
    ctest: ContrastSet | None
    seed: int
    options: dict[str, dict[str, Any]]
    progress: bool
    where: dict[str, Any] = field(default_factory=dict)  # sites, layers, positions as given
    rankings: dict[str, AttributionResult] = field(default_factory=dict)
    interventions: dict[str, Intervention] = field(default_factory=dict)
    metrics: dict[str, Metrics] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    n_patched: int = 0
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def start(
        cls,
        model: HookedModel,
        data: ContrastSet,
        corrupted: ContrastSet | None,
        grid: Grid,
        test_size: float,
        seed: int,
        options: dict[str, dict[str, Any]],
        progress: bool,
    ) -> "Run":
        """Split `data` (and `corrupted`, row for row) into train and test."""
        train, test = data.split(test_size=test_size, seed=seed)
        ctrain = ctest = None
        if corrupted is not None:
            ctrain, ctest = corrupted.split(test_size=test_size, seed=seed)
        return cls(model, grid, train, test, ctrain, ctest, seed, options, progress)

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Adds the wall time of the body to ``timings[name]``."""
        t = time.perf_counter()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t

    def fit_methods(
        self,
        methods: Sequence[str],
        fitted: dict[str, Intervention],
        measured: dict[str, Metrics] | None = None,
    ) -> None:
        """Fit (or take from `fitted`) each fitted method, evaluate it (unless `measured`
        holds its test metrics already) and rank its components."""
        wanted = [m for m in methods if m in FITTED]
        if "scalars_effect" in methods and "scalars" not in wanted:
            wanted.insert(0, "scalars")  # fitted for its effect ranking only
        for method in wanted:
            with self.timed(method):
                iv = fitted.get(method) or self._fit(method)
                self.interventions[method] = iv
                known = (measured or {}).get(method) if method in fitted else None
                self.metrics[method] = known or evaluate(self.model, iv, self.test)
                per_position = method == "dynamic"  # a probe's alpha at each grid position
                ranked = rank_components(
                    iv, model=self.model, data=self.train, per_position=per_position
                )
                if method in methods:
                    self.rankings[method] = _renamed(ranked, method)
                if method == "scalars" and "scalars_effect" in methods:
                    by_effect = rank_components(iv, model=self.model, data=self.train, by="effect")
                    self.rankings["scalars_effect"] = _renamed(by_effect, "scalars_effect")

    def _fit(self, method: str) -> Intervention:
        kind = "scalars" if method == "scalars_dense" else method
        iv = build(kind, self.model, **self.where, n_pos=self.grid.n_pos)
        options = _options(self.options, method)
        fit(self.model, iv, self.train, seed=self.seed, progress=self.progress, **options)
        return iv

    def circuit_method(
        self, methods: Sequence[str], ablation: str, fitted: dict[str, Intervention]
    ) -> None:
        """Circuit scalars fitted on the training split (`fit_circuit`), ablating as the
        circuits are scored, and ranked by their scores."""
        if "circuit" not in methods:
            return
        with self.timed("circuit"):
            iv = fitted.get("circuit")
            if iv is None:
                iv = CircuitScalars(
                    self.model, **self.where, n_pos=self.grid.n_pos, ablation=ablation
                )
                options = {
                    "seed": self.seed,
                    "progress": self.progress,
                    **self.options.get("circuit", {}),
                }
                fit_circuit(self.model, iv, self.train, self.ctrain, **options)
            self.interventions["circuit"] = iv
            self.rankings["circuit"] = rank_components(iv, model=self.model, data=self.train)

    def patch_methods(self, methods: Sequence[str], patch_n: int) -> None:
        """Activation and attribution patching on the first `patch_n` training prompts."""
        rows = range(min(patch_n, len(self.train)))
        clean = self.train.subset(rows)
        source = None if self.ctrain is None else self.ctrain.subset(rows)
        self.n_patched = len(clean)
        if "activation_patching" in methods:
            with self.timed("activation_patching"):
                self.rankings["activation_patching"] = activation_patching(
                    self.model, clean, source, like=self.grid, progress=self.progress
                )
        if "attribution_patching" in methods:
            with self.timed("attribution_patching"):
                self.rankings["attribution_patching"] = attribution_patching(
                    self.model, clean, source, like=self.grid
                )

    def info(self, positions: Any, ablation: str) -> dict[str, Any]:
        """Settings, sizes and timings, for `CompareResult.info`."""
        return {
            "n_train": len(self.train),
            "n_test": len(self.test),
            "n_patched": self.n_patched,
            "n_pos": self.grid.n_pos,
            "sites": list(self.grid.site_names),
            "positions": "all" if positions == "all" else positions,
            "ablation": ablation,
            "fit_options": {m: _describe(_options(self.options, m)) for m in self.interventions},
            "timings_s": {m: round(v, 2) for m, v in self.timings.items()},
            "wall_time_s": round(time.perf_counter() - self.started, 2),
        }


def refit_curve(run: Run, ks: Sequence[int]) -> pd.DataFrame:
    """Test flips and KL of scalars refitted on the ``scalars`` ranking's top ``k``, per ``k``."""
    like, ranking = run.interventions["scalars"], run.rankings["scalars"]
    rows = {}
    for k in sorted({int(k) for k in ks}):
        refitted = refit_top_k(run.model, like, ranking, run.train, k, seed=run.seed)
        m = evaluate(run.model, refitted, run.test)
        rows[k] = {
            "flip_rate_forward": m.flip_rate_forward,
            "flip_rate_backward": m.flip_rate_backward,
            "moved_rate_forward": m.moved_rate_forward,
            "moved_rate_backward": m.moved_rate_backward,
            "faithfulness_kl": m.faithfulness_kl,
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("k")


def _options(options: dict[str, dict[str, Any]], method: str) -> dict[str, Any]:
    chosen = dict(options.get(method, {}))
    if method == "scalars_dense":
        chosen.setdefault("sparsity", "l1")
    return chosen


def _describe(options: dict[str, Any]) -> dict[str, Any]:
    out = dict(options)
    if isinstance(out.get("objective"), Objective):
        out["objective"] = vars(out["objective"])
    return out


def _renamed(ranking: AttributionResult, method: str) -> AttributionResult:
    return ranking if ranking.method == method else dataclasses.replace(ranking, method=method)
