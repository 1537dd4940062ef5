"""The one module that talks to TransformerLens: run, capture, tokenize, hook points, prefixes.

Everything else in `ascale` goes through the functions here (`attach`, `run`, `capture`,
`tokenize`, `hook_names`, `dims`, `first_device`), written against the hook-point interface
(`ascale._types.HookedModel`: `hooks()`, `hook_dict`, `cfg`, `to_tokens`), so a
`TransformerBridge` (transformer-lens 4.x) and an older `HookedTransformer` both work. Loading
and the model cache live in `ascale.loading`.
"""

import contextlib
import dataclasses
import functools
import inspect
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from ascale._types import HookedModel
from ascale.errors import IncompatibleModelError

HookFn = Callable[[Tensor, Any], Tensor]


# ---- the hook-point interface: everything else in ascale calls these ----


def dims(model: HookedModel) -> dict[str, Any]:
    """The model's name and shape: what a saved intervention must match."""
    cfg = model.cfg
    return {
        "model_name": str(getattr(cfg, "model_name", "unknown")),
        "n_layers": int(cfg.n_layers),
        "n_heads": int(cfg.n_heads),
        "d_model": int(cfg.d_model),
        "d_head": int(cfg.d_head),
        "d_vocab": int(cfg.d_vocab),
    }


def check_same_shape(
    saved: dict[str, Any], here: dict[str, Any], what: str = "this intervention"
) -> None:
    """Raise `IncompatibleModelError` unless two `dims()` agree on every shape entry."""
    keys = ("n_layers", "n_heads", "d_model", "d_head", "d_vocab")
    mismatched = {k: (saved[k], here[k]) for k in keys if saved[k] != here[k]}
    if mismatched:
        detail = ", ".join(f"{k}: saved {a}, model {b}" for k, (a, b) in mismatched.items())
        raise IncompatibleModelError(
            f"{what} was trained on {saved['model_name']!r}, which does not match "
            f"{here['model_name']!r} ({detail})"
        )


def first_device(model: HookedModel) -> torch.device:
    """Where the model's first parameter (its embeddings, where the tokens go) lives.

    Weights offloaded through a device map sit on ``meta`` between uses; they are skipped.
    """
    placed = (p.device for p in model.parameters() if p.device.type != "meta")
    return next(placed, torch.device(getattr(model.cfg, "device", None) or "cpu"))


def output_device(model: HookedModel) -> torch.device:
    """Where the logits come out: the model's device, or, for a model split over devices
    (``device_map``), the device of its output embedding (the last layer's)."""
    hf: Any = getattr(model, "original_model", None)
    if getattr(hf, "hf_device_map", None) and hasattr(hf, "get_output_embeddings"):
        device = torch.device(hf.get_output_embeddings().weight.device)
        if device.type != "meta":  # offloaded to CPU or disk: computed on cfg.device
            return device
    return torch.device(getattr(model.cfg, "device", None) or "cpu")


def hook_names(model: HookedModel) -> list[str]:
    """Every hook point name the model exposes."""
    return list(model.hook_dict)


def attach(
    model: HookedModel, fwd_hooks: Sequence[tuple[str, HookFn]]
) -> contextlib.AbstractContextManager[Any]:
    """TransformerLens' own `hooks()` context manager: hooks go away even if the body raises."""
    return model.hooks(fwd_hooks=list(fwd_hooks))


def run(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    *,
    last_only: bool = False,
    positions: Int[Tensor, " out_pos"] | None = None,
    prefix: "Prefix | None" = None,
) -> Float[Tensor, "batch out_pos d_vocab"]:
    """Logits of a forward pass (the mask only when there is padding), on the model's device.

    ``out_pos`` is ``pos``, or 1 with `last_only`: the logits of the last position alone (each
    prompt's next-token logits when there is no right padding), or the columns `positions`
    (ascending; e.g. the answer columns of right-padded prompts of several lengths). A
    TransformerBridge then unembeds only those (Hugging Face's ``logits_to_keep``): on SmolLM2
    the full-vocabulary logits at every position cost a sixth of a training step and most of
    its activation memory, and nothing reads them. Other models compute all and return those.

    With `prefix` (the residual stream entering block ``prefix.layer``, one row per row of
    `tokens`, from `prefix_of`), only the blocks from that layer on run: see `Prefix`.
    """
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None
    device = getattr(model.cfg, "device", None)
    if device is not None:
        tokens = tokens.to(device)
    kwargs: dict[str, Any] = {}
    hf_class: Any = type(getattr(model, "original_model", None))
    if last_only and positions is not None:
        raise ValueError("pass last_only or positions, not both")
    if positions is not None:
        positions = positions.to(tokens.device)
    if last_only:
        # an index tensor, not ``1``: Hugging Face slices ``hidden[:, -1:]`` for an int, and a
        # linear layer on that non-contiguous view runs as a broadcast bmm, 15x slower on CPU;
        # made on the device (arange), not copied from the host: a CUDA graph can record it
        n = tokens.shape[1]
        positions = torch.arange(n - 1, n, device=tokens.device)
    kept = positions is not None and _keeps_logits(hf_class)
    if kept:
        kwargs["logits_to_keep"] = positions
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask.to(tokens.device)
    if prefix is not None and prefix.layer > 0:
        if prefix.resid.shape[:2] != tokens.shape:
            raise ValueError(
                f"the prefix holds {tuple(prefix.resid.shape[:2])} (rows, positions), the "
                f"tokens {tuple(tokens.shape)}"
            )
        with _blocks_from(model, prefix.layer):
            logits: Tensor = model(
                prefix.resid.to(tokens.device), start_at_layer=prefix.layer, **kwargs
            )
    else:
        logits = model(tokens, **kwargs)
    return logits[:, positions] if positions is not None and not kept else logits


@functools.cache
def _keeps_logits(hf_class: type) -> bool:
    """Whether a Hugging Face model class can compute the logits of the last position alone."""
    forward = getattr(hf_class, "forward", None)
    return forward is not None and "logits_to_keep" in inspect.signature(forward).parameters


def capture(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    names: Sequence[str],
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    *,
    last_only: bool = False,
) -> tuple[Float[Tensor, "batch out_pos d_vocab"], dict[str, Tensor]]:
    """Logits (as `run` gives them) and the detached activations at hook points `names`.

    Like TransformerLens' ``run_with_cache(names_filter=...)``, through `attach`, so any hooks
    already attached (an intervention) act first and their edits are what gets captured.
    """
    acts: dict[str, Tensor] = {}

    def keep(act: Tensor, hook: Any, name: str) -> Tensor:
        acts[name] = act.detach()
        return act

    hooks = [(n, functools.partial(keep, name=n)) for n in names]
    with attach(model, hooks):
        logits = run(model, tokens, attention_mask, last_only=last_only)
    return logits, acts


# ---- prefix reuse: run only the blocks an intervention can change ----


@dataclasses.dataclass(frozen=True)
class Prefix:
    """The residual stream entering block `layer`, computed once on clean prompts.

    When every hook an intervention (or a patch) edits sits in block `layer` or above, the
    blocks below it see the clean prompt whatever the edit, so their output can be computed
    once and each later forward pass starts at `layer`: `run(..., prefix=...)` runs blocks
    ``layer..n_layers-1`` only (the unembedding included), on `resid`'s rows. Logits and
    gradients equal the full forward's (``tests/test_prefix.py``); on SmolLM2 with sites in
    the upper half of the layers a training step costs 0.69x the same step without it (2
    threads, ``benchmarks/results/prefix_quiet.json``).

    TransformerLens' own ``start_at_layer`` on a TransformerBridge injects the residual but
    still runs the blocks below (transformer-lens 4.3), so `run` also hides those blocks from
    the Hugging Face model for the pass. Where that does not reproduce the full forward on a
    model (`prefix_supported`), `prefix_of` returns a prefix at layer 0: the full forward.
    """

    layer: int
    resid: Float[Tensor, "batch pos d_model"]

    def rows(self, index: Tensor | Sequence[int]) -> "Prefix":
        """The prefix of a subset of the prompts (``index`` as in ``ContrastSet.subset``)."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.resid.device)
        return Prefix(self.layer, self.resid.index_select(0, index))


def first_block(names: Sequence[str]) -> int:
    """The lowest block (layer) any of the hook points `names` sits in.

    0 when one of them is not inside a block (embeddings, the final norm): nothing is reused.
    """
    layers = []
    for name in names:
        parts = name.split(".")
        if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
            return 0
        layers.append(int(parts[1]))
    return min(layers, default=0)


def prefix_of(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    layer: int,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    *,
    batch_size: int = 64,
) -> Prefix:
    """The clean residual stream entering block `layer`, for every row of `tokens`.

    Hooks already attached act on it (attach none below `layer`). Layer 0, or a model where
    starting part-way does not reproduce the full forward (`prefix_supported`), gives
    ``Prefix(0, ...)``: `run` then runs the whole model.
    """
    layer = int(layer)
    if layer <= 0 or not prefix_supported(model, layer):
        return Prefix(0, torch.zeros((*tokens.shape, 0)))
    parts = _resid_before(model, tokens, layer, attention_mask, batch_size)
    return Prefix(layer, torch.cat(list(parts)))


def _resid_before(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    layer: int,
    attention_mask: Int[Tensor, "batch pos"] | None,
    batch_size: int,
) -> Iterator[Float[Tensor, "rows pos d_model"]]:
    """The residual entering block `layer`, a batch at a time (the forward stops there)."""
    device = getattr(model.cfg, "device", None) or "cpu"
    with torch.no_grad():
        for start in range(0, len(tokens), batch_size):
            rows = slice(start, start + batch_size)
            kwargs: dict[str, Any] = {}
            if attention_mask is not None and not bool(attention_mask[rows].all()):
                kwargs["attention_mask"] = attention_mask[rows].to(device)
            yield model(tokens[rows].to(device), stop_at_layer=layer, **kwargs).detach()


_PREFIX_OK: weakref.WeakKeyDictionary[Any, dict[int, bool]] = weakref.WeakKeyDictionary()


def prefix_supported(model: HookedModel, layer: int) -> bool:
    """Whether running from block `layer` reproduces `model`'s full forward (checked once).

    A Hugging Face model that looks a layer's settings up by its index in the stack (Gemma 3
    reads ``config.layer_types[i]``: sliding or full attention, local or global rotary) would
    run the upper blocks with the lower blocks' settings. Refused when the per-layer types do
    not repeat with that shift; otherwise the logits of a short prompt are compared both ways.
    """
    return layer in prefix_layers(model, [layer])


def prefix_layers(model: HookedModel, layers: Sequence[int]) -> list[int]:
    """The `layers` a forward pass can start at (`prefix_supported`), checked together: one full
    forward of a short prompt, then one partial forward per layer not checked before."""
    checked = _PREFIX_OK.setdefault(model, {})
    todo = sorted({int(layer) for layer in layers} - set(checked))
    if todo:
        checked.update(_check_prefix(model, todo))
    return [layer for layer in layers if checked[int(layer)]]


def _check_prefix(model: HookedModel, layers: Sequence[int]) -> dict[int, bool]:
    n_layers = int(model.cfg.n_layers)
    ok = {layer: 0 < layer < n_layers for layer in layers}
    if _layer_list(model) is None:
        return dict.fromkeys(layers, False)
    hf_config = getattr(getattr(model, "original_model", None), "config", None)
    text_config = getattr(hf_config, "text_config", None) or hf_config
    types = list(getattr(text_config, "layer_types", None) or [])
    for layer in layers:
        if types and types[layer:] != types[: len(types) - layer]:
            ok[layer] = False
    wanted = [layer for layer in layers if ok[layer]]
    if not wanted:
        return ok
    vocab = int(model.cfg.d_vocab)
    tokens = torch.arange(1, 9).remainder(vocab - 1).add(1)[None].repeat(2, 1)
    tokens[1] = tokens[1].flip(0)
    names = [f"blocks.{layer}.hook_resid_pre" for layer in wanted]
    try:
        with torch.no_grad():
            full, resid = capture(model, tokens, names)
    except Exception:  # any failure means: run the whole model
        return dict.fromkeys(layers, False)
    scale = full.abs().max().clamp_min(1.0)
    for layer, name in zip(wanted, names, strict=True):
        try:
            with torch.no_grad(), _blocks_from(model, layer):
                part = model(resid[name], start_at_layer=layer)
            ok[layer] = bool(((full - part).abs().max() / scale) < 1e-4)
        except Exception:  # any failure means: run the whole model
            ok[layer] = False
    return ok


def _layer_list(model: HookedModel) -> tuple[torch.nn.Module, str] | None:
    """Where the Hugging Face model holds the Bridge's blocks: ``(parent module, attribute)``."""
    blocks = getattr(model, "blocks", None)
    hf = getattr(model, "original_model", None)
    if blocks is None or hf is None or len(blocks) == 0:
        return None
    for name, module in hf.named_modules():
        same = isinstance(module, torch.nn.ModuleList) and len(module) == len(blocks)
        if same and name and all(a is b for a, b in zip(module, blocks, strict=True)):
            parent, _, attribute = name.rpartition(".")
            return hf.get_submodule(parent), attribute
    return None


@contextlib.contextmanager
def _blocks_from(model: HookedModel, layer: int) -> Iterator[None]:
    """Inside, the Hugging Face model holds only its decoder layers from `layer` on.

    The Bridge's own ``blocks`` (the same module list) stays whole, so its ``start_at_layer``
    still finds block `layer` by its index and injects the residual there.
    """
    found = _layer_list(model)
    if found is None:
        raise IncompatibleModelError(
            f"{type(model).__name__} has no decoder-layer list to start part-way through"
        )
    parent, attribute = found
    whole = getattr(parent, attribute)
    setattr(parent, attribute, torch.nn.ModuleList(list(whole)[layer:]))
    try:
        yield
    finally:
        setattr(parent, attribute, whole)


def tokenize(
    model: HookedModel, prompts: Sequence[str]
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    """Token ids right-padded to the longest prompt, and each prompt's length.

    Each prompt is tokenised on its own, exactly as the model would see it alone.
    """
    rows = [model.to_tokens(p)[0].cpu() for p in prompts]
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    pad_id = model.tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else int(pad_id)
    tokens = pad_sequence(rows, batch_first=True, padding_value=pad_id)
    return tokens, lengths


def answer_token_ids(model: HookedModel, answer: str) -> list[int]:
    """The token ids of an answer string, as it would follow the prompt (no BOS)."""
    return [int(t) for t in model.to_tokens(answer, prepend_bos=False)[0]]


def str_tokens(model: HookedModel, tokens: Int[Tensor, " pos"]) -> list[str]:
    """Each token id as its string."""
    return [model.tokenizer.decode([int(t)]) for t in tokens]


def generate_text(model: HookedModel, prompt: str, **kwargs: Any) -> str:
    """`model.generate` on one prompt, returning the text (prompt included).

    Without the KV cache unless asked (``use_past_kv_cache=True``): on transformer-lens 4.3 with
    transformers 5.x, the Bridge's cached steps see an empty cache (each new token attends only
    to itself), so cached generation diverges from the model after the first new token.
    Recomputing the whole sequence each step is exact, and cheap at these model sizes.
    """
    kwargs.setdefault("verbose", False)
    kwargs.setdefault("use_past_kv_cache", False)
    return str(model.generate(prompt, **kwargs))
