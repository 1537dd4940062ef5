"""The component grid: site × layer × [head] × position, as one value object.

Every per-component result in `ascale` lives on a grid: the learned scalars (one parameter per
component), steering vectors (one vector per component), activation and attribution patching,
and circuit scoring. `Grid` enumerates its components once, in one order (site, layer, position
slot, head: the memory order of an intervention's parameters), and owns what is derived from that
order:

- `index`: a `pandas.MultiIndex` (``site, layer, head, pos``) for every result table;
- `names`: the same components as strings, e.g. ``"heads L9H6 @14"``;
- `masks`: boolean ``[copies, pos, (head)]`` masks per hook, for patching many components (or
  many circuits) in one batched forward pass;
- `to_params` / `from_params`: a flat per-component vector to an intervention's parameter
  tensors and back.

A position slot is a token position, or ``None`` for a slot that spans every position
(``positions="shared"``).

Example:
    >>> grid = Grid.of(scalars)  # 2 sites x 2 layers x 15 positions here
    >>> len(grid), grid.names[:2]
    (60, ('attn_out L0 @0', 'attn_out L0 @1'))
"""

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final, NamedTuple

import einops
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ascale import _tl
from ascale._types import HookedModel
from ascale.errors import AscaleError, PromptLengthError
from ascale.sites import Site, resolve_sites

__all__ = [
    "FRACTIONS",
    "POSITION_WORDS",
    "Component",
    "Grid",
    "Positions",
    "circuit_sizes",
    "component_name",
    "parse_positions",
    "resolve_positions",
]


#: The words a `positions` argument takes besides a list of positions (one home: interventions,
#: grids and the command line read them here). ``"auto"``: `ascale.fit` chooses
#: (`ascale.training.positions`); ``"all"``: every position; ``"shared"``: one slot at every
#: position, for prompts of any length.
POSITION_WORDS: Final = ("auto", "all", "shared")
#: A `positions` argument: one of `POSITION_WORDS`, or positions (negative ones count from the end).
Positions = str | Sequence[int]


def parse_positions(
    positions: "Positions | str", *, words: Sequence[str] = POSITION_WORDS
) -> str | tuple[int, ...]:
    """A `positions` argument checked: one of `words`, or a non-empty tuple of whole numbers
    (a list, or a comma-separated string such as ``"0,-1"``, as the command line gives it).

    Example:
        >>> parse_positions("all"), parse_positions([-1, 0]), parse_positions("0,-1")
        ('all', (-1, 0), (0, -1))
    """
    valid = ", ".join(repr(w) for w in words)
    if isinstance(positions, str):
        if positions in words:
            return positions
        pieces = [p.strip() for p in positions.split(",")]
        if not all(p.lstrip("-").isdigit() for p in pieces):
            raise AscaleError(f"{positions!r} is not {valid} or positions such as '-1' or '0,-1'")
        return tuple(int(p) for p in pieces)
    if not isinstance(positions, Sequence) or isinstance(positions, bytes):
        raise AscaleError(f"positions must be {valid} or a list of positions, got {positions!r}")
    bad = [p for p in positions if isinstance(p, bool) or not isinstance(p, int | np.integer)]
    if bad:
        raise AscaleError(f"positions must be whole numbers, got {bad} in {list(positions)!r}")
    if not positions:
        raise AscaleError("positions is an empty list")
    return tuple(int(p) for p in positions)


def resolve_positions(positions: "Positions | str", n_pos: int | None) -> tuple[int, ...] | None:
    """The position slots of a grid: ``"shared"`` gives ``None`` (one slot at every position),
    ``"all"`` every position of prompts of `n_pos` tokens, a list those positions (negative ones
    count from the end), checked, made non-negative and sorted.

    Example:
        >>> resolve_positions([-1, 0], 5), resolve_positions("shared", None)
        ((0, 4), None)
    """
    chosen = parse_positions(positions, words=("all", "shared"))
    if chosen == "shared":
        return None
    if n_pos is None or int(n_pos) < 1:
        raise PromptLengthError(f"n_pos must be at least 1 token, got {n_pos!r}")
    if chosen == "all":
        return tuple(range(n_pos))
    listed = tuple(int(p) for p in chosen)  # words are handled above
    bad = [p for p in listed if not -n_pos <= p < n_pos]
    if bad:
        raise PromptLengthError(f"positions {bad} do not exist in prompts of {n_pos} tokens")
    return tuple(sorted({p % n_pos for p in listed}))


#: MIB's circuit sizes, as fractions of a grid's components (`ascale.score_circuits`).
FRACTIONS: Final = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def circuit_sizes(n: int, fractions: Sequence[float] = FRACTIONS) -> list[int]:
    """``max(1, round(p * n))`` components for each fraction ``p`` of a grid of `n`.

    Example:
        >>> circuit_sizes(270)
        [1, 1, 1, 3, 5, 14, 27, 54, 135, 270]
    """
    return [max(1, min(n, round(p * n))) for p in fractions]


class Component(NamedTuple):
    """One cell of the grid; ``head`` is ``None`` off the ``heads`` site, ``pos`` is ``None`` for
    a slot shared by every position."""

    site: Site
    layer: int
    head: int | None
    pos: int | None

    @property
    def hook_name(self) -> str:
        return self.site.hook_name(self.layer)

    @property
    def name(self) -> str:
        return component_name(self.site.name, self.layer, self.head, self.pos)


def component_name(site: str, layer: int, head: Any, pos: Any) -> str:
    """``"heads L9H6 @14"``: site, layer, head (when there is one), position (when tied)."""
    name = f"{site} L{layer}" + ("" if head is None or pd.isna(head) else f"H{head}")
    return name + ("" if pos is None or pd.isna(pos) else f" @{pos}")


@dataclass(frozen=True)
class Grid:
    """Components on ``sites`` × their layers × ``positions`` × heads (``heads`` site only).

    Attributes:
        sites: the sites, each with its layers.
        positions: the token position of each slot, or ``None`` for one slot shared by all.
        n_heads: heads per layer (the width of the ``heads`` site).
        n_pos: the prompt length the positions belong to (``None`` for a shared slot).
    """

    sites: tuple[Site, ...]
    positions: tuple[int, ...] | None
    n_heads: int
    n_pos: int | None = None

    # ---- construction ----

    @classmethod
    def of(cls, intervention: Any) -> "Grid":
        """The grid of an intervention's parameters (position-tied ones must be bound)."""
        grid: Grid = intervention.grid
        return grid

    @classmethod
    def build(
        cls,
        model: HookedModel,
        n_pos: int,
        *,
        sites: str | Sequence[str] = "attn_out,mlp_out",
        layers: Sequence[int] | None = None,
        positions: Positions = "all",
    ) -> "Grid":
        """A grid on `model`'s hook points for prompts of `n_pos` tokens.

        Args:
            positions: ``"all"``, ``"shared"`` (one slot spanning every position) or a list
                of positions (negative counts from the end).
        """
        chosen = resolve_sites(model, sites, layers)
        n_heads = int(_tl.dims(model)["n_heads"])
        slots = resolve_positions(positions, n_pos)
        return cls(chosen, slots, n_heads, None if slots is None else n_pos)

    # ---- the components, in one order ----

    @cached_property
    def components(self) -> tuple[Component, ...]:
        """Every component, in parameter memory order: site, layer, slot, head."""
        slots: Sequence[int | None] = self.positions if self.positions is not None else [None]
        return tuple(
            Component(site, layer, head, pos)
            for site in self.sites
            for layer in site.layers
            for pos in slots
            for head in (range(self.n_heads) if site.per_head else [None])
        )

    def __len__(self) -> int:
        return len(self.components)

    @cached_property
    def names(self) -> tuple[str, ...]:
        """Each component as a string, e.g. ``"attn_out L3 @7"``."""
        return tuple(c.name for c in self.components)

    @cached_property
    def index(self) -> pd.MultiIndex:
        """A ``(site, layer, head, pos)`` MultiIndex; head and pos are nullable integers."""
        frame = pd.DataFrame(
            {
                "site": [c.site.name for c in self.components],
                "layer": [c.layer for c in self.components],
                "head": pd.array([c.head for c in self.components], dtype="Int64"),
                "pos": pd.array([c.pos for c in self.components], dtype="Int64"),
            }
        )
        return pd.MultiIndex.from_frame(frame)

    def hook_names(self) -> list[str]:
        """The hook of every site and layer, in grid order."""
        return [site.hook_name(layer) for site in self.sites for layer in site.layers]

    @property
    def site_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sites)

    # ---- flat vectors <-> intervention parameters ----

    def _sizes(self) -> list[int]:
        slots = 1 if self.positions is None else len(self.positions)
        return [
            len(site.layers) * slots * (self.n_heads if site.per_head else 1) for site in self.sites
        ]

    @property
    def n_slots(self) -> int:
        """Position slots: one per position, or one shared by every position."""
        return 1 if self.positions is None else len(self.positions)

    @property
    def first_position(self) -> int:
        """The first prompt position a component sits at (0 for a shared slot): every pass
        that patches or ablates only this grid's components runs the earlier positions as the
        clean model does."""
        return self.positions[0] if self.positions else 0

    def layout(self, site: Site) -> tuple[int, int]:
        """``(layers, slots)``: how an intervention lays out `site`'s parameters, before the
        unit (a head's scalar, a vector) of each."""
        return len(site.layers), self.n_slots

    def to_params(self, values: Tensor) -> dict[str, Tensor]:
        """A flat ``[component]`` vector as per-site tensors ``[layer, slot, (head)]``."""
        if values.shape != (len(self),):
            raise AscaleError(
                f"expected {len(self)} values (one per component), got {values.shape}"
            )
        out = {}
        for site, chunk in zip(self.sites, values.split(self._sizes()), strict=True):
            heads = (self.n_heads,) if site.per_head else ()
            out[site.name] = chunk.reshape(*self.layout(site), *heads)
        return out

    def from_params(self, params: dict[str, Tensor]) -> Tensor:
        """Per-site ``[layer, slot, (head)]`` tensors as one flat ``[component]`` vector."""
        return torch.cat([params[site.name].reshape(-1) for site in self.sites])

    # ---- masks for batched patching ----

    def masks(self, rows: Tensor, *, device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """Per hook, a boolean ``[copies, pos, (head)]`` mask from ``rows [copies, component]``.

        Copy ``c`` of a batch is patched wherever ``rows[c]`` is set; a shared slot marks every
        position. Hooks none of whose components is set in any copy are left out.
        """
        if self.n_pos is None:
            raise AscaleError(
                "a grid without a prompt length cannot build position masks: "
                "use grid.with_length(n_pos)"
            )
        copies, n_pos = rows.shape[0], self.n_pos
        per_hook: dict[str, Tensor] = {}
        flat = 0
        slot_index = (
            torch.tensor(self.positions) if self.positions is not None else torch.tensor([0])
        )
        for site, size in zip(self.sites, self._sizes(), strict=True):
            block = rows[:, flat : flat + size]
            flat += size
            width = self.n_heads if site.per_head else 1
            block = einops.rearrange(
                block,
                "copy (layer slot head) -> copy layer slot head",
                layer=len(site.layers),
                slot=len(slot_index),
            )
            for k, layer in enumerate(site.layers):
                part = block[:, k]
                if not bool(part.any()):
                    continue
                mask = torch.zeros((copies, n_pos, width), dtype=torch.bool)
                if self.positions is None:
                    mask[:] = part  # one slot: every position
                else:
                    mask[:, slot_index] = part
                per_hook[site.hook_name(layer)] = (mask if site.per_head else mask[..., 0]).to(
                    device
                )
        return per_hook

    def with_length(self, n_pos: int) -> "Grid":
        """This grid for prompts of `n_pos` tokens (a shared slot then spans those positions)."""
        if self.n_pos not in (None, n_pos):
            raise PromptLengthError(
                f"this grid is tied to prompts of {self.n_pos} tokens, not {n_pos}"
            )
        return Grid(self.sites, self.positions, self.n_heads, n_pos)
