"""What several commands share: reading and splitting data, the command line's fit options as
`ascale.fit`'s keyword arguments (`fit_options`, the one home of that mapping), fitting one
intervention and saving it, printing a metrics table. Heavy imports happen inside the functions,
when a command runs."""

import argparse
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ascale._types import HookedModel

if TYPE_CHECKING:
    from ascale.data import ContrastSet


def read_rows(args: argparse.Namespace) -> list[dict[str, str]] | None:
    """The rows of ``--data``, checked before any model is loaded (``None`` for ``--task``)."""
    from ascale._rows import read_jsonl

    return None if args.data is None else read_jsonl(args.data, flag="--data")


def run_folder(args: argparse.Namespace) -> contextlib.AbstractContextManager[Any]:
    """``--out`` as a `RunFolder` on the process that writes (rank 0 under torchrun); a no-op
    context on the other ranks, which fit their share and write nothing."""
    from ascale import distributed
    from ascale.cli._runfolder import RunFolder

    if not distributed.is_main():
        return contextlib.nullcontext()
    return RunFolder(args.out, overwrite=args.overwrite, inputs={"--data": args.data})


def load_data(
    args: argparse.Namespace, model: HookedModel, rows: list[dict[str, str]] | None
) -> "ContrastSet":
    """The contrast set of ``--data`` rows or of ``--task``, tokenised for `model`."""
    import ascale

    if rows is not None:
        return ascale.ContrastSet.from_rows(rows, model)
    data: ContrastSet = getattr(ascale.tasks, args.task)(model, n=args.n, seed=args.seed)
    return data


def counterfactuals(
    args: argparse.Namespace, model: HookedModel, rows: Any, data: "ContrastSet"
) -> "ContrastSet | None":
    """The counterfactual prompts aligned with `data`: the task's corruption, or the rows'
    ``corrupted`` prompts (``None`` when the rows carry none)."""
    import ascale
    from ascale.data import corrupted_from_rows

    if rows is not None:
        return corrupted_from_rows(rows, model, clean=data)
    corrupt = {"ccc": ascale.tasks.ccc_corrupt, "ioi": ascale.tasks.ioi_corrupt}[args.task]
    return corrupt(data, model, seed=args.seed)


def load_split(
    args: argparse.Namespace, model: HookedModel, rows: list[dict[str, str]] | None, tied: bool
) -> tuple["ContrastSet", "ContrastSet"]:
    """The data, tokenised and split; checked for one prompt length if `tied` (a
    position-tied intervention) needs one."""
    data = load_data(args, model, rows)
    if tied:
        _ = data.n_pos  # PromptLengthError now, not after training on the first split
    return data.split(test_size=args.test_size, seed=args.seed)


#: the options that become `ascale.fit`'s settings (``--steps`` -> ``steps``, ...), and the
#: objective's weights (``--margin`` -> ``Objective.margin``, ...)
FIT_SETTINGS = ("steps", "lr", "batch_size", "sparsity", "settle")
OBJECTIVE_WEIGHTS = ("margin", "lambda_faith", "lambda_min")
#: the fit settings `ascale.fit_circuit` takes from the command line (it has its own objective:
#: no weights, no sparsity, no early stop); under ``compare`` not ``lr`` (the steering fits' rate)
CIRCUIT_SETTINGS = ("steps", "lr", "batch_size")


def fit_options(
    *, no_early_stop: bool = False, objective: Any = None, **given: Any
) -> dict[str, Any]:
    """`ascale.fit`'s keyword arguments from option values (`FIT_SETTINGS` and
    `OBJECTIVE_WEIGHTS` by name; ``None``: not given, the fit's own default). The weights given
    replace those of `objective` (default ``Objective()``); with none given and no `objective`,
    the fit keeps its own.

    Example:
        >>> fit_options(steps=20, lr=None, margin=2.0)
        {'steps': 20, 'objective': Objective(margin=2.0, lambda_faith=1.0, lambda_min=0.01)}
    """
    import dataclasses

    from ascale.training.objective import Objective

    unknown = sorted(set(given) - {*FIT_SETTINGS, *OBJECTIVE_WEIGHTS})
    if unknown:
        raise TypeError(f"fit_options got unknown option(s) {unknown}")
    options: dict[str, Any] = {k: given[k] for k in FIT_SETTINGS if given.get(k) is not None}
    if no_early_stop:
        options["stop"] = "none"
    weights = {k: given[k] for k in OBJECTIVE_WEIGHTS if given.get(k) is not None}
    if weights or objective is not None:
        options["objective"] = dataclasses.replace(objective or Objective(), **weights)
    return options


def fit_options_of(args: argparse.Namespace, **over: Any) -> dict[str, Any]:
    """`fit_options` of a command's parsed options (those it has), `over` replacing them."""
    names = (*FIT_SETTINGS, *OBJECTIVE_WEIGHTS, "no_early_stop")
    given = {k: getattr(args, k) for k in names if hasattr(args, k)}
    return fit_options(**{**given, **over})


def grid_of(args: argparse.Namespace) -> dict[str, Any]:
    """The grid options of a command (``--sites``, ``--layers``, ``--positions``) as keyword
    arguments of `ascale.compare`, `ascale.sweep` and the interventions."""
    return {"sites": args.sites, "layers": args.layers, "positions": args.positions}


def make_intervention(
    model: HookedModel, method: str, *, sites: str, layers: Any, positions: Any, **options: Any
) -> Any:
    """A fresh intervention of `method` on the command's grid."""
    from ascale.interventions import build

    return build(method, model, sites=sites, layers=layers, positions=positions, **options)


def fit_one(
    model: HookedModel,
    intervention: Any,
    train: Any,
    test: Any,
    options: dict[str, Any],
    out: Path | None,
    *,
    seed: int,
    sites: str,
    splits: tuple[str, ...] = ("train", "test"),
) -> dict[str, Any]:
    """Fit with `options` (`fit_options`), evaluate on `splits`, and save everything of one
    intervention into `out` (``None``: fit only, as the ranks other than 0 of a data-parallel
    fit do)."""
    import ascale
    from ascale._outputs import write_json

    result = ascale.fit(model, intervention, train, seed=seed, **options)
    if out is None:
        return {}
    where = {k: result.settings[k] for k in ("positions", "positions_rule")}
    print(f"{intervention.method}: positions {where['positions']} ({where['positions_rule']})")
    data = {"train": train, "test": test}
    metrics: dict[str, Any] = {
        split: ascale.evaluate(model, intervention, data[split]).to_dict() for split in splits
    }
    metrics["settings"] = where  # where it steered, and why (`ascale.training.positions`)
    hyper = {**result.settings, **vars(result.objective), "sites": sites}
    fitted = {
        "steps_run": result.steps_run,
        "stopped_early": result.stopped_early,
        "wall_time_s": round(result.wall_time_s, 2),
    }
    ascale.save(intervention, out, metadata={"hyperparameters": hyper, "fit": fitted})
    write_json(out / "metrics.json", metrics)
    write_json(out / "history.json", result.history)
    train.to_jsonl(out / "train.jsonl")
    test.to_jsonl(out / "test.jsonl")
    return {**metrics, "fit": fitted}


def load_model(args: argparse.Namespace, name: str | None) -> Any:
    """`ascale.load_model` on ``--device`` (each process's own GPU under torchrun),
    ``--device-map`` and ``--dtype``."""
    import ascale
    from ascale import distributed

    device_map = getattr(args, "device_map", None)
    place: dict[str, Any] = {"dtype": getattr(args, "dtype", "float32")}
    if device_map is not None:
        if distributed.launched():
            from ascale.errors import AscaleError

            raise AscaleError(
                "--device-map splits one model over the GPUs; under torchrun each process "
                "holds a whole model: use --device cuda (each process its own GPU)"
            )
        place["device_map"] = device_map
    else:
        place["device"] = distributed.local_device(getattr(args, "device", "cpu"))
    return ascale.load_model(name, **place)


def loadable(model_name: str) -> str | None:
    """The name to pass to `load_model` for a saved model name (``None``: the default)."""
    from ascale.loading import DEFAULT_MODEL

    return None if model_name == DEFAULT_MODEL else model_name


def print_table(columns: dict[str, dict[str, Any]], title: str) -> None:
    """Metrics (``Metrics.to_dict()``), one column per intervention."""
    from ascale.training.metrics import format_metrics

    print(f"\n{title}\n{format_metrics(columns)}\n")
