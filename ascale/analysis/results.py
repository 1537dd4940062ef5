"""`AttributionResult`: one score per component, ranked; what every attribution method returns.

Learned scalars and steering vectors (`ascale.analysis.attribution.rank_components`), activation and
attribution patching (`ascale.analysis.patching`) all give one number per *component*: a site, a layer, a
head (for the ``heads`` site) and a token position. `AttributionResult` holds those numbers as
one table, ranked by magnitude, so rankings can be filtered, compared (`ascale.analysis.agreement`),
scored as circuits (`ascale.analysis.circuits`) and drawn (`ascale.plot`). `ascale.analysis.attribution`
re-exports every name here, where they were first.
"""

import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ascale import _tl
from ascale._types import HookedModel
from ascale.data import ContrastSet
from ascale.errors import AscaleError, UnknownSiteError, closest
from ascale.grid import component_name
from ascale.sites import SITE_HOOKS

__all__ = [
    "EFFECTS",
    "AttributionResult",
    "check_scores",
    "effect_classes",
    "rerank",
    "token_labels",
]

EFFECTS: tuple[str, ...] = ("identity", "amplify", "suppress", "ablate", "reverse")
COLUMNS: tuple[str, ...] = (
    "rank",
    "component",
    "site",
    "layer",
    "head",
    "pos",
    "token",
    "value",
    "magnitude",
    "effect",
)


@dataclass(frozen=True, eq=False)
class AttributionResult:
    """One score per component (site, layer, [head], position), ranked by magnitude.

    Attributes:
        method: what produced the scores (``"scalars"``, ``"vectors"``,
            ``"activation_patching"``, ``"attribution_patching"``).
        value_name: what ``value`` is, for axis titles (``"alpha"``, ``"‖v‖"``, ...).
        components: one row per component, best first; see `to_frame`.
        signed: whether values carry a sign (norms do not).
        identity: the value at which a component does nothing (0 for ``alpha``).
        info: how the scores were made (direction, corruption, baselines, ...).
        support_sign: ``value * support_sign`` is the component's signed support for the
            correct answer (positive: it helps the model answer correctly), the score circuit
            scoring orders by (``ascale.analysis.circuits``). Patching effects are already that (``+1``);
            a learned scalar that helps flip the model to the wrong answer at ``beta = +1`` by
            suppressing a component (``alpha < 0``) says the component supports the correct
            answer, so scalars use ``-alpha`` (``-1``). Unsigned values (norms) are their own
            support.

    Example:
        >>> ranking = ascale.rank_components(scalars)
        >>> ranking.top(3)["rank"].tolist()
        [1, 2, 3]
    """

    method: str
    value_name: str
    components: pd.DataFrame = field(repr=False)
    signed: bool = True
    identity: float = 0.0
    info: dict[str, Any] = field(default_factory=dict, repr=False)
    support_sign: int = 1

    def support(self) -> pd.Series:
        """Each component's signed support for the correct answer, indexed by component name."""
        frame = self.components.set_index("component")
        if "support" in frame:
            return frame["support"].astype(float)
        values = frame["value"] if self.signed else frame["magnitude"]
        return (values * (self.support_sign if self.signed else 1)).astype(float)

    @classmethod
    def from_rows(
        cls, method: str, value_name: str, rows: pd.DataFrame, **kwargs: Any
    ) -> "AttributionResult":
        """Rank `rows` (columns site, layer, head, pos, token, value[, magnitude, effect])."""
        frame = rows.copy()
        check_scores(method, frame)
        if "magnitude" not in frame:
            frame["magnitude"] = frame["value"].abs()
        if "effect" not in frame:
            frame["effect"] = pd.Categorical([None] * len(frame), categories=EFFECTS)
        frame["head"] = frame["head"].astype("Int64")
        frame["pos"] = frame["pos"].astype("Int64")
        frame["component"] = [
            component_name(s, la, h, p)
            for s, la, h, p in zip(
                frame["site"], frame["layer"], frame["head"], frame["pos"], strict=True
            )
        ]
        frame = frame.sort_values(
            ["magnitude", "site", "layer", "head", "pos"],
            ascending=[False, True, True, True, True],
            kind="stable",
        )
        frame["rank"] = np.arange(1, len(frame) + 1)
        columns = [*COLUMNS, *(["support"] if "support" in frame else [])]
        return cls(method, value_name, frame[columns].reset_index(drop=True), **kwargs)

    def to_frame(self) -> pd.DataFrame:
        """The components as a DataFrame, best first.

        Columns: ``rank`` (1 is the largest magnitude), ``component`` (e.g. ``"heads L9H6 @14"``),
        ``site``, ``layer``, ``head`` and ``pos`` (nullable ints: no head off the ``heads`` site,
        no position for ``positions="shared"``), ``token`` (at that position in the first prompt),
        ``value``, ``magnitude`` (``|value|``, or the vector norm) and ``effect`` (scalars only).
        """
        return self.components.copy()

    def top(self, k: int = 10) -> pd.DataFrame:
        """The `k` components of largest magnitude."""
        return self.components.head(k).copy()

    def select(self, sites: str | Iterable[str]) -> "AttributionResult":
        """Only the components of some sites, ranked among themselves.

        Example:
            >>> set(ranking.select("mlp_out").top(5)["site"])
            {'mlp_out'}
        """
        wanted = [sites] if isinstance(sites, str) else list(sites)
        unknown = [s for s in wanted if s not in self.sites]
        if unknown:
            raise UnknownSiteError(
                f"{unknown[0]!r} is not in this ranking; sites here: {list(self.sites)}; "
                f"closest: {closest(unknown[0], self.sites)}"
            )
        return rerank(self, self.components["site"].isin(wanted))

    @property
    def sites(self) -> tuple[str, ...]:
        """The sites present, in the order of `ascale.sites.SITE_HOOKS`."""
        present = set(self.components["site"])
        return tuple(s for s in SITE_HOOKS if s in present) + tuple(
            sorted(present - set(SITE_HOOKS))
        )

    @property
    def tokens(self) -> dict[int, str]:
        """Position -> token string (of the first prompt)."""
        rows = self.components.dropna(subset=["pos"]).drop_duplicates("pos")
        return {int(p): str(t) for p, t in zip(rows["pos"], rows["token"], strict=True)}

    def __len__(self) -> int:
        return len(self.components)

    def _repr_html_(self) -> str:
        """Jupyter: what was ranked, then the top 10 components."""
        shown = [
            c for c in ("rank", "component", "token", "value", "effect") if c in self.components
        ]
        top = self.top(10)[shown]
        if top["effect"].isna().all():
            top = top.drop(columns="effect")
        head = (
            f"<p><b>AttributionResult</b> {html.escape(self.method)}: {len(self)} components "
            f"on {html.escape(', '.join(self.sites))}, ranked by |{html.escape(self.value_name)}|"
            "; top 10:</p>"
        )
        return head + str(top.to_html(index=False, float_format="{:.4g}".format))

    def __repr__(self) -> str:
        top = ", ".join(
            f"{c} {v:+.3g}"
            for c, v in zip(
                self.components["component"][:3], self.components["value"][:3], strict=True
            )
        )
        return (
            f"AttributionResult(method={self.method!r}, value={self.value_name!r}, "
            f"components={len(self)}, sites={list(self.sites)}, top=[{top}])"
        )


def check_scores(method: str, frame: pd.DataFrame) -> None:
    """Refuse a ranking whose scores (``value``, ``magnitude``, ``support``) are NaN or
    infinite, naming the method and the components: a NaN has no rank, and sorting would put it
    anywhere (`ascale.save` refuses the intervention that gives them, too)."""
    columns = [c for c in ("value", "magnitude", "support") if c in frame]
    scores = frame[columns].astype(float).to_numpy()
    bad = ~np.isfinite(scores).all(axis=1)
    if not bad.any():
        return
    rows = frame[bad]
    names = [
        component_name(r.site, r.layer, _int(r.head), _int(r.pos))
        for r in rows.head(3).itertuples()
    ]
    raise AscaleError(
        f"ranking {method!r} has NaN or infinite scores at {int(bad.sum())} of {len(frame)} "
        f"components ({', '.join(names)}{', ...' if bad.sum() > 3 else ''}): nothing ranks a "
        "NaN; the scores came from non-finite parameters or an overflow (refit with a lower "
        "learning rate, or check the model and prompts)"
    )


def _int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def rerank(ranking: AttributionResult, keep: pd.Series) -> AttributionResult:
    """Only the components where `keep` is set, ranked among themselves, with `ranking`'s
    method, value name, sign, identity, info and support sign."""
    kept = ranking.components[keep].drop(columns=["rank", "component"])
    return AttributionResult.from_rows(
        ranking.method,
        ranking.value_name,
        kept,
        signed=ranking.signed,
        identity=ranking.identity,
        info=ranking.info,
        support_sign=ranking.support_sign,
    )


def effect_classes(
    alpha: pd.Series, threshold: float = 1e-2, ablate_tol: float = 0.1
) -> pd.Categorical:
    """The effect class of each scalar (the table in `ascale.analysis.attribution`'s docstring)."""
    conditions = [
        alpha.abs() < threshold,
        (alpha + 1).abs() <= ablate_tol,
        alpha > 0,
        alpha > -1,
    ]
    labels = np.select(conditions, ["identity", "ablate", "amplify", "suppress"], "reverse")
    return pd.Categorical(labels, categories=EFFECTS)


def token_labels(model: HookedModel, data: ContrastSet) -> tuple[str, ...]:
    """The first prompt's token at each position (prompts must share one length).

    A label speaks for every prompt only when they share a layout, not just a length (see
    ``docs/scaling-maps.md``: CCC prompts of one length can put the country at two positions).
    """
    n_pos = data.n_pos
    return tuple(_tl.str_tokens(model, data.tokens[0, :n_pos]))
