"""ascale: activation scaling for steering and interpreting language models.

Learn signed scalars on a model's activation vectors (attention and MLP outputs, single heads,
per position) that flip its choice between a correct and a wrong answer token, leave the rest of
its next-token distribution alone, and use few parameters (Stoehr et al., EMNLP Findings 2024).

Example:
    >>> import ascale  # the quickstart on the real SmolLM2: skipped in the tests (minutes)
    >>> model = ascale.load_model()  # doctest: +SKIP
    >>> train, test = ascale.tasks.ccc(model).split(test_size=0.3, seed=0)  # doctest: +SKIP
    >>> scalars = ascale.ActivationScalars(model, sites=["attn_out", "mlp_out"])  # doctest: +SKIP
    >>> ascale.fit(model, scalars, train)  # doctest: +SKIP
    >>> print(ascale.evaluate(model, scalars, test))  # doctest: +SKIP
"""

from ascale import tasks
from ascale.agreement import agreement
from ascale.attribution import rank_components
from ascale.circuits import score_circuits
from ascale.compare import compare
from ascale.cumulative import cumulative_effect
from ascale.data import ContrastSet, load_jsonl
from ascale.errors import AscaleError
from ascale.fit import fit
from ascale.generation import generate
from ascale.grid import Grid
from ascale.interventions import (
    ActivationScalars,
    DynamicScalars,
    Intervention,
    SteeringVectors,
)
from ascale.io import load, save
from ascale.loading import load_model
from ascale.metrics import evaluate
from ascale.objective import Objective
from ascale.patching import activation_patching, attribution_patching
from ascale.report import write_report
from ascale.sweep import sweep

# What a user needs, each name a verb or a noun that says what it is. Results are imported from
# their modules (`from ascale.fit import FitResult`, `from ascale.attribution import
# AttributionResult`, ...), the specific
# errors from `ascale.errors` (`AscaleError` is their base), the figures from `ascale.plot`.
__all__ = [
    "ActivationScalars",
    "AscaleError",
    "ContrastSet",
    "DynamicScalars",
    "Grid",
    "Intervention",
    "Objective",
    "SteeringVectors",
    "activation_patching",
    "agreement",
    "attribution_patching",
    "compare",
    "cumulative_effect",
    "evaluate",
    "fit",
    "generate",
    "load",
    "load_jsonl",
    "load_model",
    "plot",
    "rank_components",
    "save",
    "score_circuits",
    "sweep",
    "tasks",
    "write_report",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """`ascale.plot` on first use: plotly is imported only when a figure is wanted."""
    if name == "plot":
        import importlib

        return importlib.import_module("ascale.plot")
    raise AttributeError(f"module 'ascale' has no attribute {name!r}")
