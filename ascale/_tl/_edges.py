"""Edge-level passes through TransformerLens: the sources and destinations of an `EdgeGraph`.

Sources are read at ``hook_embed`` (``input``), ``blocks.{l}.attn.hook_z`` (each head's output
``z[..., h, :] @ W_O[h]``; the output bias ``b_O`` belongs to no head and stays in the residual,
as in MIB) and ``blocks.{l}.hook_mlp_out``. Destinations are edited at
``blocks.{l}.hook_q_input`` / ``hook_k_input`` / ``hook_v_input`` (one residual copy per head:
``set_use_split_qkv_input``), ``blocks.{l}.hook_mlp_in`` (``set_use_hook_mlp_in``) and the last
block's ``hook_resid_post`` (``logits``), as MIB's graph does.

Every pass runs on `ascale._tl._ungroup.ungrouped(model)` (grouped-query models: a copy with a key
and value input per query head), with those input hooks switched on for the pass only.

- `source_outputs`: every source's output on some prompts (the counterfactual ones), once.
- `masked_run`: a forward pass where each destination's input is its live input plus, over the
  edges not kept, ``(counterfactual - live)`` of their source; many circuits (copies of the
  batch) at once. Keep ``1``: the clean run; ``0``: the counterfactual run; in between (a learned
  scalar per edge) it is linear. The differences live in one buffer ``[copy, src, ...]``.
- `edge_gradients`: ``Σ (counterfactual - clean)_src · ∂loss/∂input_dst`` for every edge, the
  gradients consumed in backward hooks as they arrive (EAP; EAP-IG with `embed`).
"""

import functools
from collections.abc import Callable
from typing import Any

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ascale._tl._run import attach, run
from ascale._tl._ungroup import split_inputs, ungrouped
from ascale._types import HookedModel
from ascale.graph import EdgeGraph

__all__ = ["edge_gradients", "masked_run", "source_outputs"]


def _w_o(model: HookedModel) -> list[Tensor]:
    blocks: Any = getattr(model, "blocks")  # noqa: B009
    return [block.attn.W_O.detach() for block in blocks]


def _device(model: HookedModel) -> torch.device:
    return next(p.device for p in model.parameters() if p.device.type != "meta")


def source_outputs(
    model: HookedModel, graph: EdgeGraph, tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "src batch pos d_model"]:
    """Each source's output on `tokens` (one pass, no gradient).

    Example:
        >>> out = source_outputs(model, EdgeGraph.of(model), tokens[:2])
        >>> out.shape[0] == EdgeGraph.of(model).n_src
        True
    """
    model = ungrouped(model)
    tokens = tokens.to(_device(model))
    out = torch.empty(graph.n_src, *tokens.shape, graph.d_model, device=tokens.device)
    w_o = _w_o(model)

    def put(act: Tensor, hook: Any, start: int, layer: int | None = None) -> Tensor:
        value = act if layer is None else torch.einsum("bphe,hem->hbpm", act, w_o[layer])
        out[start : start + (1 if layer is None else graph.n_heads)] = value
        return act

    hooks: list[tuple[str, Any]] = [("hook_embed", functools.partial(put, start=0))]
    for layer in range(graph.n_layers):
        start = graph.head_src(layer).start
        hooks.append(
            (f"blocks.{layer}.attn.hook_z", functools.partial(put, start=start, layer=layer))
        )
        hooks.append(
            (f"blocks.{layer}.hook_mlp_out", functools.partial(put, start=graph.mlp_src(layer)))
        )
    with torch.no_grad(), attach(model, hooks):  # not inference mode: usable with autograd
        run(model, tokens, last_only=True)
    return out


class _Differences:
    """``counterfactual - live`` of every source written so far, ``[copy, src, batch*pos*d]``.

    Without autograd, one preallocated buffer; with it, the written blocks in a list (writing
    into a buffer read by earlier steps would break their backward), joined per destination
    inside a checkpoint so that only the blocks themselves stay in memory.
    """

    def __init__(self, n_src: int, shape: tuple[int, ...], like: Tensor) -> None:
        self.grad = torch.is_grad_enabled()
        self.shape = shape  # (copy, batch, pos, d_model)
        self.parts: list[tuple[int, Tensor]] = []
        self.filled = 0
        if not self.grad:  # every slot is written before it is read
            c, rest = shape[0], shape[1] * shape[2] * shape[3]
            self.buffer = torch.empty(c, n_src, rest, dtype=like.dtype, device=like.device)
            self.total = torch.zeros(c, rest, dtype=like.dtype, device=like.device)

    def put(self, start: int, corrupt: Tensor, live: Tensor) -> None:
        """Sources ``start ..`` : ``corrupt [1, k, batch, pos, d] - live [copy, k, ...]``."""
        if start != self.filled:
            raise RuntimeError(f"sources written out of order: {start} after {self.filled}")
        k = live.shape[1]
        if self.grad:
            self.parts.append((start, (corrupt - live).flatten(2)))
        else:
            c, b, p, d = self.shape
            torch.sub(corrupt, live, out=self.buffer[:, start : start + k].view(c, k, b, p, d))
            self.total += self.buffer[:, start : start + k].sum(1)
        self.filled += k

    def mix(self, weights: Float[Tensor, "copy dst src"], start: int = 0) -> Tensor:
        """``Σ_s weights[c, dst, s] · difference[c, start + s]``: ``[copy, dst, batch*pos*d]``."""
        n = weights.shape[-1]
        if not self.grad:
            return self._mix_sparse(weights, start)
        parts = [part for first, part in self.parts if start <= first < start + n]
        if sum(part.shape[1] for part in parts) != n:
            raise RuntimeError(f"sources {start}..{start + n} are not all written")
        return checkpoint(_join_mix, weights, *parts, use_reentrant=False)  # type: ignore[no-any-return]

    def _mix_sparse(self, weights: Tensor, start: int) -> Tensor:
        """Only the sources some copy ablates here enter the product; where fewer are kept
        than ablated (small circuits), the sum of every difference minus the kept ones."""
        n = weights.shape[-1]
        rows = self.buffer[:, start : start + n]
        ablated = weights.ne(0).flatten(0, 1).any(0).nonzero().flatten()
        if start == 0 and n == self.filled:  # `total` is the sum over exactly these sources
            kept_weights = 1 - weights
            kept = kept_weights.ne(0).flatten(0, 1).any(0).nonzero().flatten()
            if len(kept) < len(ablated):
                picked = rows.index_select(1, kept)
                return self.total[:, None] - torch.bmm(kept_weights[:, :, kept], picked)
        if len(ablated) == n:
            return torch.bmm(weights, rows)
        return torch.bmm(weights[:, :, ablated], rows.index_select(1, ablated))


def _join_mix(weights: Tensor, *parts: Tensor) -> Tensor:
    return torch.bmm(weights, torch.cat(parts, dim=1))


def masked_run(
    model: HookedModel,
    graph: EdgeGraph,
    tokens: Int[Tensor, "batch pos"],
    keep: Float[Tensor, "copy edge"],
    corrupt: Float[Tensor, "src batch pos d_model"],
    *,
    last_only: bool = True,
) -> Float[Tensor, "copy_batch out_pos d_vocab"]:
    """Logits with the edges ablated where `keep` is below 1, for each copy of the batch.

    Destination ``d``'s input is its live input plus ``Σ_e (1 - keep[c, e]) · (corrupt[src_e] -
    live[src_e])`` over the edges ``e`` into it, at every position; copy ``c`` of `tokens`
    (rows ``c * batch ..``) uses ``keep[c]``. Differentiable in `keep` when autograd is on.

    Example:
        >>> graph = EdgeGraph.of(model)
        >>> corrupt = source_outputs(model, graph, corrupted.tokens[:2])
        >>> keep = torch.stack([torch.ones(graph.n_edges), torch.zeros(graph.n_edges)])
        >>> masked_run(model, graph, tokens[:2], keep, corrupt).shape[:2]
        torch.Size([4, 1])
    """
    model = ungrouped(model)
    device = _device(model)
    tokens, corrupt = tokens.to(device), corrupt.to(device)
    copies, (batch, n_pos), h = keep.shape[0], tokens.shape, graph.n_heads
    ablate = graph.dense(1 - keep.to(device=device, dtype=corrupt.dtype))  # [copy, src, dst]
    diff = _Differences(graph.n_src, (copies, batch, n_pos, graph.d_model), corrupt)
    w_o, mixed = _w_o(model), {}

    def source(act: Tensor, hook: Any, start: int, layer: int | None = None) -> Tensor:
        if layer is None:
            live = act.unflatten(0, (copies, batch))[:, None]
        else:
            live = torch.einsum("cbphe,hem->chbpm", act.unflatten(0, (copies, batch)), w_o[layer])
        diff.put(start, corrupt[start : start + live.shape[1]][None], live)
        return act

    def unflat(mixed: Tensor) -> Tensor:  # [copy, k, batch*pos*d] -> [copy, k, batch, pos, d]
        out: Tensor = mixed.unflatten(-1, (batch, n_pos, graph.d_model))
        return out

    def add(act: Tensor, delta: Tensor) -> Tensor:  # delta [copy, batch, pos, ...], any strides
        out: Tensor = (act.unflatten(0, (copies, batch)) + delta).flatten(0, 1)
        return out

    def at_block(act: Tensor, hook: Any, layer: int) -> Tensor:
        """The block's q/k/v inputs and its MLP's (from the layers below) in one product."""
        first = graph.qkv_dst(layer).start
        weights = ablate[:, : graph.reads(first), first : first + 3 * h + 1]
        mixed["now"] = unflat(diff.mix(weights.transpose(1, 2)))
        return act  # the residual itself is left alone

    def into(act: Tensor, hook: Any, layer: int, offset: int) -> Tensor:
        if layer == graph.n_layers:  # the logits
            return add(act, unflat(diff.mix(ablate[:, :, graph.logits_dst][:, None]))[:, 0])
        if offset < 3 * h:  # the q, k or v inputs of the layer's heads
            return add(act, mixed["now"][:, offset : offset + h].permute(0, 2, 3, 1, 4))
        delta = mixed["now"][:, 3 * h]
        if not graph.parallel_attn_mlp:  # the MLP also reads its own layer's heads
            heads = graph.head_src(layer)
            weights = ablate[:, heads, graph.mlp_dst(layer)][:, None]
            delta = delta + unflat(diff.mix(weights, heads.start))[:, 0]
        return add(act, delta)

    hooks = _hooks(graph, functools.partial(source, start=0), source, into, at_block)
    repeated = einops.repeat(tokens, "b p -> (c b) p", c=copies)
    with split_inputs(model), attach(model, hooks):
        return run(model, repeated, last_only=last_only)


def _hooks(
    graph: EdgeGraph,
    embed: Callable[..., Tensor],
    source: Callable[..., Tensor],
    into: Callable[..., Tensor],
    at_block: Callable[..., Tensor] | None = None,
) -> list[tuple[str, Any]]:
    """Hook points of every source and destination, in the order the forward pass meets them.

    ``source(act, hook, start, layer=None)`` sees a head block (with `layer`: its ``hook_z``) or
    an MLP output at source index ``start``; ``into(act, hook, layer, offset)`` a destination:
    layer ``l``'s q (`offset` 0), k (``n_heads``), v (``2 n_heads``) inputs or its MLP input
    (``3 n_heads``), or the logits (``layer == n_layers``); ``at_block(act, hook, layer)`` the
    residual entering block ``layer``.
    """
    h, partial = graph.n_heads, functools.partial
    hooks: list[tuple[str, Any]] = [("hook_embed", embed)]
    for layer in range(graph.n_layers):
        block = f"blocks.{layer}"
        if at_block is not None:
            hooks.append((f"{block}.hook_resid_pre", partial(at_block, layer=layer)))
        for i, letter in enumerate("qkv"):
            hooks.append((f"{block}.hook_{letter}_input", partial(into, layer=layer, offset=i * h)))
        start = graph.head_src(layer).start
        hooks.append((f"{block}.attn.hook_z", partial(source, start=start, layer=layer)))
        hooks.append((f"{block}.hook_mlp_in", partial(into, layer=layer, offset=3 * h)))
        hooks.append((f"{block}.hook_mlp_out", partial(source, start=graph.mlp_src(layer))))
    last = partial(into, layer=graph.n_layers, offset=0)
    return [*hooks, (f"blocks.{graph.n_layers - 1}.hook_resid_post", last)]


def edge_gradients(
    model: HookedModel,
    graph: EdgeGraph,
    tokens: Int[Tensor, "batch pos"],
    corrupt: Float[Tensor, "src batch pos d_model"],
    loss_fn: Callable[[Tensor], Tensor],
    *,
    clean: Float[Tensor, "src batch pos d_model"] | None = None,
    embed: Float[Tensor, "batch pos d_model"] | None = None,
) -> Float[Tensor, "src dst"]:
    """``Σ over rows and positions of (corrupt - clean)_src · ∂loss/∂input_dst`` per edge
    (``[src, dst]``, 0 off the edges), from one forward and one backward pass.

    `loss_fn` maps the last position's logits ``[batch, 1, d_vocab]`` to a scalar. ``clean``
    defaults to this pass's own source outputs; with `embed`, the pass runs on those token
    embeddings (``hook_embed``) instead, and `clean` should be given (EAP-IG).
    """
    model = ungrouped(model)
    device = _device(model)
    tokens, corrupt = tokens.to(device), corrupt.to(device)
    scores = torch.zeros(graph.n_src, graph.n_dst, device=device)
    diff = (corrupt - clean.to(device)) if clean is not None else corrupt.clone()
    flat = diff.flatten(1, 2)  # [src, batch*pos, d]
    w_o = _w_o(model)

    def embedding(act: Tensor, hook: Any) -> Tensor:
        if clean is None:
            diff[0] -= act.detach()
        return (embed.to(act) if embed is not None else act).detach().requires_grad_(True)

    def source(act: Tensor, hook: Any, start: int, layer: int | None = None) -> Tensor:
        if clean is None:
            live = act.detach()
            if layer is not None:
                live = torch.einsum("bphe,hem->hbpm", live, w_o[layer])
            diff[start : start + (1 if layer is None else graph.n_heads)] -= live
        return act

    # a layer's q, k, v and MLP-input gradients are scored together once all have arrived: one
    # product with the differences per layer, instead of one per destination
    waiting: dict[int, dict[int, Tensor]] = {}
    h, d, rows = graph.n_heads, graph.d_model, flat.shape[1]

    def score(layer: int) -> None:
        got = waiting.pop(layer)
        first = graph.logits_dst if layer == graph.n_layers else graph.qkv_dst(layer).start
        width = 1 if layer == graph.n_layers else 3 * h + 1
        grads = torch.zeros(rows, d, width, device=device)
        for offset, grad in got.items():
            grads[:, :, offset : offset + grad.shape[1]] = grad.transpose(1, 2)
        n = graph.reads(first + width - 1)  # the MLP reads the most (q, k, v: fewer; see below)
        scores[:n, first : first + width] += flat[:n].reshape(n, -1) @ grads.reshape(-1, width)

    def collect(grad: Tensor, layer: int, offset: int) -> None:
        waiting.setdefault(layer, {})[offset] = grad.detach().reshape(rows, -1, d)
        if len(waiting[layer]) == (1 if layer == graph.n_layers else 4):
            score(layer)

    def into(act: Tensor, hook: Any, layer: int, offset: int) -> Tensor:
        out = act.view_as(act)  # its own node: the gradient of this destination alone
        out.register_hook(functools.partial(collect, layer=layer, offset=offset))
        return out

    hooks = _hooks(graph, embedding, source, into)
    with torch.enable_grad(), split_inputs(model), attach(model, hooks):
        loss = loss_fn(run(model, tokens, last_only=True))
        loss.backward()
    for layer in list(waiting):  # destinations the loss does not reach in full
        score(layer)
    # the q/k/v columns were scored against the layer's own heads too: not edges
    return scores * (graph.dense(torch.ones(graph.n_edges, device=device)) != 0)
