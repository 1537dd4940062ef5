"""The base of every intervention: parameters per site, layer, (head) and position, and hooks.

A subclass says what one unit of parameters is (`_unit_shape`), what hook it attaches at each
site and layer (`_hook`; the steering kinds in ``_steering``, circuit scalars in ``_circuit``)
and what a ranking reads from it (`readout`, a `Readout`); attaching, binding to a prompt
length, the L1 summary and the config written by `ascale.save` are here, once.
"""

import contextlib
import html
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ascale import _tl
from ascale._checks import FLOAT32_MAX
from ascale._types import HookedModel
from ascale.data import ContrastSet
from ascale.errors import AscaleError, PromptLengthError
from ascale.grid import Grid, Positions, parse_positions, resolve_positions
from ascale.sites import Site, resolve_sites

Beta = float | Float[Tensor, " batch"]
# Activations at a hook: ``[batch, pos, d_model]``, or ``[batch, pos, head, d_head]`` for ``heads``.
Act = Float[Tensor, "batch pos *head d"]
# `beta` inside a hook: a float, or one value per prompt shaped to broadcast over the activation.
HookBeta = float | Float[Tensor, "batch *#ones"]
_I = TypeVar("_I", bound="Intervention")


@dataclass(frozen=True)
class Readout:
    """What a ranking reads from an intervention (`ascale.rank_components`): one value per
    component of `grid`, in grid order, and how to read it.

    Attributes:
        grid: the components.
        values: one value per component (a scalar's ``alpha``, a vector's norm, a score).
        label: what a value is, for tables and axis titles (``"alpha"``, ``"‖v‖"``, ...).
        signed: whether values carry a sign (norms do not).
        support_sign: ``value * support_sign`` is the component's support for the correct
            answer (`ascale.AttributionResult.support_sign`).
        magnitude: the size a ranking orders by, where it is not ``|value|``.
        scales: the value is a multiplicative scale ``h * (1 + beta * value)``: it gets an
            effect class (amplify, suppress, ablate, ...) and a first-order effect
            (``rank_components(by="effect")``).
        info: how the values were read (prompts, what they are ranked by).
    """

    grid: Grid
    values: Float[Tensor, " component"]
    label: str
    signed: bool = True
    support_sign: int = 1
    magnitude: Float[Tensor, " component"] | None = None
    scales: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class Intervention(nn.Module, ABC):
    """Base class: parameters per site, layer, (head) and position slot, and their hooks.

    Parameters of site ``s`` live in ``self.params[s]`` with shape
    ``[n_layers_of_site, n_slots, *unit]``: one slot per chosen position (``positions="all"``: every
    position of the training length; a list: those positions; ``"shared"``: one slot used at
    every position, for prompts of any length). ``"auto"`` (the default of the steering
    classes) leaves the choice to `ascale.fit`, which binds the positions its rule picks for the
    data (``ascale.training.positions``) and reports them; bound without a fit (``n_pos=...``
    or `bind`), ``"auto"`` is every position.
    """

    #: the name it is registered, saved and compared under (``"scalars"``, ...)
    method: ClassVar[str]
    #: whether it applies to prompts of any length whatever its positions (dynamic scalars)
    any_length: ClassVar[bool] = False

    def __init__(
        self,
        model: HookedModel,
        *,
        sites: str | Sequence[str],
        layers: Sequence[int] | None = None,
        positions: Positions = "auto",
        n_pos: int | None = None,
    ) -> None:
        super().__init__()
        self.sites: tuple[Site, ...] = resolve_sites(model, sites, layers)
        self.dims: dict[str, Any] = _tl.dims(model)
        self.positions: str | tuple[int, ...] = parse_positions(positions)
        if n_pos is not None and (isinstance(n_pos, bool) or not isinstance(n_pos, int)):
            raise AscaleError(f"n_pos must be a whole number of tokens, got {n_pos!r}")
        self.n_pos: int | None = None
        self._start = 0  # the first position a pass feeds (`applied(start=...)`)
        self._finite: list[Tensor] | None = None  # per edit, whether it stayed finite (`watch`)
        self.params = nn.ParameterDict()
        self._device = _tl.first_device(model)
        if positions == "shared":
            self._build()
        elif n_pos is not None:
            self.bind(n_pos)

    @classmethod
    def create(
        cls: type[_I],
        model: HookedModel,
        *,
        sites: str | Sequence[str],
        layers: Sequence[int] | None = None,
        positions: Positions = "auto",
        n_pos: int | None = None,
        **options: Any,
    ) -> _I:
        """A fresh one on a grid (`ascale.interventions.build`, `compare` and `sweep` make them
        so); `options` are the class's own keyword arguments."""
        return cls(model, sites=sites, layers=layers, positions=positions, n_pos=n_pos, **options)

    # ---- shape ----

    @property
    def position_tied(self) -> bool:
        """Whether parameters belong to positions (and so to one prompt length)."""
        return self.positions != "shared"

    @property
    def is_bound(self) -> bool:
        """Whether the parameters exist (position-tied ones need the prompt length first)."""
        return len(self.params) > 0

    def bind(self, n_pos: int, positions: Sequence[int] | None = None) -> None:
        """Fix the prompt length and create the parameters (`fit` does this from the data).

        `positions` is where an intervention made with ``positions="auto"`` steers (`fit`'s
        choice); ``None``: every position. It is refused when the positions were given.
        """
        if not self.position_tied:
            return
        if positions is not None and self.positions != "auto":
            raise AscaleError(
                f"this {type(self).__name__} steers at positions={self.positions!r}, given when "
                "it was made; only positions='auto' takes positions at bind"
            )
        if self.positions == "auto" and not self.is_bound:
            self.positions = "all" if positions is None else tuple(int(p) for p in positions)
        if self.is_bound:
            if n_pos != self.n_pos:
                raise PromptLengthError(
                    f"this {type(self).__name__} is tied to prompts of {self.n_pos} tokens; "
                    f"got prompts of {n_pos} tokens"
                )
            return
        slots = resolve_positions(self.positions, n_pos)  # checked against the length
        if isinstance(self.positions, tuple) and slots is not None:
            self.positions = slots
        self.n_pos = n_pos
        self._build()

    @property
    def grid(self) -> Grid:
        """The components the parameters sit on (position-tied ones must be bound first)."""
        if self.position_tied and not self.is_bound:
            raise AscaleError(f"{type(self).__name__} has no parameters yet: fit or bind it first")
        return self._grid()

    def _grid(self) -> Grid:
        slots = resolve_positions(self.positions, self.n_pos)
        return Grid(self.sites, slots, int(self.dims["n_heads"]), self.n_pos)

    def _build(self) -> None:
        # float32 whatever the model's dtype: in bfloat16 (8 significant bits) an Adam update
        # of 1e-3 to a scalar near 1 rounds away, and small scalars could not be told from 0;
        # the hooks compute the edit in float32 and hand the model back its own dtype
        grid = self._grid()
        for site in self.sites:
            shape = (*grid.layout(site), *self._unit_shape(site))
            zeros = torch.zeros(shape, device=self._device, dtype=torch.float32)
            self.params[site.name] = nn.Parameter(zeros)

    @abstractmethod
    def _unit_shape(self, site: Site) -> tuple[int, ...]:
        """Shape of the parameters of one layer and slot of `site`."""

    @abstractmethod
    def _hook(self, site: Site, k: int, beta: Beta, tracker: dict[str, int]) -> Any:
        """The hook function at `site`'s `k`-th layer (`tracker`: one dict per `hooks` call,
        for hooks that follow a generation's growing sequence)."""

    @abstractmethod
    def readout(
        self, *, model: HookedModel | None = None, data: ContrastSet | None = None,
        per_position: bool = False,
    ) -> Readout:  # fmt: skip
        """One value per component and how to read it (`ascale.rank_components` ranks it).

        `model` and `data` are read by kinds whose values depend on the activations (dynamic
        scalars); `per_position` asks those for one component per position of `data`."""

    # ---- hooks ----

    def hooks(self, beta: Beta = 1.0) -> list[tuple[str, Any]]:
        """``(hook_name, hook_fn)`` pairs for TransformerLens' ``hooks()``.

        Position-tied hooks accept prompts of the training length and, during generation, the
        tokens added after it (one-token KV-cached steps, or the sequence grown by one token a
        step without the cache): those positions are left unchanged, nothing was trained there.
        """
        self._require_bound()
        if isinstance(beta, Tensor):
            # reading the check back waits for the device; a CUDA graph being recorded cannot
            # (its eager warm-up steps, which run this same check, have passed it)
            recording = beta.is_cuda and torch.cuda.is_current_stream_capturing()
            finite = recording or bool(torch.isfinite(beta).all())
        elif isinstance(beta, int | float) and not isinstance(beta, bool):
            finite = math.isfinite(beta) and abs(beta) <= FLOAT32_MAX  # 1e39 is inf in float32
        else:
            raise AscaleError(f"beta must be a number or a tensor of numbers, got {beta!r}")
        if not finite:
            raise AscaleError(
                f"beta must be finite, got {beta!r} (float32 holds magnitudes up to "
                f"{FLOAT32_MAX:.3g})"
            )
        tracker: dict[str, int] = {}
        return [
            (site.hook_name(layer), self._hook(site, k, beta, tracker))
            for site in self.sites
            for k, layer in enumerate(site.layers)
        ]

    @property
    def first_position(self) -> int:
        """The first prompt position this intervention edits (0 unless bound to positions,
        which `bind` resolves and sorts): the clean run before it can be computed once
        (`ascale._tl.Shared`)."""
        if self.is_bound and isinstance(self.positions, tuple) and self.positions:
            return self.positions[0]
        return 0

    @contextlib.contextmanager
    def applied(self, model: HookedModel, beta: Beta = 1.0, *, start: int = 0) -> Iterator[Any]:
        """Context manager: run `model` (forward passes or ``generate``) with this intervention.

        With `start`, the passes inside feed positions ``start..`` only (a `_tl.Shared` run);
        the hooks edit those positions, and the caller vouches that the earlier ones need no
        edit (``start`` at most `first_position`, or a no-op there).

        Example:
            >>> with scalars.applied(model, beta=1.0):
            ...     logits = model(tokens)
        """
        _tl.check_same_shape(self.dims, _tl.dims(model))
        self._start = start
        try:
            with _tl.attach(model, self.hooks(beta)):
                yield model
        finally:
            self._start = 0

    @contextlib.contextmanager
    def watch(self) -> Iterator[list[Tensor]]:
        """Context manager: each edit made inside adds whether its result is finite (a 0-d
        bool tensor, not read back: no wait for the device) to the list it yields, for the
        caller to check once the pass is done (`ascale.evaluate` does)."""
        self._finite = []
        try:
            yield self._finite
        finally:
            self._finite = None

    def _require_bound(self) -> None:
        if not self.is_bound:
            raise AscaleError(
                f"{type(self).__name__} with positions={self.positions!r} needs the prompt "
                "length: pass n_pos=..., call .bind(n_pos), or fit it on data first"
            )

    # ---- summaries ----

    def l1(self) -> Tensor:
        """Sum of absolute parameter values (the minimality term)."""
        self._require_bound()
        return torch.stack([p.abs().sum() for p in self.params.values()]).sum()

    @property
    def n_params(self) -> int:
        """Number of learned parameters."""
        return sum(p.numel() for p in self.params.values())

    def n_active(self, threshold: float = 1e-2) -> int:
        """Parameters (scalars) or vectors whose magnitude exceeds `threshold`."""
        return sum(int((self._magnitudes(p) > threshold).sum()) for p in self.params.values())

    def _magnitudes(self, param: Tensor) -> Tensor:
        return param.detach().abs()

    def _summary_values(self, param: Tensor) -> Tensor:
        """What `summary`'s min and max read: magnitudes (signed kinds give their values)."""
        return self._magnitudes(param)

    @property
    def hook_names(self) -> list[str]:
        """The hook points this intervention edits, one per site and layer."""
        return [s.hook_name(layer) for s in self.sites for layer in s.layers]

    def config(self) -> dict[str, Any]:
        """What it takes to rebuild this intervention (saved beside the tensors)."""
        return {
            "method": self.method,
            "sites": {s.name: list(s.layers) for s in self.sites},
            "hooks": self.hook_names,
            "positions": self.positions
            if isinstance(self.positions, str)
            else list(self.positions),
            "n_pos": self.n_pos,
            "model": self.dims,
        }

    @classmethod
    def from_config(cls, model: HookedModel, config: dict[str, Any]) -> "Intervention":
        """Rebuild (with zero parameters) from `config()`; `ascale.load` fills the tensors."""
        positions = config["positions"]
        return cls(model, sites=config["hooks"], positions=positions, n_pos=config["n_pos"])

    def summary(self) -> Any:
        """One row per site: layers, parameters, active ones (magnitude above 0.01), L1, and
        the smallest and largest value (scalars) or magnitude (vectors, probes), as a DataFrame.

        Example:
            >>> scalars.summary()  # doctest: +SKIP
        """
        import pandas as pd

        self._require_bound()
        rows = {}
        for site in self.sites:
            param = self.params[site.name].detach()
            size = self._magnitudes(param)
            values = self._summary_values(param).float().cpu()
            rows[site.name] = {
                "layers": len(site.layers),
                "params": param.numel(),
                "active": int((size > 1e-2).sum()),
                "l1": float(param.abs().sum()),
                "min": float(values.min()),
                "max": float(values.max()),
            }
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("site")

    def _repr_html_(self) -> str:
        """Jupyter: the repr line and, once fitted, `summary` as a table."""
        head = f"<p><code>{html.escape(type(self).__name__)}({html.escape(self.extra_repr())})</code></p>"
        if not self.is_bound:
            return head
        return head + str(self.summary().to_html(float_format="{:.4g}".format))

    def extra_repr(self) -> str:
        sites = ", ".join(str(s) for s in self.sites)
        if not self.is_bound:
            return f"sites=[{sites}], positions={self.positions!r}, unbound (no prompt length yet)"
        pos = f"all({self.n_pos})" if self.positions == "all" else repr(self.positions)
        return (
            f"sites=[{sites}], positions={pos}, n_params={self.n_params}, "
            f"l1={float(self.l1().detach()):.4g}, n_active={self.n_active()}"
        )


def _beta_like(beta: float | Tensor, act: Act) -> HookBeta:  # checked here, not by type
    """`beta` as a float, or a per-prompt tensor shaped to broadcast over `act`."""
    if isinstance(beta, Tensor):
        if beta.numel() not in (1, act.shape[0]):
            raise AscaleError(
                f"beta holds {beta.numel()} values for a batch of {act.shape[0]} prompts: give "
                "one number, or one per prompt"
            )
        return beta.to(act.device, act.dtype).reshape(-1, *([1] * (act.ndim - 1)))
    return float(beta)
