"""``ascale compare`` and ``ascale sweep``: many rankings or many fits, one report."""

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ascale._types import HookedModel
from ascale.cli._common import load_data, load_model, load_split, read_rows, run_folder

#: per task: (sites, positions) of the grid when --sites / --positions are not given
GRIDS: dict[str, tuple[str, str | list[int]]] = {
    "ioi": ("heads", [-1]),
    "ccc": ("attn_out,mlp_out", "all"),
    "data": ("attn_out,mlp_out", "all"),
}
PATCHING = ("activation_patching", "attribution_patching", "random")


def compare_command(args: argparse.Namespace) -> int:
    import ascale
    from ascale._rows import has_corrupted
    from ascale._runfolder import RunFolder
    from ascale.errors import AscaleError

    task = args.task or "data"
    sites, positions = GRIDS[task]
    args.sites, args.positions = args.sites or sites, args.positions or positions
    methods = [
        *args.methods,
        *(["vectors"] if args.vectors and "vectors" not in args.methods else []),
    ]
    if args.refit and "scalars" not in methods:
        raise AscaleError("--refit refits the scalars' own top k: add 'scalars' to --methods")
    rows = read_rows(args)
    counterfactual = rows is None or has_corrupted(rows, where=str(args.data))
    if not counterfactual and args.ablation == "counterfactual":
        raise AscaleError(
            f"--ablation counterfactual needs counterfactual prompts, and {str(args.data)!r} has "
            "none: give every row a 'corrupted' prompt of its prompt's token length, or use "
            "--ablation mean"
        )
    with RunFolder(args.out, overwrite=args.overwrite, inputs={"--data": args.data}) as run:
        model = load_model(args, args.model)
        data = load_data(args, model, rows)
        corrupted = _corrupted(args, model, rows, data)
        note = ""
        if corrupted is None:
            note = (
                f"{args.data} has no 'corrupted' prompts: patching uses mean ablation, and so "
                f"do circuits unless --ablation says otherwise (give every row a 'corrupted' "
                "prompt of its prompt's token length for counterfactual ablation)"
            )
            print(f"note: {note}")
        result = ascale.compare(
            model,
            data,
            corrupted,
            methods=methods,
            sites=args.sites,
            layers=args.layers,
            positions=args.positions,
            test_size=args.test_size,
            seed=args.seed,
            patch_n=args.patch_n,
            ablation=args.ablation,
            k=args.k,
            refit_ks=args.refit,
            fit_options=_fit_options(args, methods),
        )
        source = f"task {task}" if args.task else f"data {args.data}"
        patched = "counterfactual (corrupted) prompts" if corrupted is not None else "mean ablation"
        description = (
            f"{model.cfg.model_name}, {source}: {len(data)} prompts of {data.n_pos} tokens "
            f"(e.g. {data.prompts[0]!r} -> {data.correct[0]!r} vs {data.wrong[0]!r}), "
            f"{result.info['n_train']} train (rankings) / {result.info['n_test']} test "
            f"(circuits, metrics). Patching on {result.info['n_patched']} train prompts with "
            f"{patched}; circuits with {result.info['ablation']} ablation."
            + (f" Note: {note}." if note else "")
        )
        info = {
            "model": model.cfg.model_name,
            "data": source,
            "counterfactuals": (
                "none in the data: mean ablation"
                if corrupted is None
                else f"ascale.tasks.{args.task}_corrupt"
                if args.task
                else "the rows' 'corrupted' prompts"
            ),
        }
        write_compare(
            run.stage,
            result,
            title=f"ascale compare ({source})",
            description=description,
            info=info,
        )
    print_summary(result)
    print(f"wrote {run.path}/report.html and {run.path}/compare.json")
    return 0


def print_summary(result: Any) -> None:
    """Each method's CPR, CMD, f at the smallest circuits and (fitted methods) test metrics."""
    print(f"\ncircuits on the test split ({result.info['ablation']} ablation)")
    print(result.summary().round(3).to_string(na_rep=""))
    print()


def write_compare(
    out: Path, result: Any, *, title: str, description: str, info: dict[str, Any] | None = None
) -> None:
    """``report.html`` and ``compare.json`` of a `CompareResult` into folder `out`."""
    import ascale
    from ascale._outputs import write_json

    payload = result.to_dict()
    payload["info"] = {**payload["info"], **(info or {})}
    ascale.write_report(
        out,
        result.rankings,
        agreement=result.agreement,
        agreement_by_type=result.agreement_by_type,
        circuits=result.circuits,
        refit=result.refit,
        metrics=result.metrics,
        title=title,
        description=description,
    )
    write_json(out / "compare.json", payload)


def sweep_command(args: argparse.Namespace) -> int:
    import ascale
    from ascale import distributed
    from ascale._outputs import write_atomic, write_json

    rows = read_rows(args)
    main = distributed.is_main()  # under torchrun each rank fits its share, rank 0 writes
    with run_folder(args) as run:
        model = load_model(args, args.model)
        tied = any(m != "dynamic" for m in args.methods)
        train, test = load_split(args, model, rows, tied=tied)
        options = {
            k: v
            for k, v in (
                ("steps", args.steps),
                ("lr", args.lr),
                ("batch_size", args.batch_size),
                ("sparsity", args.sparsity),
                ("settle", args.settle),
            )
            if v is not None
        }
        if args.no_early_stop:
            options["stop"] = "none"
        table = ascale.sweep(
            model,
            train,
            test,
            methods=args.methods,
            lambda_min=args.lambda_min,
            lambda_faith=args.lambda_faith,
            sites=args.sites,
            layers=args.layers,
            positions=args.positions,
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


def _corrupted(args: argparse.Namespace, model: HookedModel, rows: Any, data: Any) -> Any:
    """The counterfactual prompts aligned with `data`: the task's corruption, or the rows'
    ``corrupted`` prompts (``None`` when the rows carry none)."""
    import ascale
    from ascale.data import corrupted_from_rows

    if rows is not None:
        return corrupted_from_rows(rows, model, clean=data)
    corrupt = {"ccc": ascale.tasks.ccc_corrupt, "ioi": ascale.tasks.ioi_corrupt}[args.task]
    return corrupt(data, model, seed=args.seed)


def _fit_options(args: argparse.Namespace, methods: list[str]) -> dict[str, dict[str, Any]]:
    """Per fitted method, the given fit settings over the method's own (scalars: the sparse
    map); settings not given are left to `ascale.compare`."""
    from ascale.analysis.compare import SPARSE_MAP
    from ascale.training.objective import Objective

    given: dict[str, Any] = {
        k: v
        for k, v in (
            ("steps", args.steps),
            ("lr", args.lr),
            ("batch_size", args.batch_size),
            ("settle", args.settle),
        )
        if v is not None
    }
    if args.no_early_stop:
        given["stop"] = "none"
    weights = {
        k: v
        for k, v in (
            ("margin", args.margin),
            ("lambda_faith", args.lambda_faith),
            ("lambda_min", args.lambda_min),
        )
        if v is not None
    }
    options = {}
    if "circuit" in methods:  # its own objective, and an SGD rate of another scale
        circuit = {k: v for k, v in given.items() if k in ("steps", "batch_size")}
        options.update({"circuit": circuit} if circuit else {})
    for method in (m for m in methods if m not in (*PATCHING, "circuit")):
        base = dict(SPARSE_MAP) if method == "scalars" else {}
        if weights:
            base["objective"] = dataclasses.replace(base.get("objective", Objective()), **weights)
        if method == "scalars" or given or weights:
            options[method] = {**base, **given}
    return options


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
