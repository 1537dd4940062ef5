"""Trade-off sweeps: effectiveness against minimality and faithfulness over the L1 weight.

The paper's figures plot, for scalars and steering vectors, how effective an intervention is
against how many parameters it uses and how much it disturbs the rest of the distribution, on
train and test prompts, as the sparsity weight ``lambda_min`` (and the faithfulness weight
``lambda_faith``) vary. `sweep` fits one intervention per setting and returns one table.

Example:
    >>> table = sweep(model, train, test, methods=["scalars", "vectors"],
    ...               lambda_min=[1e-3, 1e-1], fit_options={"steps": 2}, progress=False)
    >>> fig = ascale.plot.plot_tradeoffs(table)
"""

import itertools
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from ascale import _checks, distributed
from ascale._types import HookedModel
from ascale.data import ContrastSet, check_data
from ascale.errors import AscaleError
from ascale.interventions import build, steering_methods
from ascale.training.fit import fit
from ascale.training.metrics import evaluate
from ascale.training.objective import Objective

__all__ = ["sweep"]


def sweep(
    model: HookedModel,
    train: ContrastSet,
    test: ContrastSet,
    *,
    methods: Sequence[str] = ("scalars", "vectors"),
    lambda_min: Sequence[float] = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
    lambda_faith: Sequence[float] = (1.0,),
    sites: str | Sequence[str] = "attn_out,mlp_out",
    layers: Sequence[int] | None = None,
    positions: str | Sequence[int] = "all",
    margin: float = 2.0,
    fit_options: dict[str, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Fit every method at every ``(lambda_min, lambda_faith)`` and measure train and test.

    Args:
        model: the model.
        train: the training split (one token length for position-tied methods).
        test: the held-out split, measured with the training split.
        methods: ``"scalars"``, ``"vectors"`` and/or ``"dynamic"``.
        lambda_min: the grid's L1 weights.
        lambda_faith: the grid's KL weights.
        sites: where the interventions act (as for `ActivationScalars`).
        layers: their layers (default: all).
        positions: their positions (as for `ActivationScalars`).
        margin: the effectiveness margin.
        fit_options: keyword arguments for `ascale.fit` (steps, lr, sparsity, ...).

    Under torchrun (`ascale.distributed`) the settings are dealt out to the processes, each fits
    its own in one process, and every process returns the one table, in grid order.

    Returns:
        One row per method, weights and split: ``method, lambda_min, lambda_faith, split``,
        then every `Metrics` field (flip rates, logit differences, ``faithfulness_kl``,
        ``n_params``, ``n_active``, ``l1``, ...), ``steps_run`` and ``fit_s``.

    Example:
        >>> table = sweep(model, train, test, lambda_min=[1e-3, 1e-1], fit_options={"steps": 2},
        ...               progress=False)
        >>> len(table.query("split == 'test'"))  # 2 methods x 2 lambda_min
        4
    """
    check_data(train, "train")
    check_data(test, "test")
    methods = _checks.names("methods", methods, allowed=steering_methods(), what="method")
    for name, values in (("lambda_min", lambda_min), ("lambda_faith", lambda_faith)):
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise AscaleError(f"{name} must be a non-empty list of numbers, got {values!r}")
    for lam_min, lam_faith in itertools.product(lambda_min, lambda_faith):  # before any fit
        Objective(margin=margin, lambda_faith=lam_faith, lambda_min=lam_min)
    grid = list(itertools.product(methods, lambda_min, lambda_faith))
    # under torchrun the settings are dealt out to the ranks, each fits its own alone, and
    # every rank gets the one table, in grid order (rank 0 writes it); alone: every setting
    rows: list[tuple[int, dict[str, Any]]] = []
    shown = progress and distributed.is_main()
    where = {"sites": sites, "layers": layers, "positions": positions}
    for cell in tqdm(distributed.my_share(len(grid)), desc="sweep", disable=not shown):
        method, lam_min, lam_faith = grid[cell]
        objective = Objective(margin=margin, lambda_faith=lam_faith, lambda_min=lam_min)
        setting = {"method": method, "lambda_min": lam_min, "lambda_faith": lam_faith}
        for row in _fit_one(model, train, test, setting, objective, where, fit_options, seed):
            rows.append((cell, row))
    return pd.DataFrame([row for _, row in sorted(distributed.gather(rows), key=lambda r: r[0])])


def _fit_one(
    model: HookedModel,
    train: ContrastSet,
    test: ContrastSet,
    setting: dict[str, Any],
    objective: Objective,
    where: dict[str, Any],
    fit_options: dict[str, Any] | None,
    seed: int,
) -> list[dict[str, Any]]:
    """One setting of the sweep fitted alone, measured on both splits: its two rows."""
    iv = build(setting["method"], model, **where)
    started = time.perf_counter()
    with distributed.alone():
        result = fit(
            model, iv, train, objective=objective, seed=seed, progress=False,
            **(fit_options or {}),
        )  # fmt: skip
    fit_s = time.perf_counter() - started
    return [
        {
            **setting,
            "split": split,
            **evaluate(model, iv, data).to_dict(),
            "steps_run": result.steps_run,
            "fit_s": round(fit_s, 2),
        }
        for split, data in (("train", train), ("test", test))
    ]
