"""``ascale compare`` (alias ``report``): rank components by every method on one grid, score
each ranking as a circuit, and write report.html and compare.json (``--level edges``: the edges
of MIB's graph instead, `ascale.cli._compare_edges`)."""

import argparse
from pathlib import Path
from typing import Any

from ascale.cli._common import (
    CIRCUIT_SETTINGS,
    counterfactuals,
    fit_options_of,
    grid_of,
    load_data,
    load_model,
    read_rows,
)

#: per task: (sites, positions) of the grid when --sites / --positions are not given
GRIDS: dict[str, tuple[str, str | list[int]]] = {
    "ioi": ("heads", [-1]),
    "ccc": ("attn_out,mlp_out", "all"),
    "data": ("attn_out,mlp_out", "all"),
}
NO_COUNTERFACTUALS = (
    "{data} has no 'corrupted' prompts: patching uses mean ablation, and so do circuits unless "
    "--ablation says otherwise (give every row a 'corrupted' prompt of its prompt's token "
    "length for counterfactual ablation)"
)


def compare_command(args: argparse.Namespace) -> int:
    import ascale
    from ascale._rows import has_corrupted
    from ascale.cli._runfolder import RunFolder
    from ascale.errors import AscaleError

    if args.level == "edges":
        from ascale.cli._compare_edges import compare_edges_command

        return compare_edges_command(args)
    task = args.task or "data"
    sites, positions = GRIDS[task]
    args.sites, args.positions = args.sites or sites, args.positions or positions
    chosen = _node_methods(args)
    methods = [*chosen, *(["vectors"] if args.vectors and "vectors" not in chosen else [])]
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
        corrupted = counterfactuals(args, model, rows, data)
        note = "" if corrupted is not None else NO_COUNTERFACTUALS.format(data=args.data)
        if note:
            print(f"note: {note}")
        result = ascale.compare(
            model,
            data,
            corrupted,
            methods=methods,
            **grid_of(args),
            test_size=args.test_size,
            seed=args.seed,
            patch_n=args.patch_n,
            ablation=args.ablation,
            k=args.k,
            refit_ks=args.refit,
            fit_options=_fit_options(args, methods),
        )
        source = f"task {task}" if args.task else f"data {args.data}"
        description, info = _described(args, model, data, corrupted, result, note)
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


def _node_methods(args: argparse.Namespace) -> list[str]:
    """``--methods`` at ``--level nodes`` (default `COMPARE_DEFAULT`); edge methods,
    ``--edge-n`` and ``--mib-binary`` are refused, naming ``--level edges``."""
    from ascale.analysis.compare_methods import METHODS
    from ascale.cli._options import COMPARE_DEFAULT
    from ascale.errors import AscaleError

    if args.edge_n is not None:
        raise AscaleError("--edge-n caps the prompts of --level edges: add --level edges")
    if args.mib_binary:
        raise AscaleError("--mib-binary writes edge circuits: add --level edges")
    methods: list[str] = args.methods or COMPARE_DEFAULT.split(",")
    for name in methods:
        if name not in METHODS:
            raise AscaleError(
                f"--methods: {name!r} ranks edges (--level edges); at --level nodes methods "
                f"are {', '.join(METHODS)}"
            )
    return methods


def _described(
    args: argparse.Namespace, model: Any, data: Any, corrupted: Any, result: Any, note: str
) -> tuple[str, dict[str, Any]]:
    """The report's description and the extra ``info`` of ``compare.json``."""
    source = f"task {args.task}" if args.task else f"data {args.data}"
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
    return description, info


def print_summary(result: Any) -> None:
    """Each method's CPR, CMD, f at the smallest circuits and (fitted methods) test metrics."""
    print(f"\ncircuits on the test split ({result.info['ablation']} ablation)")
    print(result.summary().round(3).to_string(na_rep=""))
    print()


def write_compare(
    out: Path,
    result: Any,
    *,
    title: str,
    description: str,
    info: dict[str, Any] | None = None,
    generations: Any = None,
) -> None:
    """``report.html`` and ``compare.json`` of a `CompareResult` into folder `out` (with
    `generations`, an `ascale.generate` table, the report's steered-text section)."""
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
        generations=generations,
        title=title,
        description=description,
    )
    write_json(out / "compare.json", payload)


def _fit_options(args: argparse.Namespace, methods: list[str]) -> dict[str, dict[str, Any]]:
    """Per fit the methods make, the fit options given on the command line over the method's
    own (`Method.defaults`; scalars: the sparse map); options not given are left to
    `ascale.compare`."""
    from ascale.analysis.compare_methods import METHODS

    options: dict[str, dict[str, Any]] = {}
    for method in (METHODS[m] for m in methods):
        if method.fit is None:
            continue
        if method.takes == "circuit":  # its own objective, and an SGD rate of another scale
            given = fit_options_of(args)
            chosen = {k: v for k, v in given.items() if k in CIRCUIT_SETTINGS and k != "lr"}
        else:
            objective = method.defaults.get("objective")
            chosen = (
                fit_options_of(args, objective=objective) if objective else fit_options_of(args)
            )
            if "objective" in chosen and chosen["objective"] == objective:
                del chosen["objective"]  # the method's own
        if chosen:
            options[method.fit] = chosen
    return options
