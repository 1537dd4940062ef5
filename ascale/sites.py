"""Sites: which hook points an intervention acts on, validated against the model.

A site is a kind of activation vector at every chosen layer:

| site | hook | one activation vector per |
|---|---|---|
| ``attn_out`` | ``blocks.{layer}.hook_attn_out`` | layer, position |
| ``mlp_out`` | ``blocks.{layer}.hook_mlp_out`` | layer, position |
| ``heads`` | ``blocks.{layer}.attn.hook_z`` | layer, head, position |
| ``resid`` | ``blocks.{layer}.hook_resid_post`` | layer, position |

Scaling ``z`` of one head scales exactly that head's contribution to the attention output, so
per-head scaling needs no ``use_attn_result``.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ascale import _tl
from ascale._types import HookedModel
from ascale.errors import UnknownSiteError, closest

__all__ = ["SITE_HOOKS", "Site", "parse_site", "resolve_sites"]

SITE_HOOKS: dict[str, str] = {
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "heads": "blocks.{layer}.attn.hook_z",
    "resid": "blocks.{layer}.hook_resid_post",
}
_HOOK_TO_SITE = {
    re.compile("^" + t.replace(".", r"\.").replace("{layer}", r"(\d+)") + "$"): s
    for s, t in SITE_HOOKS.items()
}


@dataclass(frozen=True)
class Site:
    """One kind of activation (``attn_out``, ``mlp_out``, ``heads``, ``resid``) at some layers."""

    name: str
    layers: tuple[int, ...]

    @property
    def per_head(self) -> bool:
        """Whether the site has one activation vector per head (``hook_z``)."""
        return self.name == "heads"

    def hook_name(self, layer: int) -> str:
        """The TransformerLens hook name at `layer`, e.g. ``blocks.3.hook_attn_out``."""
        return SITE_HOOKS[self.name].format(layer=layer)

    def __str__(self) -> str:
        return f"{self.name}[{_ranges(self.layers)}]"


def resolve_sites(
    model: HookedModel, sites: str | Iterable[str], layers: Sequence[int] | None = None
) -> tuple[Site, ...]:
    """Turn site names (or hook names) into validated `Site`s.

    Args:
        model: the model whose hook points the sites must exist in.
        sites: site names, as a list or comma-separated (``"attn_out,mlp_out"``); a full hook
            name such as ``"blocks.3.hook_mlp_out"`` selects that one layer of that site.
        layers: layers for the named sites (negative counts from the end); ``None`` for all.

    Raises:
        UnknownSiteError: an unknown site or hook, or a layer the model does not have; the
            message names the closest valid names.

    Example:
        >>> resolve_sites(model, "attn_out,mlp_out", layers=[0, -1])  # 2 layers; SmolLM2: (0, 29)
        (Site(name='attn_out', layers=(0, 1)), Site(name='mlp_out', layers=(0, 1)))
    """
    names = _site_names(sites)
    n_layers = _tl.dims(model)["n_layers"]
    all_layers = tuple(range(n_layers)) if layers is None else _layers(layers, n_layers)
    chosen: dict[str, list[int]] = {}
    for name in names:
        site_name, site_layers = _parse(name, all_layers, n_layers, model)
        bucket = chosen.setdefault(site_name, [])
        bucket.extend(layer for layer in site_layers if layer not in bucket)
    resolved = tuple(Site(s, tuple(sorted(ls))) for s, ls in chosen.items())
    valid = set(_tl.hook_names(model))
    for site in resolved:
        for layer in site.layers:
            if site.hook_name(layer) not in valid:
                raise UnknownSiteError(
                    f"the model has no hook {site.hook_name(layer)!r}; closest: "
                    f"{closest(site.hook_name(layer), valid)}"
                )
    return resolved


def _site_names(sites: object) -> list[str]:
    """`sites` as a list of names: a comma-separated string or a list of strings."""
    if isinstance(sites, str):
        names = [s.strip() for s in sites.split(",")]
    elif isinstance(sites, Iterable) and not isinstance(sites, bytes | dict):
        names = list(sites)
    else:
        names = []
    if not names or not all(isinstance(n, str) and n for n in names):
        raise UnknownSiteError(
            f"sites must be site or hook names, as a list or comma-separated, got {sites!r}; "
            f"valid sites: {sorted(SITE_HOOKS)}"
        )
    return [n.strip() for n in names]


def parse_site(name: str) -> tuple[str, int | None]:
    """A site name, or a hook name of a site at one layer, without a model: the site and the
    layer (``None`` for a site name: every chosen layer).

    Raises:
        UnknownSiteError: `name` is neither; the message names the closest site.

    Example:
        >>> parse_site("mlp_out"), parse_site("blocks.3.attn.hook_z")
        (('mlp_out', None), ('heads', 3))
    """
    if name in SITE_HOOKS:
        return name, None
    for pattern, site in _HOOK_TO_SITE.items():
        match = pattern.match(name)
        if match:
            return site, int(match.group(1))
    raise UnknownSiteError(
        f"unknown site or hook {name!r}; valid sites are {sorted(SITE_HOOKS)} or hook names "
        f"like 'blocks.0.hook_mlp_out'; closest: {closest(name, SITE_HOOKS)}"
    )


def _parse(
    name: str, layers: tuple[int, ...], n_layers: int, model: HookedModel
) -> tuple[str, tuple[int, ...]]:
    try:
        site, layer = parse_site(name)
    except UnknownSiteError:
        hooks = [h for h in _tl.hook_names(model) if any(p.match(h) for p in _HOOK_TO_SITE)]
        valid = list(SITE_HOOKS) + hooks
        raise UnknownSiteError(
            f"unknown site or hook {name!r}; valid sites are {sorted(SITE_HOOKS)} or hook "
            f"names like 'blocks.0.hook_mlp_out'; closest: {closest(name, valid)}"
        ) from None
    return site, layers if layer is None else _layers([layer], n_layers)


def _layers(layers: object, n_layers: int) -> tuple[int, ...]:  # checked here, not by type
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise UnknownSiteError(
            f"layers must be a list of whole numbers, got {layers!r}; give some of "
            f"0..{n_layers - 1} (e.g. [{layers!r}] for one layer), or None for all"
        )
    layers = list(layers)
    if len(layers) == 0:
        raise UnknownSiteError(f"layers is empty; give some of 0..{n_layers - 1}, or None for all")
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not hasattr(layer, "__index__"):  # 1.5 must not become 1
            raise UnknownSiteError(
                f"layer {layer!r} is not a whole number; give layers of 0..{n_layers - 1}"
            )
        if not -n_layers <= int(layer) < n_layers:
            raise UnknownSiteError(
                f"layer {layer} does not exist: the model has layers 0..{n_layers - 1}"
            )
        out.append(int(layer) % n_layers)
    return tuple(sorted(set(out)))


def _ranges(values: Sequence[int]) -> str:
    """``(0, 1, 2, 5)`` -> ``"0-2,5"``, for compact reprs."""
    parts: list[str] = []
    for v in values:
        if parts and "-" not in parts[-1].split(",")[-1] and int(parts[-1]) == v - 1:
            parts[-1] = f"{parts[-1]}-{v}"
        elif parts and "-" in parts[-1] and int(parts[-1].split("-")[1]) == v - 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{v}"
        else:
            parts.append(str(v))
    return ",".join(parts)
