"""Measuring an intervention: `evaluate` -> `Metrics` (flip, clean and moved rates, logit
differences, faithfulness KL, minimality), and the one text layout of metrics (`metrics_table`)."""

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from ascale import _checks, _tl
from ascale._types import HookedModel
from ascale.data import ContrastSet, check_data
from ascale.errors import AscaleError
from ascale.interventions import Intervention
from ascale.training import _passes
from ascale.training.objective import answer_logit_diff, masked_kl, masked_log_probs

__all__ = ["Metrics", "evaluate", "format_metrics", "metrics_table"]


@dataclass(frozen=True)
class Metrics:
    """Effectiveness, faithfulness and minimality of an intervention on one contrast set.

    ``flip_rate_forward``: share of prompts whose answer is the wrong token at ``beta=+1``;
    ``flip_rate_backward``: share whose answer is the correct token at ``beta=-1``;
    ``clean_rate_*``: the same shares for the clean model (``beta=0``): what a do-nothing
    intervention scores; ``moved_rate_*``: among the prompts whose clean answer is *not* already
    the target, the share the intervention moves there (NaN when there are none). Answers are
    compared between the two answer tokens only.
    ``logit_diff_*``: mean ``logit(wrong) - logit(correct)`` at each sign (and clean);
    ``faithfulness_kl``: mean KL of the non-answer distribution over both signs;
    ``n_params``, ``l1``, ``n_active`` (magnitude above the threshold; vectors by norm).
    """

    flip_rate_forward: float
    flip_rate_backward: float
    logit_diff_forward: float
    logit_diff_backward: float
    faithfulness_kl: float
    n_params: int
    l1: float
    n_active: int
    logit_diff_clean: float
    n_prompts: int
    clean_rate_forward: float = float("nan")
    clean_rate_backward: float = float("nan")
    moved_rate_forward: float = float("nan")
    moved_rate_backward: float = float("nan")

    def to_dict(self) -> dict[str, float | int]:
        """Plain numbers, ready for JSON."""
        return asdict(self)

    def __str__(self) -> str:
        return format_metrics({"": self})

    def to_frame(self) -> Any:
        """Jupyter-sized: one row each for ``beta = +1``, ``-1`` and the clean model."""
        import pandas as pd

        return pd.DataFrame(
            {
                "share at target": [
                    self.flip_rate_forward,
                    self.flip_rate_backward,
                    self.clean_rate_forward,
                ],
                "moved": [self.moved_rate_forward, self.moved_rate_backward, float("nan")],
                "logit diff (wrong - correct)": [
                    self.logit_diff_forward,
                    self.logit_diff_backward,
                    self.logit_diff_clean,
                ],
            },
            index=pd.Index(["beta=+1 (to wrong)", "beta=-1 (to correct)", "clean"], name=""),
        )

    def _repr_html_(self) -> str:
        """Jupyter: `to_frame` and a line of faithfulness and minimality."""
        tail = (
            f"<p>KL {self.faithfulness_kl:.4f} | params {self.n_params} "
            f"(active {self.n_active}, L1 {self.l1:.3g}) | n={self.n_prompts}</p>"
        )
        return str(self.to_frame().to_html(float_format="{:.3f}".format, na_rep="")) + tail


#: The metrics table: `Metrics` field, label, number format. "clean model" is the model without
#: the intervention (what doing nothing scores); "moved (not clean)" counts only the prompts whose
#: clean answer was not already the target (NaN, shown "n/a", when there are none).
METRIC_ROWS: tuple[tuple[str, str, str], ...] = (
    ("flip_rate_forward", "flip rate, beta=+1", "{:.2f}"),
    ("clean_rate_forward", "  clean model", "{:.2f}"),
    ("moved_rate_forward", "  moved (not clean)", "{:.2f}"),
    ("flip_rate_backward", "flip rate, beta=-1", "{:.2f}"),
    ("clean_rate_backward", "  clean model", "{:.2f}"),
    ("moved_rate_backward", "  moved (not clean)", "{:.2f}"),
    ("logit_diff_forward", "logit diff, beta=+1", "{:+.2f}"),
    ("logit_diff_backward", "logit diff, beta=-1", "{:+.2f}"),
    ("logit_diff_clean", "logit diff, clean", "{:+.2f}"),
    ("faithfulness_kl", "faithfulness KL", "{:.4f}"),
    ("n_params", "parameters", "{:,}"),
    ("n_active", "active (>0.01)", "{:,}"),
    ("l1", "L1", "{:.3g}"),
)


def metrics_table(
    columns: Mapping[str, Metrics | Mapping[str, Any]],
) -> list[tuple[str, list[str]]]:
    """The metrics of each named intervention as text: ``(label, one cell per column)`` rows.

    The one formatting of metrics, which the CLI, `write_report` and ``str(metrics)`` lay out.
    Columns are `Metrics` or their ``to_dict()``; a field no column has is left out, and a
    missing or NaN value reads ``n/a``.

    Example:
        >>> metrics_table({"scalars": {"flip_rate_forward": 0.875, "n_params": 1200}})
        [('flip rate, beta=+1', ['0.88']), ('parameters', ['1,200'])]
    """
    values = {n: m.to_dict() if isinstance(m, Metrics) else dict(m) for n, m in columns.items()}
    return [
        (label, [_cell(v.get(key), fmt) for v in values.values()])
        for key, label, fmt in METRIC_ROWS
        if any(key in v for v in values.values())
    ]


def format_metrics(columns: Mapping[str, Metrics | Mapping[str, Any]]) -> str:
    """`metrics_table` as fixed-width text, a header of the column names first (if any)."""
    names = list(columns)
    width = max(14, *(len(n) + 2 for n in names))
    lines = [f"{'':22}" + "".join(f"{n:>{width}}" for n in names)] if any(names) else []
    for label, cells in metrics_table(columns):
        lines.append(f"{label:22}" + "".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return fmt.format(value)


def evaluate(
    model: HookedModel,
    intervention: Intervention,
    data: ContrastSet,
    *,
    batch_size: int = 64,
    threshold: float = 1e-2,
) -> Metrics:
    """Flip rates, logit differences and faithfulness at ``beta = +1`` and ``-1``, and minimality.

    Example:
        >>> print(evaluate(model, scalars, test))
        flip rate, beta=+1 ...
          clean model ...
        L1 ...
    """
    check_data(data)
    _checks.instance("intervention", intervention, Intervention, "an ascale intervention")
    batch_size = _checks.whole("batch_size", batch_size)
    threshold = _checks.real("threshold", threshold, low=0.0)
    if intervention.position_tied:
        if not intervention.is_bound:
            raise AscaleError("this intervention has not been fitted (it has no parameters yet)")
        data.n_pos  # noqa: B018 - raises PromptLengthError with the length counts
    if not all(bool(torch.isfinite(p).all()) for p in intervention.parameters()):
        raise AscaleError(f"{type(intervention).__name__} holds NaN or infinite parameters")
    deltas: dict[float, list[Tensor]] = {0.0: [], 1.0: [], -1.0: []}
    kls: list[Tensor] = []
    device = _tl.output_device(model)
    first = _tl.first_block(intervention.hook_names)  # the blocks below run once a batch
    position = intervention.first_position  # and the positions before it
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            batch = data.subset(range(start, min(start + batch_size, len(data))))
            ids = (batch.correct_ids.to(device), batch.wrong_ids.to(device))
            prefix = _passes.clean_prefix(model, batch, first, batch_size, position)
            clean_logits = _passes.answer_logits(model, None, batch, 0.0, prefix)
            clean = masked_log_probs(clean_logits, *ids)
            deltas[0.0].append(answer_logit_diff(clean_logits, *ids))
            for beta in (1.0, -1.0):
                logits = _passes.answer_logits(model, intervention, batch, beta, prefix)
                deltas[beta].append(answer_logit_diff(logits, *ids))
                kls.append(masked_kl(clean, logits, *ids))
    d = {beta: torch.cat(v) for beta, v in deltas.items()}
    wrong_at = {beta: v > 0 for beta, v in d.items()}  # the wrong answer wins
    right_at = {beta: v < 0 for beta, v in d.items()}
    return Metrics(
        flip_rate_forward=_share(wrong_at[1.0]),
        flip_rate_backward=_share(right_at[-1.0]),
        clean_rate_forward=_share(wrong_at[0.0]),
        clean_rate_backward=_share(right_at[0.0]),
        moved_rate_forward=_share(wrong_at[1.0][~wrong_at[0.0]]),
        moved_rate_backward=_share(right_at[-1.0][~right_at[0.0]]),
        logit_diff_forward=float(d[1.0].mean()),
        logit_diff_backward=float(d[-1.0].mean()),
        faithfulness_kl=float(torch.cat(kls).mean()),
        n_params=intervention.n_params,
        l1=float(intervention.l1().detach()),
        n_active=intervention.n_active(threshold),
        logit_diff_clean=float(d[0.0].mean()),
        n_prompts=len(data),
    )


def _share(flags: Tensor) -> float:
    return float(flags.float().mean()) if len(flags) else float("nan")
