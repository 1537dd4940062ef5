"""Interventions: learnable edits of activation vectors, attached through TransformerLens hooks.

| class | edit of ``h`` | parameters | identity at |
|---|---|---|---|
| `ActivationScalars` | ``h * (1 + beta * alpha)`` | one scalar per site, layer, (head), position | ``alpha = 0`` |
| `SteeringVectors` | ``h + beta * v`` | one vector per site, layer, (head), position | ``v = 0`` |
| `DynamicScalars` | ``h * (1 + beta * (w . h / norm(h) + b))`` | one probe per site, layer, (head) | ``w, b = 0`` |
| `CircuitScalars` | ``h_abl + s * (h - h_abl)``, ``s`` the top-k mask of learned scores | one score per site, layer, (head), position | ``s = 1`` (``beta = 0``) |

``beta`` is the steering dial: ``+1`` steers towards the wrong answer, ``-1`` back towards the
correct one, ``0`` is the clean model; any float works. Every hook returns a new tensor and never
edits the activation in place.

The hierarchy says what each kind is: `Intervention` (``_base``) owns sites, grid, parameters,
hooks, the `Readout` a ranking reads and save/load; `SteeringIntervention` (``_steering``) adds
the edit under the ``beta`` dial and the defaults `ascale.fit` trains it with (the position-tied
kinds in ``_static``, dynamic scalars in ``_dynamic``); `CircuitScalars` (``_circuit``)
interpolates each component towards its ablated activation and is fitted by
`ascale.fit_circuit`. `METHODS` registers them by name: the command line, `compare` and `sweep`
build through `build`, and `ascale.load` finds a saved file's class there. To add a kind:
subclass one of the two, give it a ``method`` name, `_unit_shape`, its edit (or hook) and
`readout`, and `register` it here.
"""

from collections.abc import Sequence
from typing import Any, Final

from ascale._types import HookedModel
from ascale.errors import AscaleError, closest
from ascale.grid import Positions
from ascale.interventions._base import Beta, Intervention, Readout
from ascale.interventions._circuit import (
    ABLATIONS,
    Ablation,
    CircuitScalars,
    check_ablation,
    soft_top_k,
)
from ascale.interventions._dynamic import DynamicScalars
from ascale.interventions._static import ActivationScalars, SteeringVectors
from ascale.interventions._steering import FitDefaults, SteeringIntervention

__all__ = [
    "ABLATIONS",
    "METHODS",
    "Ablation",
    "ActivationScalars",
    "Beta",
    "CircuitScalars",
    "DynamicScalars",
    "FitDefaults",
    "Intervention",
    "Readout",
    "SteeringIntervention",
    "SteeringVectors",
    "build",
    "check_ablation",
    "register",
    "soft_top_k",
    "steering_methods",
]


METHODS: Final[dict[str, type[Intervention]]] = {}


def build(
    method: str,
    model: HookedModel,
    *,
    sites: str | Sequence[str],
    layers: Sequence[int] | None = None,
    positions: Positions = "all",
    n_pos: int | None = None,
    **options: Any,
) -> Intervention:
    """A fresh intervention of a registered `method` (its class's `Intervention.create`).

    Example:
        >>> build("scalars", model, sites="attn_out,mlp_out", n_pos=12).method
        'scalars'
    """
    if method not in METHODS:
        raise AscaleError(
            f"unknown method {method!r}; known: {sorted(METHODS)} (closest: "
            f"{closest(str(method), list(METHODS))})"
        )
    return METHODS[method].create(
        model, sites=sites, layers=layers, positions=positions, n_pos=n_pos, **options
    )


def steering_methods() -> list[str]:
    """The registered methods `ascale.fit` trains with the beta dial (`SteeringIntervention`)."""
    return sorted(n for n, cls in METHODS.items() if issubclass(cls, SteeringIntervention))


def register(cls: type[Intervention]) -> type[Intervention]:
    """Add an intervention class to `METHODS` under its ``method`` name; refuses duplicates."""
    if cls.method in METHODS:
        raise AscaleError(f"method {cls.method!r} is already registered by {METHODS[cls.method]}")
    METHODS[cls.method] = cls
    return cls


register(ActivationScalars)
register(SteeringVectors)
register(DynamicScalars)
register(CircuitScalars)
