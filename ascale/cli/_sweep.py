"""``ascale sweep``: fit over a grid of lambda_min (and lambda_faith): effectiveness against
minimality and faithfulness, as sweep.csv, sweep.json and report.html."""

import argparse
from typing import Any

from ascale.cli._common import (
    fit_options_of,
    grid_of,
    load_model,
    load_split,
    read_rows,
    run_folder,
)


def sweep_command(args: argparse.Namespace) -> int:
    import ascale
    from ascale import distributed
    from ascale._outputs import write_atomic, write_json
    from ascale.interventions import METHODS

    rows = read_rows(args)
    main = distributed.is_main()  # under torchrun each rank fits its share, rank 0 writes
    with run_folder(args) as run:
        model = load_model(args, args.model)
        tied = any(not METHODS[m].any_length for m in args.methods)
        train, test = load_split(args, model, rows, tied=tied)
        # the weights are the sweep's own axes: only the fit settings here
        options = fit_options_of(args, margin=None, lambda_faith=None, lambda_min=None)
        table = ascale.sweep(
            model,
            train,
            test,
            methods=args.methods,
            lambda_min=args.lambda_min,
            lambda_faith=args.lambda_faith,
            **grid_of(args),
            margin=args.margin,
            fit_options=options,
            seed=args.seed,
        )
        if not main:
            return 0
        source = f"task {args.task}" if args.task else f"data {args.data}"
        info = {
            "model": model.cfg.model_name,
            "data": source,
            "n_train": len(train),
            "n_test": len(test),
            "sites": args.sites,
            "layers": args.layers,
            "positions": args.positions,
            "margin": args.margin,
            "fit_options": options,
            "seed": args.seed,
        }
        write_atomic(run.stage / "sweep.csv", table.to_csv(index=False))
        records = table.astype(object).where(table.notna(), None).to_dict("records")
        write_json(run.stage / "sweep.json", {"info": info, "rows": records})
        description = (
            f"{model.cfg.model_name}, {source}: {len(train)} train / {len(test)} test prompts; "
            f"sites {args.sites}, positions {args.positions}; one fit per method and weight."
        )
        ascale.write_report(
            run.stage, sweep=table, title="ascale sweep: trade-offs", description=description
        )
    _print_sweep(table)
    print(f"wrote {run.path}/sweep.csv, sweep.json and report.html")
    return 0


def _print_sweep(table: Any) -> None:
    columns = {
        "method": "method",
        "lambda_min": "lambda_min",
        "lambda_faith": "lambda_faith",
        "split": "split",
        "flip_rate_forward": "flip+1",
        "flip_rate_backward": "flip-1",
        "faithfulness_kl": "KL",
        "n_active": "active",
    }
    if table["lambda_faith"].nunique() == 1:
        del columns["lambda_faith"]
    frame = table[list(columns)].rename(columns=columns)
    print()
    print(frame.round({"flip+1": 2, "flip-1": 2, "KL": 4}).to_string(index=False))
    print()
