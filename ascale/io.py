"""Saving and loading interventions: safetensors for tensors, JSON for everything else.

``save(iv, "out/iv")`` writes ``out/iv/intervention.safetensors`` and ``out/iv/intervention.json``
(format version, method, sites, hook names, positions, model name and shape, the sha256 of the
tensors file, and any extra metadata such as hyperparameters). Nothing is pickled.

Both files are written into a temporary sibling folder and put in place as a unit (see
`ascale._outputs.write_folder`), so a failure never leaves half a save. `load` trusts nothing it
reads: the version, the checksum, the method, the hooks against the sites, and every tensor's
name, shape and values are checked, and each failure names the file and what is wrong.
"""

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from ascale import _checks, _tl
from ascale._outputs import dumps_json, write_folder
from ascale._types import HookedModel
from ascale.errors import AscaleError, AscaleWarning, SavedFileError
from ascale.interventions import METHODS, Intervention
from ascale.sites import SITE_HOOKS, Site

__all__ = ["load", "read_metadata", "save"]

TENSORS = "intervention.safetensors"
METADATA = "intervention.json"
# 2: the JSON holds "tensors_sha256". 1 (no checksum) is still read, with an AscaleWarning that
# its tensors cannot be verified; a checksum in any version's JSON is always checked, so editing
# format_version to 1 does not skip it.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
#: the tensors file's header entry holding the JSON's fields as saved (under the checksum)
_HEADER = "ascale_config"
_REQUIRED = ("method", "sites", "hooks", "positions", "n_pos", "model")


def save(
    intervention: Intervention, path: str | Path, *, metadata: dict[str, Any] | None = None
) -> Path:
    """Write `intervention` into the folder `path` (``~`` expanded) as a unit; returns the folder.

    Parameters with NaN or infinite values, and metadata JSON cannot hold, raise `AscaleError`
    before anything is written. A folder holding an earlier save is replaced whole;
    one that also holds other files keeps them, with an `AscaleWarning` naming them.

    Example:
        >>> save(scalars, "out/ioi-scalars", metadata={"task": "ioi"})
        PosixPath('out/ioi-scalars')
    """
    _checks.instance("intervention", intervention, Intervention, "an ascale intervention")
    folder = _checks.path("path", path)
    tensors = {name: p.detach().cpu().contiguous() for name, p in intervention.params.items()}
    for name, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            raise AscaleError(
                f"parameter {name!r} holds NaN or infinite values; nothing saved to {str(folder)!r}"
            )
    described = {**intervention.config(), "metadata": metadata or {}}
    what = f"the metadata of {str(folder)!r}"
    # the JSON's fields also go into the tensors file's header, which its checksum covers:
    # `read_metadata` names a field edited in the JSON
    blob = save_bytes(tensors, metadata={_HEADER: dumps_json(described, what=what)})
    config = {
        "format_version": FORMAT_VERSION,
        **described,
        "tensors_sha256": hashlib.sha256(blob).hexdigest(),
    }
    text = dumps_json(config, what=what)
    return write_folder(folder, {TENSORS: blob, METADATA: text})  # tensors first, JSON last


def load(path: str | Path, model: HookedModel) -> Intervention:
    """Rebuild a saved intervention on `model`, checking everything it reads.

    Raises:
        SavedFileError: the folder holds no intervention; the JSON is damaged, of an unknown
            format version or method, or its hooks disagree with its sites; the tensors file is
            damaged, does not match its checksum, or holds tensors of the wrong names, shapes
            or non-finite values. The message names the file.
        IncompatibleModelError: `model` has another shape (layers, heads, widths, vocabulary)
            than the model the intervention was trained on.

    Warns:
        AscaleWarning: `model` has another name than the model the save was trained on (same
            shape: a copy in another folder, or another model); a format-1 save (no checksum).

    Example:
        >>> folder = save(scalars, "out/ioi-scalars")
        >>> loaded = load(folder, model)
        >>> torch.equal(loaded.params["mlp_out"], scalars.params["mlp_out"])
        True
    """
    folder = _checks.path("path", path)
    config = read_metadata(folder)
    try:
        _tl.check_same_shape(config["model"], _tl.dims(model), what=f"{str(folder)!r}")
        intervention = METHODS[config["method"]].from_config(model, config)
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, AscaleError):
            raise
        raise SavedFileError(
            f"{str(folder / METADATA)!r} does not describe a {config['method']!r} intervention "
            f"({type(err).__name__}: {err}); the file was edited or damaged"
        ) from err
    saved_name, name = config["model"].get("model_name"), getattr(model.cfg, "model_name", None)
    if saved_name is not None and name is not None and str(saved_name) != str(name):
        warnings.warn(
            f"{str(folder)!r} was trained on model {saved_name!r} and is loaded into {name!r} "
            "(same shape): its parameters mean what they mean only on the model they were "
            "trained on; load that model (ascale.load_model) unless this is the same one",
            AscaleWarning,
            stacklevel=2,
        )
    tensors = _read_tensors(folder / TENSORS)
    _check_tensors(tensors, intervention, folder / TENSORS)
    intervention.load_state_dict({f"params.{k}": v for k, v in tensors.items()})
    return intervention


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON side of a saved intervention, checked (and its tensors file's checksum).

    Needs no model: the command line calls it before loading one.

    Raises:
        SavedFileError: as for `load`, for everything that can be checked without the model.
    """
    folder = _checks.path("path", path)
    meta, tensors = folder / METADATA, folder / TENSORS
    if not folder.is_dir():
        raise SavedFileError(f"{str(folder)!r} is not a folder holding a saved intervention")
    if not meta.is_file() or not tensors.is_file():
        missing = [p.name for p in (meta, tensors) if not p.is_file()]
        raise SavedFileError(
            f"{str(folder)!r} holds no saved intervention (missing {', '.join(missing)}; "
            f"`ascale fit` and `ascale.save` write {METADATA} and {TENSORS})"
        )
    try:
        config = json.loads(meta.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SavedFileError(
            f"{str(meta)!r} is not valid JSON ({err}); the file is damaged"
        ) from err
    if not isinstance(config, dict):
        raise SavedFileError(f"{str(meta)!r} holds {type(config).__name__}, not a JSON object")
    _check_config(config, meta)
    expected = config.get("tensors_sha256")
    if config["format_version"] == 1 and expected is None:
        warnings.warn(
            f"{str(meta)!r} is format 1, which records no checksum: its tensors cannot be "
            "verified; ascale.save it again to add one",
            AscaleWarning,
            stacklevel=2,
        )
    elif config["format_version"] >= 2 or expected is not None:  # a checksum is always checked
        blob = tensors.read_bytes()
        actual = hashlib.sha256(blob).hexdigest()
        if actual != expected:
            raise SavedFileError(
                f"{str(tensors)!r} does not match the checksum in {METADATA} (sha256 "
                f"{actual[:12]}..., recorded {str(expected)[:12]}...): it was changed or "
                "damaged after saving, or the folder mixes two saves"
            )
        _check_against_header(config, _header(blob), meta)
    return config


def _header(blob: bytes) -> dict[str, Any] | None:
    """The fields `save` wrote into the tensors file's header; ``None`` for a save made before
    it did so (or a header that cannot be read: the tensors check names that)."""
    try:
        size = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8 : 8 + size]).get("__metadata__") or {}
        described = json.loads(header[_HEADER]) if _HEADER in header else None
    except (ValueError, AttributeError, TypeError):
        return None
    return described if isinstance(described, dict) else None


def _check_against_header(
    config: dict[str, Any], header: dict[str, Any] | None, meta: Path
) -> None:
    """Refuse a field of the JSON edited after saving (the header, under the checksum, keeps
    what `save` wrote); an edited ``metadata`` entry (user notes) loads with a warning."""
    if header is None:  # saved before the header held the fields: nothing to compare
        return
    skip = {"format_version", "tensors_sha256", "metadata"}
    for key in sorted((set(config) | set(header)) - skip):
        if config.get(key) != header.get(key):
            raise SavedFileError(
                f"{str(meta)!r}: {key!r} was edited after saving (it reads "
                f"{config.get(key)!r}; the save recorded {header.get(key)!r} in "
                f"{TENSORS}, under its checksum): restore it, or save the intervention again"
            )
    mine, saved = config.get("metadata"), header.get("metadata") or {}
    if mine != saved:
        mine = mine if isinstance(mine, dict) else {}
        keys = sorted(k for k in set(mine) | set(saved) if mine.get(k) != saved.get(k))
        recorded = {k: saved.get(k) for k in keys}
        warnings.warn(
            f"{str(meta)!r}: 'metadata' edited after saving ({keys or 'its type'}; the save "
            f"recorded {recorded}); loaded as it reads now",
            AscaleWarning,
            stacklevel=4,
        )


def _check_config(config: dict[str, Any], meta: Path) -> None:
    version = config.get("format_version")
    if version not in READABLE_VERSIONS:
        raise SavedFileError(
            f"{str(meta)!r} has format_version {version!r}; this ascale reads "
            f"{list(READABLE_VERSIONS)} (a newer ascale wrote it? upgrade ascale)"
        )
    missing = [k for k in _REQUIRED if k not in config]
    if version >= 2 and "tensors_sha256" not in config:
        missing.append("tensors_sha256")
    if missing:
        raise SavedFileError(f"{str(meta)!r} misses the key(s) {missing}")
    if config["method"] not in METHODS:
        raise SavedFileError(
            f"{str(meta)!r} names the unknown method {config['method']!r}; known: {sorted(METHODS)}"
        )
    sites, hooks = config["sites"], config["hooks"]
    try:
        from_sites = sorted(Site(s, ()).hook_name(int(k)) for s, ls in sites.items() for k in ls)
    except (AttributeError, KeyError, TypeError, ValueError):
        raise SavedFileError(
            f"{str(meta)!r}: 'sites' must map site names {sorted(SITE_HOOKS)} to layer lists, "
            f"got {sites!r}"
        ) from None
    if not isinstance(hooks, list) or sorted(map(str, hooks)) != from_sites:
        raise SavedFileError(
            f"{str(meta)!r}: 'hooks' {hooks!r} do not match 'sites' {sites!r} (expected "
            f"{from_sites}); the file was edited"
        )
    n_pos, positions = config["n_pos"], config["positions"]
    if not (n_pos is None or (isinstance(n_pos, int) and n_pos > 0)):
        raise SavedFileError(f"{str(meta)!r}: 'n_pos' must be a positive whole number or null")
    if positions not in ("all", "shared") and not (
        isinstance(positions, list) and all(isinstance(p, int) for p in positions)
    ):
        raise SavedFileError(
            f"{str(meta)!r}: 'positions' must be 'all', 'shared' or a list of whole numbers, "
            f"got {positions!r}"
        )


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_bytes(file.read_bytes())
    except Exception as err:  # safetensors raises its own error types, or OSError
        raise SavedFileError(
            f"{str(file)!r} is not a readable safetensors file ({type(err).__name__}: {err})"
        ) from err


def _check_tensors(tensors: dict[str, torch.Tensor], iv: Intervention, file: Path) -> None:
    want = {name: tuple(p.shape) for name, p in iv.params.items()}
    got = {name: tuple(t.shape) for name, t in tensors.items()}
    if set(got) != set(want):
        raise SavedFileError(
            f"{str(file)!r} holds tensors {sorted(got)}; its {METADATA} describes {sorted(want)}"
        )
    for name, shape in want.items():
        if got[name] != shape:
            raise SavedFileError(
                f"{str(file)!r}: tensor {name!r} has shape {list(got[name])}, but {METADATA} "
                f"(method, sites, positions, n_pos) describes {list(shape)}"
            )
        if not bool(torch.isfinite(tensors[name]).all()):
            raise SavedFileError(f"{str(file)!r}: tensor {name!r} holds NaN or infinite values")
