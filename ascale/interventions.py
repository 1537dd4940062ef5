"""Interventions: learnable edits of activation vectors, attached through TransformerLens hooks.

| class | edit of ``h`` | parameters | identity at |
|---|---|---|---|
| `ActivationScalars` | ``h * (1 + beta * alpha)`` | one scalar per site, layer, (head), position | ``alpha = 0`` |
| `SteeringVectors` | ``h + beta * v`` | one vector per site, layer, (head), position | ``v = 0`` |
| `DynamicScalars` | ``h * (1 + beta * (w . h / norm(h) + b))`` | one probe per site, layer, (head) | ``w, b = 0`` |

``beta`` is the steering dial: ``+1`` steers towards the wrong answer, ``-1`` back towards the
correct one, ``0`` is the clean model; any float works. Every hook returns a new tensor and never
edits the activation in place.
"""

import contextlib
import html
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Final, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ascale import models
from ascale.errors import AscaleError, PromptLengthError, UnknownSiteError
from ascale.sites import Site, resolve_sites

__all__ = [
    "METHODS",
    "ActivationScalars",
    "DynamicScalars",
    "Intervention",
    "SteeringVectors",
]

Positions = Literal["all", "shared"] | Sequence[int]
Beta = float | Float[Tensor, " batch"]
# Activations at a hook: ``[batch, pos, d_model]``, or ``[batch, pos, head, d_head]`` for ``heads``.
Act = Float[Tensor, "batch pos *head d"]
# `beta` inside a hook: a float, or one value per prompt shaped to broadcast over the activation.
HookBeta = float | Float[Tensor, "batch *#ones"]


class Intervention(nn.Module, ABC):
    """Base class: parameters per site, layer, (head) and position slot, and their hooks.

    Parameters of site ``s`` live in ``self.params[s]`` with shape
    ``[n_layers_of_site, n_slots, *unit]``: one slot per chosen position (``positions="all"``: every
    position of the training length; a list: those positions; ``"shared"``: one slot used at
    every position, for prompts of any length).
    """

    method: ClassVar[str]

    def __init__(
        self,
        model: Any,
        *,
        sites: str | Sequence[str],
        layers: Sequence[int] | None = None,
        positions: Positions = "all",
        n_pos: int | None = None,
    ) -> None:
        super().__init__()
        self.sites: tuple[Site, ...] = resolve_sites(model, sites, layers)
        self.dims: dict[str, Any] = models.dims(model)
        if isinstance(positions, str):
            if positions not in ("all", "shared"):
                raise AscaleError(f"positions must be 'all', 'shared' or a list, got {positions!r}")
            self.positions: str | tuple[int, ...] = positions
        else:
            self.positions = tuple(int(p) for p in positions)
            if not self.positions:
                raise AscaleError("positions is an empty list")
        self.n_pos: int | None = None
        self.params = nn.ParameterDict()
        self._device = models.first_device(model)
        if positions == "shared":
            self._build(n_slots=1)
        elif n_pos is not None:
            self.bind(n_pos)

    # ---- shape ----

    @property
    def position_tied(self) -> bool:
        """Whether parameters belong to positions (and so to one prompt length)."""
        return self.positions != "shared"

    @property
    def is_bound(self) -> bool:
        """Whether the parameters exist (position-tied ones need the prompt length first)."""
        return len(self.params) > 0

    def bind(self, n_pos: int) -> None:
        """Fix the prompt length and create the parameters (`fit` does this from the data)."""
        if not self.position_tied:
            return
        if int(n_pos) < 1:
            raise PromptLengthError(f"n_pos must be at least 1 token, got {n_pos!r}")
        if self.is_bound:
            if n_pos != self.n_pos:
                raise PromptLengthError(
                    f"this {type(self).__name__} is tied to prompts of {self.n_pos} tokens; "
                    f"got prompts of {n_pos} tokens"
                )
            return
        if isinstance(self.positions, tuple):
            bad = [p for p in self.positions if not -n_pos <= p < n_pos]
            if bad:
                raise PromptLengthError(
                    f"positions {bad} do not exist in prompts of {n_pos} tokens"
                )
            self.positions = tuple(sorted({p % n_pos for p in self.positions}))
        self.n_pos = n_pos
        self._build(n_slots=n_pos if self.positions == "all" else len(self.positions))

    def _build(self, n_slots: int) -> None:
        # float32 whatever the model's dtype: in bfloat16 (8 significant bits) an Adam update
        # of 1e-3 to a scalar near 1 rounds away, and small scalars could not be told from 0;
        # the hooks compute the edit in float32 and hand the model back its own dtype
        for site in self.sites:
            shape = (len(site.layers), n_slots, *self._unit_shape(site))
            zeros = torch.zeros(shape, device=self._device, dtype=torch.float32)
            self.params[site.name] = nn.Parameter(zeros)

    @abstractmethod
    def _unit_shape(self, site: Site) -> tuple[int, ...]:
        """Shape of the parameters of one layer and slot of `site`."""

    @abstractmethod
    def _edit(self, act: Act, param: Float[Tensor, "#pos ..."], beta: HookBeta) -> Act:
        """The edited activation, ``param`` broadcast to ``act`` (``[pos, *unit]``)."""

    # ---- hooks ----

    def hooks(self, beta: Beta = 1.0) -> list[tuple[str, Any]]:
        """``(hook_name, hook_fn)`` pairs for TransformerLens' ``hooks()``.

        Position-tied hooks accept prompts of the training length and, during generation, the
        tokens added after it (one-token KV-cached steps, or the sequence grown by one token a
        step without the cache): those positions are left unchanged, nothing was trained there.
        """
        self._require_bound()
        finite = (
            bool(torch.isfinite(beta).all()) if isinstance(beta, Tensor) else math.isfinite(beta)
        )
        if not finite:
            raise AscaleError(f"beta must be finite, got {beta!r}")
        tracker: dict[str, int] = {}
        return [
            (site.hook_name(layer), self._hook(site, k, beta, tracker))
            for site in self.sites
            for k, layer in enumerate(site.layers)
        ]

    @contextlib.contextmanager
    def applied(self, model: Any, beta: Beta = 1.0) -> Iterator[Any]:
        """Context manager: run `model` (forward passes or ``generate``) with this intervention.

        Example:
            >>> with scalars.applied(model, beta=1.0):
            ...     logits = model(tokens)
        """
        models.check_same_shape(self.dims, models.dims(model))
        with models.attach(model, self.hooks(beta)):
            yield model

    def _hook(self, site: Site, k: int, beta: Beta, tracker: dict[str, int]) -> Any:
        name = site.hook_name(site.layers[k])

        def hook(act: Act, hook: Any) -> Act:
            # float32 edit, returned in the activation's dtype (bfloat16 models stay bfloat16)
            return edit(act).to(act.dtype)

        def edit(act: Tensor) -> Tensor:
            n = act.shape[1]
            # on the device of the activation: in a model split over devices (device_map) the
            # hook of each layer runs where that layer lives; autograd carries the gradient back
            param = self.params[site.name][k].to(act.device)
            if not self.position_tied:
                return self._edit(act, param, _beta_like(beta, act))
            if n == self.n_pos:
                tracker[name] = n
                return self._edit(act, self._full(param), _beta_like(beta, act))
            if tracker.get(name, 0) >= (self.n_pos or 0) and n == 1:
                return act  # a generated token beyond the trained prompt positions (KV cache)
            if n > (self.n_pos or 0) and tracker.get(name) == n - 1:
                # Generation without the KV cache: the sequence grows by one token a step;
                # the trained prompt positions are edited again, the generated ones left alone.
                tracker[name] = n
                full = self._full(param)
                grown = torch.cat([full, full.new_zeros((n - full.shape[0], *full.shape[1:]))])
                return self._edit(act, grown, _beta_like(beta, act))
            raise PromptLengthError(
                f"{type(self).__name__} is tied to prompts of {self.n_pos} tokens, got {n} at "
                f"{name}; filter with `data.with_length({self.n_pos})`, or use "
                "positions='shared' or DynamicScalars for prompts of other lengths"
            )

        return hook

    def _full(self, param: Float[Tensor, " slot *unit"]) -> Float[Tensor, " pos *unit"]:
        """Slot parameters scattered to every position (zeros, the identity, elsewhere)."""
        if self.positions == "all":
            return param
        assert isinstance(self.positions, tuple) and self.n_pos is not None
        index = torch.tensor(self.positions, device=param.device)
        full = param.new_zeros((self.n_pos, *param.shape[1:]))
        return full.index_copy(0, index, param)

    def _require_bound(self) -> None:
        if not self.is_bound:
            raise AscaleError(
                f"{type(self).__name__} with positions='all' needs the prompt length: pass "
                "n_pos=..., call .bind(n_pos), or fit it on data first"
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
    def from_config(cls, model: Any, config: dict[str, Any]) -> "Intervention":
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
            values = (param if self.method == "scalars" else size).float().cpu()
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
        return head + self.summary().to_html(float_format="{:.4g}".format)

    def extra_repr(self) -> str:
        sites = ", ".join(str(s) for s in self.sites)
        if not self.is_bound:
            return f"sites=[{sites}], positions={self.positions!r}, unbound (no prompt length yet)"
        pos = f"all({self.n_pos})" if self.positions == "all" else repr(self.positions)
        return (
            f"sites=[{sites}], positions={pos}, n_params={self.n_params}, "
            f"l1={float(self.l1().detach()):.4g}, n_active={self.n_active()}"
        )


class ActivationScalars(Intervention):
    """ActivScalar: ``h * (1 + beta * alpha)``, one signed scalar per activation vector.

    ``alpha = 0`` is the identity, ``alpha = -1`` ablates the vector (at ``beta = 1``), ``alpha < -1``
    reverses it.

    Example:
        >>> scalars = ActivationScalars(model, sites=["attn_out", "mlp_out"], n_pos=14)
        >>> scalars.n_params == 2 * model.cfg.n_layers * 14  # one per site, layer and position
        True
        >>> scalars.params["mlp_out"].shape  # [layer, pos] (a 2-layer model here)
        torch.Size([2, 14])
    """

    method: ClassVar[str] = "scalars"

    def _unit_shape(self, site: Site) -> tuple[int, ...]:
        return (self.dims["n_heads"],) if site.per_head else ()

    def _edit(self, act: Act, param: Float[Tensor, "#pos *head"], beta: HookBeta) -> Act:
        return act * (1 + beta * param[None, ..., None])


class SteeringVectors(Intervention):
    """SteerVec baseline: ``h + beta * v``, one learned vector per activation vector.

    Example:
        >>> vectors = SteeringVectors(model, sites="attn_out,mlp_out", n_pos=14)
        >>> vectors.params["attn_out"].shape == (model.cfg.n_layers, 14, model.cfg.d_model)
        True
    """

    method: ClassVar[str] = "vectors"

    def _unit_shape(self, site: Site) -> tuple[int, ...]:
        if site.per_head:
            return (self.dims["n_heads"], self.dims["d_head"])
        return (self.dims["d_model"],)

    def _edit(self, act: Act, param: Float[Tensor, "#pos *head d"], beta: HookBeta) -> Act:
        return act + beta * param[None]

    def _magnitudes(self, param: Tensor) -> Tensor:
        return param.detach().norm(dim=-1)  # one norm per vector


class DynamicScalars(Intervention):
    """DynScalar: ``h * (1 + beta * alpha)`` with ``alpha = w . h / ||h|| + b``, a probe of ``h``.

    One linear probe ``(w, b)`` per site and layer (per head for ``heads``), shared by every
    position, so it applies to prompts of any length and to every token that generation adds.
    ``w = 0, b = 0`` is the identity. The probe reads the activation as it arrives at the hook,
    before this intervention edits it, and (with `normalize`) reads its direction only:
    ``alpha = ||w|| cos(w, h) + b``, so ``|alpha - b| <= ||w||`` whatever the activation's norm.

    Parameters of site ``s`` are stored as one tensor ``params[s]`` of shape
    ``[n_layers_of_site, 1, d + 1]`` (``[n_layers_of_site, 1, n_heads, d_head + 1]`` for
    ``heads``): the probe weights ``w`` in ``[..., :-1]`` and the bias ``b`` in ``[..., -1]``;
    `probe` returns them apart. The L1 term of the objective covers both; `n_active` counts
    probes whose ``||w||`` or ``|b|`` exceeds the threshold.

    Args:
        model: the model whose hook points the sites must exist in.
        sites: site names or hook names, as for `ActivationScalars`.
        layers: layers for the named sites; ``None`` for all.
        detach_input: stop gradients through the ``h`` inside the probe, so each probe is
            trained as a function of a fixed input. The forward pass is the same either way.
            ``False`` (the exact gradient) is the default: on SmolLM2 it flipped as many
            unseen-length prompts as ``True`` with equal or lower faithfulness KL (IOI: 0.23
            against 0.31), at about the same speed (``docs/dynamic.md``).
        normalize: probe the direction ``h / ||h||`` (default). ``False`` is the plain
            ``alpha = w . h + b``, whose output grows with the activation's norm (tens to
            thousands across SmolLM2's layers): it needs a learning rate near ``1e-4``.

    Example:
        >>> dyn = DynamicScalars(model, sites="attn_out,mlp_out")
        >>> dyn.n_params == 2 * model.cfg.n_layers * (model.cfg.d_model + 1)
        True
        >>> w, b = dyn.probe("mlp_out")
        >>> w.shape, b.shape  # on SmolLM2: [30, 576] and [30]
        (torch.Size([2, 32]), torch.Size([2]))
    """

    method: ClassVar[str] = "dynamic"

    def __init__(
        self,
        model: Any,
        *,
        sites: str | Sequence[str],
        layers: Sequence[int] | None = None,
        detach_input: bool = False,
        normalize: bool = True,
    ) -> None:
        for name, flag in (("detach_input", detach_input), ("normalize", normalize)):
            if not isinstance(flag, bool):
                raise AscaleError(f"{name} must be True or False, got {flag!r}")
        super().__init__(model, sites=sites, layers=layers, positions="shared")
        self.detach_input: bool = detach_input
        self.normalize: bool = normalize

    def _unit_shape(self, site: Site) -> tuple[int, ...]:
        if site.per_head:
            return (self.dims["n_heads"], self.dims["d_head"] + 1)
        return (self.dims["d_model"] + 1,)

    def _edit(self, act: Act, param: Float[Tensor, "1 *head d+1"], beta: HookBeta) -> Act:
        alpha = self._alpha(act, param[0])
        return act * (1 + beta * alpha[..., None])

    def _alpha(
        self,
        act: Act,
        probe: Float[Tensor, "*head d+1"],
    ) -> Float[Tensor, "batch pos *head"]:
        """``w . x + b`` at every position (and head), ``x = h / ||h||`` (or ``h``)."""
        x = act.detach() if self.detach_input else act
        if self.normalize:
            x = x / x.norm(dim=-1, keepdim=True).clamp_min(_TINY)
        w, b = probe[..., :-1], probe[..., -1]
        return (x * w).sum(-1) + b

    def probe(
        self, site: str
    ) -> tuple[Float[Tensor, "layer *head d"], Float[Tensor, " layer *head"]]:
        """The probe weights ``w`` and biases ``b`` of `site` (detached), one row per layer.

        Raises:
            UnknownSiteError: this intervention has no such site.
        """
        if site not in self.params:
            raise UnknownSiteError(
                f"this DynamicScalars has no site {site!r}; it has {list(self.params)}"
            )
        param = self.params[site].detach()[:, 0]
        return param[..., :-1], param[..., -1]

    def alpha(self, site: str, layer: int, act: Act) -> Float[Tensor, "batch pos *head"]:
        """The scalars ``alpha`` the probe of `site` at `layer` gives activations `act`.

        Exactly what the hook multiplies by (``h * (1 + beta * alpha)``), for inspection and
        attribution: e.g. `act` from a clean ``run_with_cache``.

        Raises:
            UnknownSiteError: this intervention has no such site or layer.
        """
        chosen = [s for s in self.sites if s.name == site and layer in s.layers]
        if not chosen:
            raise UnknownSiteError(
                f"this DynamicScalars has no probe at site {site!r}, layer {layer}; it has "
                + ", ".join(str(s) for s in self.sites)
            )
        k = chosen[0].layers.index(layer)
        return self._alpha(act, self.params[site][k, 0])

    def _magnitudes(self, param: Tensor) -> Tensor:
        # One magnitude per probe: the larger of ||w|| and |b|.
        param = param.detach()
        return torch.maximum(param[..., :-1].norm(dim=-1), param[..., -1].abs())

    def n_active(self, threshold: float = 1e-2) -> int:
        """Probes (site, layer, (head)) whose ``||w||`` or ``|b|`` exceeds `threshold`."""
        return super().n_active(threshold)

    @property
    def n_probes(self) -> int:
        """Number of probes: one per site, layer and (for ``heads``) head."""
        return sum(p[..., 0].numel() for p in self.params.values())

    def config(self) -> dict[str, Any]:
        return {**super().config(), "detach_input": self.detach_input, "normalize": self.normalize}

    @classmethod
    def from_config(cls, model: Any, config: dict[str, Any]) -> "DynamicScalars":
        return cls(
            model,
            sites=config["hooks"],
            detach_input=bool(config["detach_input"]),
            normalize=bool(config.get("normalize", True)),
        )

    def extra_repr(self) -> str:
        sites = ", ".join(str(s) for s in self.sites)
        return (
            f"sites=[{sites}], any length, n_probes={self.n_probes}, n_params={self.n_params}, "
            f"detach_input={self.detach_input}, normalize={self.normalize}, "
            f"l1={float(self.l1().detach()):.4g}, n_active={self.n_active()}"
        )


_TINY = 1e-6  # floor of ||h|| in the normalised probe: a zero activation gets alpha = b


def _beta_like(beta: Beta, act: Act) -> HookBeta:
    """`beta` as a float, or a per-prompt tensor shaped to broadcast over `act`."""
    if isinstance(beta, Tensor):
        return beta.to(act.device, act.dtype).reshape(-1, *([1] * (act.ndim - 1)))
    return float(beta)


METHODS: Final[dict[str, type[Intervention]]] = {}


def build(
    method: str,
    model: Any,
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


def register(cls: type[Intervention]) -> type[Intervention]:
    """Add an intervention class to `METHODS` under its ``method`` name; refuses duplicates."""
    if cls.method in METHODS:
        raise AscaleError(f"method {cls.method!r} is already registered by {METHODS[cls.method]}")
    METHODS[cls.method] = cls
    return cls


register(ActivationScalars)
register(SteeringVectors)
register(DynamicScalars)
