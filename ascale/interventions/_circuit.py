"""Circuit scalars: one learned score per component, read as how much of the component a circuit
keeps.

A circuit scalar ``s`` interpolates each component between its ablated and its live activation,

    h' = h_abl + s * (h - h_abl)        s = 1: the clean model;  s = 0: ablated,

with ``h_abl`` the component's activation on the counterfactual prompt (or its mean, or zero),
exactly as `ascale.score_circuits` ablates. The steering scalar ``1 + beta * alpha`` with
``alpha`` in ``[-1, 0]`` interpolates towards zero instead, and its objective asks which
components are *necessary* to flip the answer; circuit scalars are trained for *sufficiency*: few
kept components reproduce the clean behaviour with every other one ablated (`fit_circuit`).

The learned parameters are scores ``theta``, one per component; a circuit of ``k`` components
keeps the ``k`` highest. During training the keep mask is soft, ``sigmoid((theta - tau_k) / T)``
with ``tau_k`` between the ``k``-th and ``k+1``-th score, for a ``k`` drawn anew every step
(Matryoshka attribution), so one fit ranks well at every circuit size.
"""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Final, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from ascale._types import HookedModel
from ascale.errors import AscaleError, PromptLengthError
from ascale.grid import Positions
from ascale.interventions._base import Act, Beta, Intervention, Readout, _beta_like
from ascale.sites import Site

__all__ = ["ABLATIONS", "Ablation", "CircuitScalars", "check_ablation", "soft_top_k"]

#: What replaces a component (or an edge's source) outside a circuit: its activation on the
#: counterfactual prompt, its mean over the data at each position, or zero. One home: circuit
#: scalars, circuit scoring (`ascale.score_circuits`) and the command line read it here.
ABLATIONS: Final = ("counterfactual", "mean", "zero")
Ablation = Literal["counterfactual", "mean", "zero"]


def check_ablation(ablation: object) -> Ablation:
    """`ablation` if it is one of `ABLATIONS`; else an `AscaleError` naming them.

    Example:
        >>> check_ablation("mean")
        'mean'
    """
    if not isinstance(ablation, str) or ablation not in ABLATIONS:
        raise AscaleError(f"ablation must be one of {', '.join(ABLATIONS)}, got {ablation!r}")
    return ablation  # type: ignore[return-value]


def soft_top_k(
    scores: Float[Tensor, " component"], k: int, temperature: float
) -> Float[Tensor, " component"]:
    """A soft keep mask of the top `k` scores: ``sigmoid((scores - tau) / temperature)``, with
    ``tau`` half-way between the ``k``-th and ``k+1``-th largest score (not differentiated);
    ``temperature = 0`` gives the hard mask (exactly 0 or 1).

    Example:
        >>> soft_top_k(torch.tensor([3.0, 1.0, 2.0]), 2, 0.0).tolist()
        [1.0, 0.0, 1.0]
    """
    n = scores.numel()
    if not 1 <= k <= n:
        raise AscaleError(f"k must lie in 1..{n} (the components), got {k}")
    top = scores.detach().topk(min(k + 1, n)).values
    tau = (top[k - 1] + top[k]) / 2 if k < n else top[k - 1] - 1.0
    if temperature <= 0:
        return (scores > tau).to(scores.dtype)
    return torch.sigmoid((scores - tau) / temperature)


class CircuitScalars(Intervention):
    """Circuit scalars: ``h_abl + s * (h - h_abl)`` on each component, ``s`` the share of the
    component a circuit keeps; the learned scores rank the components for circuits of any size.

    The edit needs the ablated activations of the batch it runs on: `circuit` attaches them
    (as `ascale.analysis.patching` captures them) with a keep mask. At ``beta`` the mask is
    ``1 - beta * (1 - s)``: ``beta = 0`` is the clean model, ``beta = 1`` the circuit.

    Example:
        >>> circuit = CircuitScalars(model, sites="heads", positions=[-1], n_pos=train.n_pos)
        >>> circuit.params["heads"].shape  # [layer, position slot, head]
        torch.Size([2, 1, 4])
    """

    method: ClassVar[str] = "circuit"

    def __init__(
        self,
        model: HookedModel,
        *,
        sites: str | Sequence[str],
        layers: Sequence[int] | None = None,
        positions: Positions = "all",
        n_pos: int | None = None,
        ablation: str = "counterfactual",
    ) -> None:
        check_ablation(ablation)
        super().__init__(model, sites=sites, layers=layers, positions=positions, n_pos=n_pos)
        self.ablation = ablation
        self._source: Mapping[str, Tensor] | None = None
        self._keep: dict[str, Tensor] = {}

    def _unit_shape(self, site: Site) -> tuple[int, ...]:
        return (self.dims["n_heads"],) if site.per_head else ()

    def readout(self, **_: Any) -> Readout:
        """The learned scores: the sign says for or against the answer (CPR's order), the size
        how much the component matters either way (CMD's order), as for patching effects."""
        scores = self.scores().detach().cpu()
        return Readout(self.grid, scores, "score", info={"ranked_by": "circuit score"})

    def scores(self) -> Float[Tensor, " component"]:
        """The learned scores in grid order (`ascale.Grid.of(self).names`)."""
        return self.grid.from_params(dict(self.params))

    def mask(self, k: int, temperature: float = 0.0) -> Float[Tensor, " component"]:
        """The keep mask of the top `k` components (`soft_top_k`; hard by default)."""
        return soft_top_k(self.scores(), k, temperature)

    @contextmanager
    def circuit(
        self,
        model: HookedModel,
        source: Mapping[str, Tensor],
        keep: Float[Tensor, " component"],
        beta: Beta = 1.0,
        *,
        start: int = 0,
    ) -> Iterator[HookedModel]:
        """Run `model` with only `keep` of each component (a ``[component]`` vector in grid
        order, e.g. `mask`), the rest replaced by `source` (hook name -> ablated activations
        of the batch, ``[batch, pos, ...]``). With `start`, the passes inside feed positions
        ``start..`` only (a `_tl.Shared` run): the hooks edit those positions of `source` and
        `keep`, and the caller vouches that ablating the earlier ones is a no-op.

        Example:
            >>> circuit = CircuitScalars(model, sites="heads", n_pos=train.n_pos)
            >>> zero = {n: torch.zeros(len(train), train.n_pos, 4, 8) for n in circuit.hook_names}
            >>> with circuit.circuit(model, zero, circuit.mask(k=3)):  # 3 heads x positions kept
            ...     logits = model(train.tokens)
        """
        missing = [name for name in self.hook_names if name not in source]
        if missing:
            raise AscaleError(f"the ablated activations lack the hook(s) {missing}")
        self._source, self._keep = source, self.grid.to_params(keep)
        try:
            with self.applied(model, beta, start=start):
                yield model
        finally:
            self._source, self._keep = None, {}

    def _hook(self, site: Site, k: int, beta: Beta, tracker: dict[str, int]) -> Any:
        name = site.hook_name(site.layers[k])

        def hook(act: Act, hook: Any) -> Act:
            if self._source is None:
                raise AscaleError(
                    "circuit scalars ablate towards the batch's own ablated activations: run "
                    "the model inside `with scalars.circuit(model, source, keep)`"
                )
            start, n = self._start, self._start + act.shape[1]
            if self.position_tied and n != self.n_pos:
                raise PromptLengthError(
                    f"CircuitScalars is tied to prompts of {self.n_pos} tokens, got {n} at {name}"
                )
            keep = self._full_keep(self._keep[site.name][k].to(act.device), n)[start:]
            weight = 1 - _beta_like(beta, act) * (1 - keep[None, ..., None])
            # lerp is exact at both ends: weight 1 gives act, weight 0 the source
            source = self._source[name][:, start:].to(act.device, act.dtype)
            return torch.lerp(source, act, weight.to(act.dtype))

        return hook

    def _full_keep(self, keep: Float[Tensor, " slot *head"], n: int) -> Tensor:
        """Slot values at every position: positions off the grid are kept (1)."""
        if self.positions == "shared":
            return keep.expand(n, *keep.shape[1:])
        if self.positions == "all":
            return keep
        assert isinstance(self.positions, tuple)
        index = torch.tensor(self.positions, device=keep.device)
        return keep.new_ones((n, *keep.shape[1:])).index_copy(0, index, keep)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "ablation": self.ablation}

    @classmethod
    def from_config(cls, model: HookedModel, config: dict[str, Any]) -> "CircuitScalars":
        return cls(
            model,
            sites=config["hooks"],
            positions=config["positions"],
            n_pos=config["n_pos"],
            ablation=config.get("ablation", "counterfactual"),
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ablation={self.ablation!r}"
