"""Position-tied interventions: a signed scalar, or a vector, per activation vector and position."""

from typing import Any, ClassVar

from jaxtyping import Float
from torch import Tensor

from ascale.interventions._base import Act, HookBeta, Readout
from ascale.interventions._steering import FitDefaults, SteeringIntervention
from ascale.sites import Site


class ActivationScalars(SteeringIntervention):
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
    fit_defaults: ClassVar[FitDefaults] = FitDefaults(
        lr=0.1, steps=100, batch_size=32, sparsity="l1", proximal_lr=0.1
    )

    def _unit_shape(self, site: Site) -> tuple[int, ...]:
        return (self.dims["n_heads"],) if site.per_head else ()

    def _edit(self, act: Act, param: Float[Tensor, "#pos *head"], beta: HookBeta) -> Act:
        return act * (1 + beta * param[None, ..., None])

    def _summary_values(self, param: Tensor) -> Tensor:
        return param.detach()  # signed: amplified above 0, suppressed below

    def readout(self, **_: Any) -> Readout:
        """``alpha`` per component; a negative one (suppressing the component to steer towards
        the wrong answer) says the component supports the correct answer."""
        grid = self.grid
        values = grid.from_params({n: p.detach().cpu() for n, p in self.params.items()})
        return Readout(grid, values, "alpha", support_sign=-1, scales=True)


class SteeringVectors(SteeringIntervention):
    """SteerVec baseline: ``h + beta * v``, one learned vector per activation vector.

    Example:
        >>> vectors = SteeringVectors(model, sites="attn_out,mlp_out", n_pos=14)
        >>> vectors.params["attn_out"].shape == (model.cfg.n_layers, 14, model.cfg.d_model)
        True
    """

    method: ClassVar[str] = "vectors"
    fit_defaults: ClassVar[FitDefaults] = FitDefaults(
        lr=0.01, steps=100, batch_size=32, sparsity="l1", proximal_lr=0.1
    )

    def _unit_shape(self, site: Site) -> tuple[int, ...]:
        if site.per_head:
            return (self.dims["n_heads"], self.dims["d_head"])
        return (self.dims["d_model"],)

    def _edit(self, act: Act, param: Float[Tensor, "#pos *head d"], beta: HookBeta) -> Act:
        return act + beta * param[None]

    def _magnitudes(self, param: Tensor) -> Tensor:
        norms: Tensor = param.detach().norm(dim=-1)  # one norm per vector
        return norms

    def readout(self, **_: Any) -> Readout:
        """Each vector's norm (unsigned: a direction has no support sign)."""
        grid = self.grid
        norms = {n: self._magnitudes(p).cpu() for n, p in self.params.items()}
        return Readout(grid, grid.from_params(norms), "‖v‖", signed=False)
