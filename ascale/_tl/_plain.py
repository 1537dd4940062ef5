"""The Hugging Face model with its own modules, for decoding at Hugging Face's speed (`plain`).

A TransformerBridge wraps every module of the Hugging Face model (blocks, attention, each
linear layer, each norm) in a component that runs TransformerLens' hook points around it. A
decoding step feeds one token a row, so that Python work, not arithmetic, sets its cost: on
SmolLM2 a cached step through the Bridge costs about 1.5x Hugging Face's own (48 against 32 ms,
2 threads). `plain` puts the wrapped modules back for the duration of a pass (with Hugging
Face's default SDPA attention where the model has it, not the Bridge's eager one) and attaches
the hooks of the four activation kinds ascale edits as torch hooks at the same places:

- ``blocks.{l}.hook_attn_out``: the attention module's output;
- ``blocks.{l}.attn.hook_z``: the input of the attention's output projection, as
  ``[batch, pos, head, d_head]``;
- ``blocks.{l}.hook_mlp_out``: the MLP module's output;
- ``blocks.{l}.hook_resid_post``: the decoder layer's output.

`plain_supported` checks once per model that this reproduces the Bridge (logits, and what a hook
of each kind sees and edits); any other hook, or a model that fails the check, runs through the
Bridge (`ascale._tl.decode` decides).
"""

import contextlib
import re
import weakref
from collections.abc import Callable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from ascale._tl._run import HookFn, attach
from ascale._types import HookedModel

__all__ = ["plain", "plain_hooks", "plain_supported"]

_KIND = re.compile(r"^blocks\.(\d+)\.(hook_attn_out|attn\.hook_z|hook_mlp_out|hook_resid_post)$")


def plain_hooks(names: Sequence[str]) -> bool:
    """Whether every hook name has a place in the plain model."""
    return all(_KIND.match(name) for name in names)


@contextlib.contextmanager
def plain(model: HookedModel, hooks: Sequence[tuple[str, HookFn]] = ()) -> Iterator[Any]:
    """Inside, ``model.original_model`` runs with its own modules and `hooks` as torch hooks
    (see the module docstring); yields that Hugging Face model. Everything is put back on
    leaving, even when the body raises."""
    hf: Any = getattr(model, "original_model", None)
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    handles: list[Any] = []
    attention = hf.config._attn_implementation  # the Bridge's (eager): put back on leaving
    try:
        # the places first: once unwrapped, the Bridge's own block list holds the originals
        register = [_attach(model, name, fn) for name, fn in hooks]
        _unwrap(hf, swapped)
        if getattr(hf, "_supports_sdpa", False):  # one fused kernel, as Hugging Face's default
            hf.config._attn_implementation = "sdpa"
        handles = [attach_one() for attach_one in register]
        yield hf
    finally:
        for handle in handles:
            handle.remove()
        hf.config._attn_implementation = attention
        for parent, name, bridge in reversed(swapped):
            parent._modules[name] = bridge


def _unwrap(module: torch.nn.Module, swapped: list[Any]) -> None:
    """Replace every Bridge component under `module` by the module it wraps (recursively)."""
    for name, child in list(module._modules.items()):
        if child is None:
            continue
        original = child._modules.get("_original_component")
        if original is not None and name != "_original_component":
            module._modules[name] = original
            swapped.append((module, name, child))
            child = original
        _unwrap(child, swapped)


def _attach(model: HookedModel, name: str, fn: HookFn) -> Callable[[], Any]:
    """What attaches `fn` as a torch hook on the original module where the Bridge's hook
    `name` reads (call it to attach; it returns the handle)."""
    found = _KIND.match(name)
    if found is None:
        raise ValueError(f"{name!r} has no place in the plain model")
    layer, kind = int(found.group(1)), found.group(2)
    block: Any = model.blocks[layer]  # type: ignore[attr-defined]
    hook = SimpleNamespace(name=name)
    if kind == "attn.hook_z":
        out_proj = block.attn.o._original_component
        n_heads = int(model.cfg.n_heads)

        def edit_z(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
            z = args[0]
            heads = z.reshape(*z.shape[:-1], n_heads, z.shape[-1] // n_heads)
            return (fn(heads, hook).reshape(z.shape), *args[1:])

        return lambda: out_proj.register_forward_pre_hook(edit_z)
    target = {
        "hook_attn_out": lambda: block.attn._original_component,
        "hook_mlp_out": lambda: block.mlp._original_component,
        "hook_resid_post": lambda: block._original_component,
    }[kind]()
    return lambda: target.register_forward_hook(_edit_output(fn, hook))


def _edit_output(fn: HookFn, hook: Any) -> Callable[..., Any]:
    def edit(module: Any, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):  # attention: (output, weights); some layers: (hidden,)
            return (fn(output[0], hook), *output[1:])
        return fn(output, hook)

    return edit


_PLAIN_OK: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def plain_supported(model: HookedModel) -> bool:
    """Whether the plain model reproduces the Bridge on `model` (checked once): the logits of
    two short prompts, and at layer 0 what a hook of each kind sees and, after an edit, the
    logits that follow."""
    if model not in _PLAIN_OK:
        _PLAIN_OK[model] = _check_plain(model)
    return _PLAIN_OK[model]


def _check_plain(model: HookedModel) -> bool:
    if getattr(model, "original_model", None) is None or not hasattr(model, "blocks"):
        return False
    vocab = int(model.cfg.d_vocab)
    tokens = torch.arange(1, 9).remainder(vocab - 1).add(1)[None].repeat(2, 1)
    tokens[1] = tokens[1].flip(0)
    tokens = tokens.to(getattr(model.cfg, "device", None) or "cpu")
    names = [
        f"blocks.0.{kind}" for kind in ("attn.hook_z", "hook_attn_out", "hook_mlp_out",
                                        "hook_resid_post")
    ]  # fmt: skip
    try:
        with torch.no_grad():
            bridge = _seen(model, tokens, names, lambda hooks: attach(model, hooks), model)
            ours = _seen(model, tokens, names, lambda hooks: plain(model, hooks), None)
    except Exception:  # any failure means: decode through the Bridge
        return False
    return all(
        a.shape == b.shape and bool(((a - b).abs().max() / a.abs().max().clamp_min(1.0)) < 1e-4)
        for a, b in zip(bridge, ours, strict=True)
    )


def _seen(
    model: HookedModel, tokens: Tensor, names: list[str], hooked: Callable[[Any], Any], run: Any
) -> list[Tensor]:
    """The activations at `names` and the logits, with every activation scaled by 1.5 (so
    that an edit must reach the logits the same way)."""
    seen: list[Tensor] = []

    def keep(act: Tensor, hook: Any) -> Tensor:
        seen.append(act.detach().clone())
        return act * 1.5

    with hooked([(name, keep) for name in names]) as entered:
        forward = run if run is not None else entered
        out = forward(tokens)
        logits = out if isinstance(out, Tensor) else out.logits
    return [*seen, logits]
