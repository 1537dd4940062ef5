"""What several commands share: reading and splitting data, fitting one intervention and saving
it, printing a metrics table. Heavy imports happen inside the functions, when a command runs."""

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

    return None if args.data is None else read_jsonl(args.data)


def run_folder(args: argparse.Namespace) -> contextlib.AbstractContextManager[Any]:
    """``--out`` as a `RunFolder` on the process that writes (rank 0 under torchrun); a no-op
    context on the other ranks, which fit their share and write nothing."""
    from ascale import distributed
    from ascale._runfolder import RunFolder

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


def load_split(
    args: argparse.Namespace, model: HookedModel, rows: list[dict[str, str]] | None, tied: bool
) -> tuple["ContrastSet", "ContrastSet"]:
    """The data, tokenised and split; checked for one prompt length if `tied` (a
    position-tied intervention) needs one."""
    data = load_data(args, model, rows)
    if tied:
        _ = data.n_pos  # PromptLengthError now, not after training on the first split
    return data.split(test_size=args.test_size, seed=args.seed)


def make_intervention(model: HookedModel, method: str, args: argparse.Namespace) -> Any:
    from ascale.interventions import build

    detach = {"detach_input": bool(getattr(args, "detach_input", False))}
    return build(
        method,
        model,
        sites=args.sites,
        layers=args.layers,
        positions=args.positions,
        **(detach if method == "dynamic" else {}),
    )


def fit_one(
    model: HookedModel,
    intervention: Any,
    train: Any,
    test: Any,
    args: argparse.Namespace,
    out: Path | None,
    splits: tuple[str, ...] = ("train", "test"),
) -> dict[str, Any]:
    """Fit, evaluate on `splits`, and save everything of one intervention into `out`
    (``None``: fit only, as the ranks other than 0 of a data-parallel fit do)."""
    import ascale
    from ascale._outputs import write_json

    objective = ascale.Objective(
        margin=args.margin, lambda_faith=args.lambda_faith, lambda_min=args.lambda_min
    )
    result = ascale.fit(
        model,
        intervention,
        train,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        objective=objective,
        seed=args.seed,
        sparsity=getattr(args, "sparsity", None),
        stop="none" if args.no_early_stop else "train",
        settle=args.settle,
    )
    if out is None:
        return {}
    where = {k: result.settings[k] for k in ("positions", "positions_rule")}
    print(f"{intervention.method}: positions {where['positions']} ({where['positions_rule']})")
    data = {"train": train, "test": test}
    metrics: dict[str, Any] = {
        split: ascale.evaluate(model, intervention, data[split]).to_dict() for split in splits
    }
    metrics["settings"] = where  # where it steered, and why (`ascale.training.positions`)
    hyper = {**result.settings, **vars(objective), "sites": args.sites}
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
