"""`EdgeGraph`: a model's computation as MIB's graph of edges (pure Python and torch).

The Mechanistic Interpretability Benchmark's circuit track (MIB, Mueller et al. 2025; its graph
is ``hannamw/EAP-IG``'s ``src/eap/graph.py``) states circuits as edges between:

- **sources** (MIB's forward nodes), in this order: ``input`` (the token embeddings), then per
  layer ``l`` each head's output ``a{l}.h{h}`` and the MLP's output ``m{l}``:
  ``n_src = 1 + n_layers * (n_heads + 1)``;
- **destinations** (MIB's backward slots), in this order: per layer each head's query inputs
  ``a{l}.h{h}<q>`` (every head), then its key inputs ``<k>``, value inputs ``<v>``, then the
  MLP's input ``m{l}``; last ``logits``: ``n_dst = n_layers * (3 * n_heads + 1) + 1``.
  Grouped-query models are ungrouped: every query head has its own key and value input.

An edge runs from a source to every destination that reads it: heads of layer ``l`` read the
sources of layers ``< l`` (and ``input``); the MLP of layer ``l`` also reads its own layer's heads
(not with ``parallel_attn_mlp``); ``logits`` reads everything. Edge names are ``src->dst``
(``a3.h2->a7.h1<k>``, ``m4->m9``, ``input->logits``), in MIB's order (`EdgeGraph.edges`). GPT-2
small has 32,491 edges, SmolLM2-135M 123,211. Node names (MIB's ``nodes``) are ``input``,
``a{l}.h{h}``, ``m{l}`` and ``logits``.

Example:
    >>> graph = EdgeGraph(n_layers=12, n_heads=12, d_model=768)  # GPT-2 small
    >>> graph.n_edges, graph.n_src, graph.n_dst
    (32491, 157, 445)
    >>> graph.edges[0], graph.edges[-1]
    ('input->a0.h0<q>', 'm11->logits')
"""

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ascale._outputs import write_json
from ascale._types import HookedModel
from ascale.errors import AscaleError, SavedFileError, closest

__all__ = ["EdgeGraph", "read_mib_json"]

QKV = "qkv"


@dataclass(frozen=True)
class EdgeGraph:
    """The edges of a model with `n_layers` layers of `n_heads` heads (see the module).

    Attributes:
        n_layers: the model's layers.
        n_heads: query heads per layer.
        d_model: the residual stream's width (MIB's files record it).
        parallel_attn_mlp: whether each MLP reads the layer's input rather than the residual
            after its attention (GPT-J, NeoX): then it reads no head of its own layer.
    """

    n_layers: int
    n_heads: int
    d_model: int
    parallel_attn_mlp: bool = False

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_heads", "d_model"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AscaleError(f"{name} must be a positive integer, got {value!r}")

    @classmethod
    def of(cls, model: HookedModel) -> "EdgeGraph":
        """The graph of a loaded model, from its config (the fields `ascale._tl.dims` reads;
        read here, not through `ascale._tl`, which builds on this module)."""
        cfg = model.cfg
        parallel = bool(getattr(cfg, "parallel_attn_mlp", False))
        return cls(int(cfg.n_layers), int(cfg.n_heads), int(cfg.d_model), parallel)

    # ---- sources and destinations ----

    @property
    def n_src(self) -> int:
        """Sources: ``input``, each head, each MLP."""
        return 1 + self.n_layers * (self.n_heads + 1)

    @property
    def n_dst(self) -> int:
        """Destination slots: each head's q, k and v input, each MLP's input, ``logits``."""
        return self.n_layers * (3 * self.n_heads + 1) + 1

    def head_src(self, layer: int) -> slice:
        """Source indices of layer `layer`'s heads."""
        start = 1 + layer * (self.n_heads + 1)
        return slice(start, start + self.n_heads)

    def mlp_src(self, layer: int) -> int:
        """Source index of layer `layer`'s MLP."""
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    def qkv_dst(self, layer: int) -> slice:
        """Destination indices of layer `layer`'s query, key and value inputs (each ``n_heads``)."""
        start = layer * (3 * self.n_heads + 1)
        return slice(start, start + 3 * self.n_heads)

    def mlp_dst(self, layer: int) -> int:
        """Destination index of layer `layer`'s MLP input."""
        return layer * (3 * self.n_heads + 1) + 3 * self.n_heads

    @property
    def logits_dst(self) -> int:
        return self.n_dst - 1

    def reads(self, dst: int) -> int:
        """How many sources destination `dst` reads: the first ``reads(dst)`` of them."""
        if dst == self.logits_dst:
            return self.n_src
        layer, slot = divmod(dst, 3 * self.n_heads + 1)
        own_heads = slot == 3 * self.n_heads and not self.parallel_attn_mlp
        return 1 + layer * (self.n_heads + 1) + (self.n_heads if own_heads else 0)

    @cached_property
    def src_names(self) -> tuple[str, ...]:
        names = ["input"]
        for layer in range(self.n_layers):
            names += [f"a{layer}.h{h}" for h in range(self.n_heads)] + [f"m{layer}"]
        return tuple(names)

    @cached_property
    def dst_names(self) -> tuple[str, ...]:
        names = []
        for layer in range(self.n_layers):
            for letter in QKV:
                names += [f"a{layer}.h{h}<{letter}>" for h in range(self.n_heads)]
            names.append(f"m{layer}")
        return (*names, "logits")

    @property
    def node_names(self) -> tuple[str, ...]:
        """MIB's nodes: the sources, then ``logits``."""
        return (*self.src_names, "logits")

    @cached_property
    def dst_node(self) -> Int[Tensor, " dst"]:
        """The source index of each destination's node (``-1`` for ``logits``)."""
        node = torch.full((self.n_dst,), -1, dtype=torch.long)
        for layer in range(self.n_layers):
            heads = torch.arange(self.head_src(layer).start, self.head_src(layer).stop)
            node[self.qkv_dst(layer)] = heads.repeat(3)
            node[self.mlp_dst(layer)] = self.mlp_src(layer)
        return node

    # ---- edges ----

    @cached_property
    def _index(self) -> tuple[Tensor, Tensor]:
        """Source and destination index of every edge, in MIB's order: per layer, the edges
        into its heads (by source, then head, then q/k/v), then into its MLP (by source);
        last the edges into ``logits`` (by source). With ``parallel_attn_mlp`` each source's
        edge into the MLP follows its edges into the layer's heads."""
        src: list[Tensor] = []
        dst: list[Tensor] = []
        h = self.n_heads
        for layer in range(self.n_layers):
            n = 1 + layer * (h + 1)
            # (source, head, letter) -> destination  l(3H+1) + letter * H + head
            slots = (
                self.qkv_dst(layer).start + torch.arange(3)[None, :] * h + torch.arange(h)[:, None]
            )
            per_src = slots.flatten()
            if self.parallel_attn_mlp:  # each source's MLP edge follows its head edges
                per_src = torch.cat([per_src, torch.tensor([self.mlp_dst(layer)])])
            src.append(torch.arange(n).repeat_interleave(len(per_src)))
            dst.append(per_src.repeat(n))
            if not self.parallel_attn_mlp:  # then the MLP's edges, its own heads included
                src.append(torch.arange(n + h))
                dst.append(torch.full((n + h,), self.mlp_dst(layer)))
        src.append(torch.arange(self.n_src))
        dst.append(torch.full((self.n_src,), self.logits_dst))
        return torch.cat(src), torch.cat(dst)

    @property
    def src_index(self) -> Int[Tensor, " edge"]:
        """Each edge's source index (into `src_names`)."""
        return self._index[0]

    @property
    def dst_index(self) -> Int[Tensor, " edge"]:
        """Each edge's destination index (into `dst_names`)."""
        return self._index[1]

    @property
    def n_edges(self) -> int:
        return len(self._index[0])

    @cached_property
    def edges(self) -> tuple[str, ...]:
        """Edge names ``src->dst``, in MIB's order (that of its graph files)."""
        s, d = self.src_names, self.dst_names
        return tuple(
            f"{s[i]}->{d[j]}"
            for i, j in zip(self.src_index.tolist(), self.dst_index.tolist(), strict=True)
        )

    @cached_property
    def edge_ids(self) -> dict[str, int]:
        """Each edge name's position in `edges`."""
        return {name: i for i, name in enumerate(self.edges)}

    def dense(self, values: Tensor, fill: float | bool = 0) -> Tensor:
        """Per-edge `values` ``[..., edge]`` as a ``[..., src, dst]`` matrix (MIB's layout),
        `fill` where there is no edge; differentiable in `values`.

        Example:
            >>> graph = EdgeGraph(n_layers=2, n_heads=1, d_model=4)
            >>> graph.dense(torch.ones(graph.n_edges)).shape
            torch.Size([5, 9])
        """
        self._check_edges(values)
        out = torch.full(
            (*values.shape[:-1], self.n_src, self.n_dst),
            fill,
            dtype=values.dtype,
            device=values.device,
        )
        out[..., self.src_index.to(values.device), self.dst_index.to(values.device)] = values
        return out

    def sparse(self, matrix: Tensor) -> Tensor:
        """The per-edge values ``[..., edge]`` of a ``[..., src, dst]`` matrix (`dense`'s inverse)."""
        if tuple(matrix.shape[-2:]) != (self.n_src, self.n_dst):
            raise AscaleError(
                f"expected a [..., {self.n_src}, {self.n_dst}] matrix, got {tuple(matrix.shape)}"
            )
        return matrix[..., self.src_index.to(matrix.device), self.dst_index.to(matrix.device)]

    def _check_edges(self, values: Tensor) -> None:
        if values.ndim == 0 or values.shape[-1] != self.n_edges:
            raise AscaleError(
                f"expected one value per edge ([..., {self.n_edges}]), got {tuple(values.shape)}"
            )

    # ---- circuits ----

    def prune(self, kept: Bool[Tensor, "*circuit edge"]) -> Bool[Tensor, "*circuit edge"]:
        """The edges of `kept` on paths from ``input`` to ``logits`` (MIB's ``Graph.prune``).

        Repeated to a fixed point: a node other than ``input`` and ``logits`` stays if it has a
        kept edge in (into any of its q, k, v inputs, for a head) and one out; ``input`` if it
        has one out; an edge stays if both its ends stay.

        Examples:
            >>> graph = EdgeGraph(n_layers=1, n_heads=1, d_model=4)
            >>> kept = torch.zeros(graph.n_edges, dtype=torch.bool)
            >>> kept[graph.edge_ids["input->a0.h0<q>"]] = True  # a0.h0 has no edge out
            >>> kept[graph.edge_ids["input->m0"]] = True
            >>> kept[graph.edge_ids["m0->logits"]] = True
            >>> [graph.edges[i] for i in graph.prune(kept).nonzero().flatten()]
            ['input->m0', 'm0->logits']
        """
        self._check_edges(kept)
        flat = kept.reshape(-1, self.n_edges).to(torch.bool)
        src = self.src_index.to(kept.device).expand(len(flat), -1)
        node = self.dst_node.to(kept.device)[self.dst_index.to(kept.device)]
        into_logits = node < 0
        node = node.clamp(min=0).expand(len(flat), -1)
        while True:
            zeros = torch.zeros(len(flat), self.n_src, device=kept.device)
            has_out = zeros.scatter_add(1, src, flat.float()) > 0
            has_in = zeros.scatter_add(1, node, (flat & ~into_logits).float()) > 0
            has_in[:, 0] = True
            alive = has_out & has_in
            new = flat & alive.gather(1, src) & (into_logits | alive.gather(1, node))
            if torch.equal(new, flat):
                return new.reshape(kept.shape)
            flat = new

    def nodes_in(self, kept: Bool[Tensor, " edge"]) -> Bool[Tensor, " src"]:
        """Which sources are nodes of the circuit `kept`: an edge in (``input``: none needed)
        and an edge out, as MIB marks them."""
        self._check_edges(kept)
        kept = kept.to(torch.bool).cpu()
        has_out = torch.zeros(self.n_src, dtype=torch.bool)
        has_out[self.src_index[kept]] = True
        node = self.dst_node[self.dst_index[kept]]
        has_in = torch.zeros(self.n_src, dtype=torch.bool)
        has_in[node[node >= 0]] = True
        has_in[0] = True
        return has_out & has_in

    # ---- MIB's file ----

    def to_mib_json(
        self, scores: Float[Tensor, " edge"], in_graph: Bool[Tensor, " edge"] | None = None
    ) -> dict[str, Any]:
        """MIB's graph file (``Graph.to_json``) as a dict: ``cfg``, ``nodes``, ``edges``.

        Args:
            scores: one score per edge (in `edges` order); a positive score supports the correct
                answer.
            in_graph: the circuit's edges; ``None``: none marked, as EAP-IG's graph is written
                after scoring (MIB's evaluation selects the top edges from the scores). Nodes are
                marked from it as MIB does (`nodes_in`); ``logits`` always.

        Examples:
            >>> graph = EdgeGraph(n_layers=1, n_heads=2, d_model=8)
            >>> mib = graph.to_mib_json(torch.arange(graph.n_edges, dtype=torch.float32))
            >>> mib["cfg"], mib["edges"]["input->a0.h0<q>"]
            ({'n_layers': 1, 'n_heads': 2, 'parallel_attn_mlp': False, 'd_model': 8}, {'score': 0.0, 'in_graph': False})
            >>> read_mib_json(mib)[0] == graph
            True
        """
        self._check_edges(scores)
        if scores.ndim != 1:
            raise AscaleError(f"expected one score per edge, got shape {tuple(scores.shape)}")
        kept = torch.zeros(self.n_edges, dtype=torch.bool) if in_graph is None else in_graph.cpu()
        self._check_edges(kept)
        alive = self.nodes_in(kept).tolist()
        nodes: dict[str, dict[str, bool]] = {
            name: {"in_graph": bool(a)} for name, a in zip(self.src_names, alive, strict=True)
        }
        nodes["logits"] = {"in_graph": True}
        values = scores.detach().cpu().tolist()
        edges = {
            name: {"score": float(v), "in_graph": bool(k)}
            for name, v, k in zip(self.edges, values, kept.tolist(), strict=True)
        }
        cfg = {
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "parallel_attn_mlp": self.parallel_attn_mlp,
            "d_model": self.d_model,
        }
        return {"cfg": cfg, "nodes": nodes, "edges": edges}

    def write_mib_json(
        self,
        path: str | os.PathLike[str],
        scores: Float[Tensor, " edge"],
        in_graph: Bool[Tensor, " edge"] | None = None,
    ) -> None:
        """`to_mib_json`, written to `path` atomically (the folder is made if need be)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(path), self.to_mib_json(scores, in_graph))


def read_mib_json(
    source: dict[str, Any] | str | os.PathLike[str],
) -> tuple[EdgeGraph, Float[Tensor, " edge"], Bool[Tensor, " edge"]]:
    """A graph file in MIB's format (a dict, or a path): the graph, each edge's score and
    whether it is in the circuit, in `EdgeGraph.edges` order (float32 scores: a file that
    `EdgeGraph.to_mib_json` wrote reads back exactly).

    Raises:
        SavedFileError: a key is missing, an edge name is unknown, or an edge is missing.

    Example:
        >>> graph = EdgeGraph(n_layers=1, n_heads=1, d_model=4)
        >>> scores = torch.linspace(-1, 1, graph.n_edges)
        >>> back, read, in_graph = read_mib_json(graph.to_mib_json(scores))
        >>> torch.equal(read, scores), bool(in_graph.any())
        (True, False)
    """
    if isinstance(source, dict):
        d = source
    else:
        with open(source) as f:
            d = json.load(f)
    missing = [k for k in ("cfg", "edges") if k not in d]
    if missing:
        raise SavedFileError(f"not an MIB graph file: no {missing} (keys: {sorted(d)[:5]})")
    cfg = d["cfg"]
    absent = [k for k in ("n_layers", "n_heads", "d_model") if k not in cfg]
    if absent:
        raise SavedFileError(f"the MIB graph's cfg lacks {absent}: {cfg!r}")
    graph = EdgeGraph(
        int(cfg["n_layers"]),
        int(cfg["n_heads"]),
        int(cfg["d_model"]),
        bool(cfg.get("parallel_attn_mlp", False)),
    )
    scores = torch.zeros(graph.n_edges, dtype=torch.float64)
    in_graph = torch.zeros(graph.n_edges, dtype=torch.bool)
    seen = torch.zeros(graph.n_edges, dtype=torch.bool)
    ids = graph.edge_ids
    for name, info in d["edges"].items():
        i = ids.get(name)
        if i is None:
            raise SavedFileError(
                f"unknown edge {name!r} for a graph of {graph.n_layers} layers x "
                f"{graph.n_heads} heads; closest: {closest(name, ids)}"
            )
        scores[i] = float(info.get("score", float("nan")))
        in_graph[i] = bool(info["in_graph"])
        seen[i] = True
    if not bool(seen.all()):
        lost = [graph.edges[i] for i in (~seen).nonzero().flatten()[:3].tolist()]
        raise SavedFileError(f"the MIB graph misses {int((~seen).sum())} edges, e.g. {lost}")
    return graph, scores.float(), in_graph
