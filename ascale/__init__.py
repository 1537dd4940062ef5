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
from ascale.analysis.agreement import AgreementResult, agreement
from ascale.analysis.attribution import rank_components
from ascale.analysis.circuits import CircuitResult, score_circuits
from ascale.analysis.compare import CompareResult, compare
from ascale.analysis.cumulative import CumulativeEffectResult, cumulative_effect, refit_top_k
from ascale.analysis.edge_compare import EdgeCompareResult, compare_edges
from ascale.analysis.edge_results import EdgeAttributionResult, EdgeCircuitResult
from ascale.analysis.edges import eap, eap_ig, score_edges
from ascale.analysis.patching import activation_patching, attribution_patching
from ascale.analysis.results import AttributionResult
from ascale.analysis.sweep import sweep
from ascale.data import ContrastSet, load_jsonl
from ascale.errors import AscaleError
from ascale.generation import GenerationResult, generate
from ascale.graph import EdgeGraph, read_mib_json
from ascale.grid import Grid
from ascale.interventions import (
    ActivationScalars,
    CircuitScalars,
    DynamicScalars,
    Intervention,
    SteeringVectors,
)
from ascale.io import load, save
from ascale.loading import load_model
from ascale.report import write_report
from ascale.training.circuit import fit_circuit
from ascale.training.edge_circuit import fit_edge_circuit
from ascale.training.fit import FitResult, fit
from ascale.training.metrics import Metrics, evaluate
from ascale.training.objective import Objective

# What a user needs: the verbs, the interventions, the result types they return (plain data:
# draw one with `ascale.plot.figure`), and the error base class (the specific errors are in
# `ascale.errors`). `ascale.plot` is imported on first use: plotly only when a figure is wanted.
__all__ = [
    "ActivationScalars",
    "AgreementResult",
    "AscaleError",
    "AttributionResult",
    "CircuitResult",
    "CircuitScalars",
    "CompareResult",
    "ContrastSet",
    "CumulativeEffectResult",
    "DynamicScalars",
    "EdgeAttributionResult",
    "EdgeCircuitResult",
    "EdgeCompareResult",
    "EdgeGraph",
    "FitResult",
    "GenerationResult",
    "Grid",
    "Intervention",
    "Metrics",
    "Objective",
    "SteeringVectors",
    "activation_patching",
    "agreement",
    "attribution_patching",
    "compare",
    "compare_edges",
    "cumulative_effect",
    "eap",
    "eap_ig",
    "evaluate",
    "fit",
    "fit_circuit",
    "fit_edge_circuit",
    "generate",
    "load",
    "load_jsonl",
    "load_model",
    "plot",
    "rank_components",
    "read_mib_json",
    "refit_top_k",
    "save",
    "score_circuits",
    "score_edges",
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
