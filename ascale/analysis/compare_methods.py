"""`ascale.compare`'s methods: one registry (`METHODS`), each method a class that says how it
makes its ranking on one split and one grid.

| name | ranking |
|---|---|
| ``scalars`` | sparse activation scalars (`fit` with `SPARSE_MAP`), by ``-alpha`` |
| ``scalars_effect`` | the same scalars, by their edit's effect ``alpha * E[h . dΔ/dh]`` |
| ``scalars_dense`` | activation scalars fitted with Adam on the plain L1 term |
| ``vectors`` | steering vectors, by norm |
| ``dynamic`` | dynamic scalars, by mean ``-alpha`` at each position |
| ``circuit`` | circuit scalars (`fit_circuit`: a sufficiency fit), by score |
| ``activation_patching`` | the effect of patching each component alone |
| ``attribution_patching`` | its first-order estimate |
| ``random`` | seeded random orders (mean of `n_random`), drawn by `score_circuits` |

`Run` holds what the methods share (the model, the grid, the train and test splits, the fit
options) and collects what they make (rankings, fitted interventions, test metrics, timings);
`refit_curve` refits scalars on a ranking's top components (`refit_top_k`) for several sizes.
To add a method: a `Method` subclass, registered in `METHODS`; the command line's choices and
help read the registry.
"""

import contextlib
import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import pandas as pd

from ascale._types import HookedModel
from ascale.analysis.attribution import rank_components
from ascale.analysis.cumulative import refit_top_k
from ascale.analysis.patching import activation_patching, attribution_patching
from ascale.analysis.results import AttributionResult
from ascale.data import ContrastSet
from ascale.grid import Grid
from ascale.interventions import CircuitScalars, Intervention, build
from ascale.training.circuit import fit_circuit
from ascale.training.fit import fit
from ascale.training.metrics import Metrics, evaluate
from ascale.training.objective import Objective

__all__ = ["METHODS", "SPARSE_MAP", "Method", "Run", "refit_curve"]

#: fit settings of the sparse map (``scalars``): on SmolLM2 IOI heads at the last position,
#: lambda_min 0.02 gave the best CPR and CMD of the scalar fits tried (0.01-0.1; docs/circuits.md)
SPARSE_MAP: Final[dict[str, Any]] = {
    "sparsity": "proximal",
    "objective": Objective(lambda_min=0.02),
    "steps": 80,
    "batch_size": 64,
    "stop": "none",
}


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
    options: dict[str, dict[str, Any]]  # per method, fit options over its defaults
    progress: bool
    where: dict[str, Any] = field(default_factory=dict)  # sites, layers, positions as given
    given: dict[str, Intervention] = field(default_factory=dict)  # `compare`'s `fitted`
    measured: dict[str, Metrics] = field(default_factory=dict)  # their test metrics
    ablation: str = "counterfactual"  # the circuits' (and the circuit fit's)
    patch_n: int = 16
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # each fit's options
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
        run = cls(model, grid, train, test, ctrain, ctest, seed, options, progress)
        return run

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Adds the wall time of the body to ``timings[name]``."""
        t = time.perf_counter()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t

    def fitted(self, name: str, kind: str, defaults: dict[str, Any]) -> Intervention:
        """The intervention of method `name` (of intervention kind `kind`): given in `fitted`,
        or fitted on the training split with the method's options over `defaults`; its test
        metrics measured once."""
        if name in self.interventions:
            return self.interventions[name]
        iv = self.given.get(name)
        options = self.settings[name] = {**defaults, **self.options.get(name, {})}
        if iv is None:
            iv = build(kind, self.model, **self.where, n_pos=self.grid.n_pos)
            fit(self.model, iv, self.train, seed=self.seed, progress=self.progress, **options)
        self.interventions[name] = iv
        known = self.measured.get(name) if name in self.given else None
        self.metrics[name] = known or evaluate(self.model, iv, self.test)
        return iv

    def rank(self, name: str, iv: Intervention, **how: Any) -> None:
        """`rank_components` of `iv` on the training split, as method `name`'s ranking."""
        ranked = rank_components(iv, model=self.model, data=self.train, **how)
        self.rankings[name] = _renamed(ranked, name)

    def patched(self) -> tuple[ContrastSet, ContrastSet | None]:
        """The first `patch_n` training prompts (and their counterfactuals), for patching."""
        rows = range(self.n_patched)
        source = None if self.ctrain is None else self.ctrain.subset(rows)
        return self.train.subset(rows), source

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
            "fit_options": {m: _describe(self.settings.get(m, {})) for m in self.interventions},
            "timings_s": {m: round(v, 2) for m, v in self.timings.items()},
            "wall_time_s": round(time.perf_counter() - self.started, 2),
        }


class Method(ABC):
    """One of `compare`'s methods: how it adds its ranking to a `Run`."""

    #: its name in `METHODS`, in `compare`'s results and on the command line
    name: ClassVar[str]
    #: the fit options the command line passes it: ``"steering"`` (`fit`'s), ``"circuit"``
    #: (`fit_circuit`'s steps and batch size) or ``None``
    takes: ClassVar[str | None] = None
    #: the order its stage runs in: fits, then circuit fits, then patching
    stage: ClassVar[int] = 0
    #: the fit whose options (`compare`'s ``fit_options[fit]``) it uses, if it fits one
    fit: ClassVar[str | None] = None
    #: that fit's settings where `fit_options` leaves them
    defaults: ClassVar[dict[str, Any]] = {}

    @abstractmethod
    def run(self, run: "Run") -> None:
        """Add this method's ranking (and any intervention and metrics) to `run`."""


class Fitted(Method):
    """A steering intervention fitted on the training split and ranked by its readout."""

    takes = "steering"

    def __init__(self, name: str, kind: str, defaults: dict[str, Any], **how: Any) -> None:
        self.name, self.fit = name, name  # type: ignore[misc]
        self.kind, self.defaults, self.how = kind, defaults, how  # type: ignore[misc]

    def run(self, run: "Run") -> None:
        with run.timed(self.name):
            run.rank(self.name, run.fitted(self.name, self.kind, self.defaults), **self.how)


class ScalarsEffect(Method):
    """The ``scalars`` fit (made here if ``scalars`` is not compared), ranked by effect."""

    name, takes, fit, defaults = "scalars_effect", "steering", "scalars", SPARSE_MAP

    def run(self, run: "Run") -> None:
        with run.timed("scalars"):
            run.rank(self.name, run.fitted("scalars", "scalars", SPARSE_MAP), by="effect")


class Circuit(Method):
    """Circuit scalars fitted on the training split (`fit_circuit`), ablating as the circuits
    are scored, ranked by their scores."""

    name, takes, stage, fit = "circuit", "circuit", 1, "circuit"

    def run(self, run: "Run") -> None:
        with run.timed(self.name):
            iv = run.given.get(self.name)
            if iv is None:
                iv = CircuitScalars(
                    run.model, **run.where, n_pos=run.grid.n_pos, ablation=run.ablation
                )
                given = run.settings[self.name] = dict(run.options.get(self.name, {}))
                options = {"seed": run.seed, "progress": run.progress, **given}
                fit_circuit(run.model, iv, run.train, run.ctrain, **options)
            run.interventions[self.name] = iv
            run.rank(self.name, iv)


class ActivationPatching(Method):
    """The effect of patching each component alone, on the first `patch_n` training prompts."""

    name, stage = "activation_patching", 2

    def run(self, run: "Run") -> None:
        clean, source = run.patched()
        with run.timed(self.name):
            run.rankings[self.name] = activation_patching(
                run.model, clean, source, like=run.grid, progress=run.progress
            )


class AttributionPatching(Method):
    """Its first-order estimate, on the same prompts."""

    name, stage = "attribution_patching", 2

    def run(self, run: "Run") -> None:
        clean, source = run.patched()
        with run.timed(self.name):
            run.rankings[self.name] = attribution_patching(run.model, clean, source, like=run.grid)


class Random(Method):
    """Seeded random orders: `score_circuits` draws them (``n_random``); nothing to rank."""

    name, stage = "random", 3

    def run(self, run: "Run") -> None:
        return None


METHODS: Final[dict[str, Method]] = {
    m.name: m
    for m in (
        Fitted("scalars", "scalars", SPARSE_MAP),
        ScalarsEffect(),
        Fitted("scalars_dense", "scalars", {"sparsity": "l1"}),
        Fitted("vectors", "vectors", {}),
        Fitted("dynamic", "dynamic", {}, per_position=True),  # a probe's alpha at each position
        Circuit(),
        ActivationPatching(),
        AttributionPatching(),
        Random(),
    )
}


def run_methods(run: "Run", methods: Sequence[str]) -> None:
    """Each of `methods` on `run`, stage by stage (fits, circuit fits, patching)."""
    chosen = [METHODS[m] for m in methods]
    for method in sorted(chosen, key=lambda m: m.stage):  # stable: the order given within a stage
        method.run(run)


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


def _describe(options: dict[str, Any]) -> dict[str, Any]:
    out = dict(options)
    if isinstance(out.get("objective"), Objective):
        out["objective"] = vars(out["objective"])
    return out


def _renamed(ranking: AttributionResult, method: str) -> AttributionResult:
    return ranking if ranking.method == method else dataclasses.replace(ranking, method=method)
