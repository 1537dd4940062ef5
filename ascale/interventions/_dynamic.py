"""Dynamic scalars: a linear probe of each activation gives its scalar, at any prompt length."""

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from ascale import _tl
from ascale._types import HookedModel
from ascale.data import ContrastSet
from ascale.errors import AscaleError, UnknownSiteError
from ascale.grid import Grid, Positions
from ascale.interventions._base import Act, HookBeta, Readout
from ascale.interventions._steering import FitDefaults, SteeringIntervention
from ascale.sites import Site

_TINY = 1e-6  # floor of ||h|| in the normalised probe: a zero activation gets alpha = b


class DynamicScalars(SteeringIntervention):
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
    any_length: ClassVar[bool] = True
    fit_defaults: ClassVar[FitDefaults] = FitDefaults(
        lr=0.01, steps=200, batch_size=64, sparsity="l1", proximal_lr=0.01
    )

    def __init__(
        self,
        model: HookedModel,
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

    @classmethod
    def create(
        cls, model: HookedModel, *, positions: Positions = "auto", n_pos: int | None = None,
        **options: Any,
    ) -> "DynamicScalars":  # fmt: skip
        """A fresh one (sites, layers and its own options in `options`); a probe is shared by
        every position, so the grid's `positions` and `n_pos` are not its own."""
        return cls(model, **options)

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

    def readout(
        self,
        *,
        model: HookedModel | None = None,
        data: ContrastSet | None = None,
        per_position: bool = False,
    ) -> Readout:
        """Each probe's mean ``alpha`` over every real token of `data` (or, `per_position`, at
        each position over the prompts, which must share one length), with ``h`` read on the
        clean run; ranked by mean ``|alpha|``."""
        if model is None or data is None:
            raise AscaleError("ranking dynamic scalars needs model= and data= (alpha depends on h)")
        sums = self._alpha_sums(model, data, per_position)
        count = float(len(data)) if per_position else float(data.lengths.sum())
        slots = tuple(range(data.n_pos)) if per_position else None
        grid = Grid(self.sites, slots, int(self.dims["n_heads"]), data.n_pos if slots else None)
        per_site = {  # [2, layer, slot, (head)]: signed and absolute means
            site.name: torch.stack(
                [sums[site.hook_name(layer)] / count for layer in site.layers], dim=1
            ).reshape(2, len(site.layers), grid.n_slots, *self._unit_shape(site)[:-1])
            for site in self.sites
        }
        values = grid.from_params({n: m[0] for n, m in per_site.items()})
        sizes = grid.from_params({n: m[1] for n, m in per_site.items()})
        info = {"n_prompts": len(data), "ranked_by": "mean |alpha|"}
        return Readout(grid, values, "mean alpha", support_sign=-1, magnitude=sizes,
                       scales=True, info=info)  # fmt: skip

    def _alpha_sums(
        self, model: HookedModel, data: ContrastSet, per_position: bool
    ) -> dict[str, Tensor]:
        """Per hook, ``[2, (pos), (head)]``: the sums of ``alpha`` and ``|alpha|`` over the
        real tokens of `data` (over its prompts only, `per_position`)."""
        sums: dict[str, Tensor] = {}
        device = _tl.first_device(model)
        with torch.inference_mode():
            for start in range(0, len(data), 32):
                batch = data.subset(range(start, min(start + 32, len(data))))
                mask = batch.attention_mask.to(device)
                _, acts = _tl.capture(model, batch.tokens.to(device), self.hook_names, mask)
                for site in self.sites:
                    for layer in site.layers:
                        key = site.hook_name(layer)
                        # exactly what the hook multiplies by (normalised input included)
                        alpha = self.alpha(site.name, layer, acts[key])
                        real = mask.reshape(*mask.shape, *[1] * (alpha.ndim - 2)).to(alpha.dtype)
                        axes = (0,) if per_position else (0, 1)
                        signed = (alpha * real).sum(axes).cpu()
                        size = (alpha.abs() * real).sum(axes).cpu()
                        both = torch.stack([signed, size])
                        sums[key] = sums[key] + both if key in sums else both
        return sums

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
    def from_config(cls, model: HookedModel, config: dict[str, Any]) -> "DynamicScalars":
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
