"""Saving and loading interventions: safetensors for tensors, JSON for everything else.

``save(iv, "out/iv")`` writes ``out/iv/intervention.safetensors`` and ``out/iv/intervention.json``
(method, sites, hook names, positions, model name and shape, and any extra metadata such as
hyperparameters). Nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from ascale import models
from ascale.errors import AscaleError
from ascale.interventions import METHODS, Intervention

__all__ = ["load", "save"]

TENSORS = "intervention.safetensors"
METADATA = "intervention.json"
FORMAT_VERSION = 1


def save(
    intervention: Intervention, path: str | Path, *, metadata: dict[str, Any] | None = None
) -> Path:
    """Write `intervention` into the folder `path` (created if needed); returns the folder.

    Example:
        >>> save(scalars, "out/ccc-scalars", metadata={"task": "ccc"})  # doctest: +SKIP
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach().cpu().contiguous() for name, p in intervention.params.items()}
    save_file(tensors, str(folder / TENSORS))
    config = {"format_version": FORMAT_VERSION, **intervention.config()}
    config["metadata"] = metadata or {}
    (folder / METADATA).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def load(path: str | Path, model: Any) -> Intervention:
    """Rebuild a saved intervention on `model`.

    Raises:
        IncompatibleModelError: `model` has another shape (layers, heads, widths, vocabulary)
            than the model the intervention was trained on.
        AscaleError: the folder holds no intervention, or an unknown method.

    Example:
        >>> scalars = load("out/ccc-scalars", model)  # doctest: +SKIP
    """
    folder = Path(path)
    if not (folder / METADATA).is_file() or not (folder / TENSORS).is_file():
        raise AscaleError(f"{str(folder)!r} holds no saved intervention ({METADATA}, {TENSORS})")
    config = json.loads((folder / METADATA).read_text(encoding="utf-8"))
    models.check_same_shape(config["model"], models.dims(model), what=f"{str(folder)!r}")
    if config["method"] not in METHODS:
        raise AscaleError(f"unknown method {config['method']!r}; known: {sorted(METHODS)}")
    cls = METHODS[config["method"]]
    intervention = cls.from_config(model, config)
    tensors = load_file(str(folder / TENSORS))
    intervention.load_state_dict({f"params.{k}": v for k, v in tensors.items()})
    return intervention


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON side of a saved intervention."""
    return json.loads((Path(path) / METADATA).read_text(encoding="utf-8"))
