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

The base class and its hooks live in ``_base``, the position-tied methods in ``_static``, dynamic
scalars in ``_dynamic``, circuit scalars (which ablate towards a batch's counterfactual
activations, `ascale.fit_circuit`) in ``_circuit``. `METHODS` registers them by name: the command line, `compare` and `sweep`
build through `build`, and `ascale.load` finds a saved file's class there.
"""

from collections.abc import Sequence
from typing import Any, Final

from ascale._types import HookedModel
from ascale.errors import AscaleError
from ascale.interventions._base import Beta, Intervention, Positions
from ascale.interventions._circuit import CircuitScalars, soft_top_k
from ascale.interventions._dynamic import DynamicScalars
from ascale.interventions._static import ActivationScalars, SteeringVectors

__all__ = [
    "METHODS",
    "ActivationScalars",
    "Beta",
    "CircuitScalars",
    "DynamicScalars",
    "Intervention",
    "Positions",
    "SteeringVectors",
    "build",
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
    positions: Any = "all",
    n_pos: int | None = None,
    **options: Any,
) -> Intervention:
    """A fresh intervention of a registered `method` (``dynamic`` takes no positions).

    Example:
        >>> build("scalars", model, sites="attn_out,mlp_out", n_pos=12).method
        'scalars'
    """
    if method not in METHODS:
        raise AscaleError(f"unknown method {method!r}; known: {sorted(METHODS)}")
    cls: Any = METHODS[method]
    if method == "dynamic":
        return cls(model, sites=sites, layers=layers, **options)  # type: ignore[no-any-return]
    return cls(  # type: ignore[no-any-return]
        model, sites=sites, layers=layers, positions=positions, n_pos=n_pos, **options
    )


def steering_methods() -> list[str]:
    """The registered methods `ascale.fit` trains with the beta dial (not ``circuit``)."""
    return sorted(name for name, cls in METHODS.items() if cls.steers)


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
