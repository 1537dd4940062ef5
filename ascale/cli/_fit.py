"""``ascale fit``: learn one intervention on a task or a jsonl file, evaluate and save it
(circuit scalars: fitted on the training split, scored as circuits on the test split)."""

import argparse
from typing import Any

from ascale.cli._common import (
    CIRCUIT_SETTINGS,
    fit_one,
    fit_options_of,
    grid_of,
    load_data,
    load_model,
    load_split,
    make_intervention,
    print_table,
    read_rows,
    run_folder,
)


def fit_command(args: argparse.Namespace) -> int:
    from ascale import distributed
    from ascale.interventions import METHODS, CircuitScalars

    rows = read_rows(args)
    if issubclass(METHODS[args.method], CircuitScalars):  # a sufficiency fit, scored as circuits
        return _fit_circuit_command(args, rows)
    main = distributed.is_main()  # under torchrun, only rank 0 evaluates and writes
    with run_folder(args) as run:
        model = load_model(args, args.model)
        # bad sites: before work
        intervention = make_intervention(model, args.method, **grid_of(args), **_own(args))
        train, test = load_split(args, model, rows, tied=intervention.position_tied)
        out = run.stage if main else None
        options = fit_options_of(args)
        metrics = fit_one(
            model, intervention, train, test, options, out, seed=args.seed, sites=args.sites
        )
    if not main:
        return 0
    print_table({args.method: metrics["test"]}, title=f"{args.method}, test split")
    print(f"wrote {run.path}/intervention.safetensors, intervention.json, metrics.json")
    return 0


def _fit_circuit_command(args: argparse.Namespace, rows: list[dict[str, str]] | None) -> int:
    """Circuit scalars on the training split, scored as circuits on the test split."""
    import ascale
    from ascale import distributed
    from ascale._outputs import write_json
    from ascale._rows import CORRUPTED
    from ascale.data import corrupted_from_rows
    from ascale.errors import AscaleError

    if distributed.launched():
        raise AscaleError("--method circuit runs in one process; run it without torchrun")
    with run_folder(args) as run:
        model = load_model(args, args.model)
        data = load_data(args, model, rows)
        if rows is None:
            corrupted = getattr(ascale.tasks, f"{args.task}_corrupt")(data, model, seed=args.seed)
        else:
            corrupted = corrupted_from_rows(rows, model, clean=data)
        if corrupted is None:
            raise AscaleError(
                f"--method circuit ablates each component towards its counterfactual: give every "
                f"row of {str(args.data)!r} a {CORRUPTED!r} prompt of the same token length"
            )
        (train, test), (ctrain, ctest) = (
            d.split(test_size=args.test_size, seed=args.seed) for d in (data, corrupted)
        )
        circuit = ascale.CircuitScalars(
            model, sites=args.sites, layers=args.layers, positions=args.positions, n_pos=data.n_pos
        )
        options = {k: v for k, v in fit_options_of(args).items() if k in CIRCUIT_SETTINGS}
        result = ascale.fit_circuit(model, circuit, train, ctrain, seed=args.seed, **options)
        ranking = ascale.rank_components(circuit, model=model, data=train)
        scored = ascale.score_circuits(
            model, test, {"circuit": ranking}, grid=ascale.Grid.of(circuit), corrupted=ctest
        )
        hyper = {**result.settings, "sites": args.sites, "positions": args.positions}
        ascale.save(circuit, run.stage, metadata={"hyperparameters": hyper})
        summary = scored.summary()
        write_json(run.stage / "metrics.json", {"test": summary.reset_index().to_dict("records")})
        write_json(run.stage / "history.json", result.history)
        ranking.to_frame().to_csv(run.stage / "ranking.csv", index=False)
    print(f"\ncircuits on the test split ({len(test)} prompts, counterfactual ablation)")
    print(summary.round(3).to_string())
    print(f"\nwrote {run.path}/intervention.safetensors, intervention.json, metrics.json")
    return 0


def _own(args: argparse.Namespace) -> dict[str, Any]:
    """The chosen kind's own options: dynamic scalars' ``--detach-input``."""
    return {"detach_input": True} if getattr(args, "detach_input", False) else {}
