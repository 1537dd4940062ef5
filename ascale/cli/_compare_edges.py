"""``ascale compare --level edges``: rank the edges of MIB's graph by every edge method
(`ascale.compare_edges`: EAP, EAP-IG-inputs, edge circuit scalars, random), score each ranking
as circuits with MIB's protocol on the test split, and write ``compare.json``, ``report.html``
(the edge curves and the drawn circuit) and one MIB graph file per ranking,
``mib/<method>.json`` (with ``--mib-binary`` also its circuits at MIB's fractions,
``mib/<method>/abs-False/<p>.json`` and ``abs-True/<p>.json``).

An edge outside a circuit carries its source's output on the counterfactual prompt (the
default, ``--ablation counterfactual``: the task's corruption, or every row's ``corrupted``
prompt), its mean over the prompts at each position (``mean``) or zero (``zero``). Edges cost
more than nodes, so at most ``--edge-n`` prompts a split are used. The options of the node
level alone (the grid, patching, the steering fits' settings) are refused, not ignored.
"""

import argparse
import math
from pathlib import Path
from typing import Any

from ascale.cli._common import counterfactuals, load_data, load_model, read_rows

NO_COUNTERFACTUALS = (
    "--level edges ablates edges to counterfactual prompts unless --ablation says otherwise, "
    "and {data!r} has none: give every row a 'corrupted' prompt of its prompt's token length, "
    "or use --ablation mean or --ablation zero"
)
#: edges drawn in the report's circuit (the top of the ranking with the highest CPR)
DRAWN = 40


def compare_edges_command(args: argparse.Namespace) -> int:
    import ascale
    from ascale._rows import has_corrupted
    from ascale.cli._options import EDGE_N
    from ascale.cli._runfolder import RunFolder
    from ascale.errors import AscaleError

    methods = _edge_methods(args)
    ablation: str = args.ablation or "counterfactual"
    rows = read_rows(args)
    needs = ablation == "counterfactual"
    if needs and rows is not None and not has_corrupted(rows, where=str(args.data)):
        raise AscaleError(NO_COUNTERFACTUALS.format(data=str(args.data)))
    edge_n = args.edge_n or EDGE_N
    with RunFolder(args.out, overwrite=args.overwrite, inputs={"--data": args.data}) as run:
        model = load_model(args, args.model)
        data = load_data(args, model, rows)
        corrupted = counterfactuals(args, model, rows, data) if needs else None
        used = list(range(_capped(data, edge_n, args.test_size)))
        given = {"steps": args.steps, "batch_size": args.batch_size}
        result = ascale.compare_edges(
            model,
            data.subset(used),
            None if corrupted is None else corrupted.subset(used),
            ablation=ablation,
            methods=methods,
            test_size=args.test_size,
            seed=args.seed,
            fit_options={k: v for k, v in given.items() if v is not None},
        )
        info = _info(args, model, data, result, len(used), edge_n)
        write_edge_compare(
            run.stage,
            result,
            info["drawn"],
            title=f"ascale compare --level edges ({info['data']})",
            description=_described(data, result, info),
            info=info,
            binary=args.mib_binary,
        )
    print_edge_summary(result)
    print(f"wrote {run.path}/report.html, {run.path}/compare.json and {run.path}/mib/")
    return 0


def _info(
    args: argparse.Namespace, model: Any, data: Any, result: Any, used: int, edge_n: int
) -> dict[str, Any]:
    """What ``compare.json``'s ``info`` adds to `compare_edges`' own (which holds the
    ``ablation``): the model, the data, where the counterfactuals came from, the prompts used,
    the ranking drawn and the MIB files."""
    ablation = result.info["ablation"]
    if ablation != "counterfactual":
        made = f"none used ({ablation} ablation)"
    elif args.task:
        made = f"ascale.tasks.{args.task}_corrupt"
    else:
        made = "the rows' 'corrupted' prompts"
    methods = list(result.rankings)
    binary = [f"mib/{m}/abs-{a}/" for m in methods for a in (False, True)]
    return {
        "level": "edges",
        "model": model.cfg.model_name,
        "data": f"task {args.task}" if args.task else f"data {args.data}",
        "counterfactuals": made,
        "n_prompts": len(data),
        "n_used": used,
        "edge_n": edge_n,
        "drawn": _best(result),
        "mib": [f"mib/{m}.json" for m in methods],
        "mib_binary": binary if args.mib_binary else [],
    }


def _edge_methods(args: argparse.Namespace) -> list[str]:
    """``--methods`` at ``--level edges`` (default every one of `EDGE_METHODS`); a node-level
    method, and a node-level option given, are refused naming ``--level nodes``."""
    from ascale.analysis.edge_compare import EDGE_METHODS
    from ascale.errors import AscaleError

    given = [name for name, default in args.node_only.items() if getattr(args, name) != default]
    if given:
        raise AscaleError(
            f"--{given[0].replace('_', '-')} applies at --level nodes only; --level edges "
            "ranks MIB's edges and takes --methods, --ablation, --edge-n, --mib-binary, "
            "--steps and --batch-size"
        )
    methods: list[str] = args.methods or list(EDGE_METHODS)
    for name in methods:
        if name not in EDGE_METHODS:
            raise AscaleError(
                f"--methods: {name!r} ranks components (--level nodes); at --level edges "
                f"methods are {', '.join(EDGE_METHODS)}"
            )
    return methods


def _capped(data: Any, edge_n: int, test_size: float) -> int:
    """The most leading prompts of `data` whose split (`ContrastSet.split`) gives each side at
    most `edge_n` prompts."""
    used = min(len(data), math.floor(edge_n / max(test_size, 1 - test_size)) + 2)
    while used > 2 and max(map(len, data.subset(list(range(used))).split(test_size))) > edge_n:
        used -= 1
    return used


def _best(result: Any) -> str | None:
    """The ranking with the highest CPR (the first on a tie); ``None`` for random alone."""
    summary = result.summary()
    cpr = summary.loc[[m for m in summary.index if m in result.rankings], "cpr"]
    return None if cpr.empty else str(cpr.idxmax())


def _described(data: Any, result: Any, info: dict[str, Any]) -> str:
    """The report's description: model, data, prompts used, edges, the ablation, what is
    drawn."""
    from ascale.analysis.edge_results import CARRIED

    n_edges, best, ablation = result.circuits.n_edges, info["drawn"], result.info["ablation"]
    drawn = f" The drawing: the top {min(DRAWN, n_edges)} edges of {best} (the highest CPR)."
    where = f" ({info['counterfactuals']})" if ablation == "counterfactual" else ""
    return (
        f"{info['model']}, {info['data']}: the first {info['n_used']} of {len(data)} prompts "
        f"of {data.n_pos} tokens (at most {info['edge_n']} a split), "
        f"{result.info['n_train']} train (rankings) / {result.info['n_test']} test "
        f"(circuits); {n_edges:,} edges, {ablation} ablation: an edge outside a circuit "
        f"carries {CARRIED[ablation]}{where}." + (drawn if best else "")
    )


def print_edge_summary(result: Any) -> None:
    """Each edge method's CPR and CMD, and its time."""
    frame = result.summary()
    frame["time_s"] = [result.info["timings_s"].get(m) for m in frame.index]
    n_test, n_edges = result.info["n_test"], result.circuits.n_edges
    ablation = result.info["ablation"]
    print(
        f"\nedge circuits on the test split ({n_test} prompts, {n_edges:,} edges, "
        f"{ablation} ablation)"
    )
    print(frame.round(3).to_string(na_rep=""))
    print()


def write_edge_compare(
    out: Path,
    result: Any,
    drawn: str | None,
    *,
    title: str,
    description: str,
    info: dict[str, Any],
    binary: bool = False,
) -> None:
    """``report.html``, ``compare.json`` and ``mib/<method>.json`` of an `EdgeCompareResult`
    into folder `out` (`binary`: also ``mib/<method>/abs-*/<p>.json``,
    `EdgeCompareResult.write_mib`); the report draws the top edges of ranking `drawn` (if
    any)."""
    import ascale
    from ascale._outputs import write_json

    payload = result.to_dict()
    payload["info"] = {**payload["info"], **info}
    ascale.write_report(
        out,
        edge_circuits=result.circuits,
        edge_rankings=[result.rankings[drawn]] if drawn else [],
        title=title,
        description=description,
        edge_k=DRAWN,
    )
    write_json(out / "compare.json", payload)
    result.write_mib(out / "mib", binary=binary)
