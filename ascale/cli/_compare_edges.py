"""``ascale compare --level edges``: rank the edges of MIB's graph by every edge method
(`ascale.compare_edges`: EAP, EAP-IG-inputs, edge circuit scalars, random), score each ranking
as circuits with MIB's protocol on the test split, and write ``compare.json``, ``report.html``
(the edge curves and the drawn circuit) and one MIB graph file per ranking,
``mib/<method>.json``.

Edges need counterfactual prompts (the task's corruption, or every row's ``corrupted``
prompt) and cost more than nodes, so at most ``--edge-n`` prompts a split are used. The
options of the node level alone (the grid, patching, the steering fits' settings, `--ablation`
other than counterfactual) are refused, not ignored.
"""

import argparse
import math
from pathlib import Path
from typing import Any

from ascale.cli._common import counterfactuals, load_data, load_model, read_rows

NO_COUNTERFACTUALS = (
    "--level edges ablates edges to counterfactual prompts, and {data!r} has none: give every "
    "row a 'corrupted' prompt of its prompt's token length"
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
    rows = read_rows(args)
    if rows is not None and not has_corrupted(rows, where=str(args.data)):
        raise AscaleError(NO_COUNTERFACTUALS.format(data=str(args.data)))
    edge_n = args.edge_n or EDGE_N
    with RunFolder(args.out, overwrite=args.overwrite, inputs={"--data": args.data}) as run:
        model = load_model(args, args.model)
        data = load_data(args, model, rows)
        corrupted = counterfactuals(args, model, rows, data)
        assert corrupted is not None  # the rows carry them: checked above
        used = _capped(data, edge_n, args.test_size)
        given = {"steps": args.steps, "batch_size": args.batch_size}
        result = ascale.compare_edges(
            model,
            data.subset(list(range(used))),
            corrupted.subset(list(range(used))),
            methods=methods,
            test_size=args.test_size,
            seed=args.seed,
            fit_options={k: v for k, v in given.items() if v is not None},
        )
        best = _best(result)
        source = f"task {args.task}" if args.task else f"data {args.data}"
        info = {
            "level": "edges",
            "model": model.cfg.model_name,
            "data": source,
            "counterfactuals": f"ascale.tasks.{args.task}_corrupt"
            if args.task
            else "the rows' 'corrupted' prompts",
            "n_prompts": len(data),
            "n_used": used,
            "edge_n": edge_n,
            "drawn": best,
            "mib": [f"mib/{m}.json" for m in result.rankings],
        }
        write_edge_compare(
            run.stage,
            result,
            best,
            title=f"ascale compare --level edges ({source})",
            description=_described(data, result, info),
            info=info,
        )
    print_edge_summary(result)
    print(f"wrote {run.path}/report.html, {run.path}/compare.json and {run.path}/mib/")
    return 0


def _edge_methods(args: argparse.Namespace) -> list[str]:
    """``--methods`` at ``--level edges`` (default every one of `EDGE_METHODS`); a node-level
    method, and a node-level option given, are refused naming ``--level nodes``."""
    from ascale.analysis.edge_compare import EDGE_METHODS
    from ascale.errors import AscaleError

    given = [name for name, default in args.node_only.items() if getattr(args, name) != default]
    given += ["ablation"] if args.ablation not in (None, "counterfactual") else []
    if given:
        raise AscaleError(
            f"--{given[0].replace('_', '-')} applies at --level nodes only; --level edges "
            "ranks MIB's edges with counterfactual ablation and takes --methods, --edge-n, "
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
    """The report's description: model, data, prompts used, edges, what is drawn."""
    n_edges, best = result.circuits.n_edges, info["drawn"]
    drawn = f" The drawing: the top {min(DRAWN, n_edges)} edges of {best} (the highest CPR)."
    return (
        f"{info['model']}, {info['data']}: the first {info['n_used']} of {len(data)} prompts "
        f"of {data.n_pos} tokens (at most {info['edge_n']} a split), "
        f"{result.info['n_train']} train (rankings) / {result.info['n_test']} test "
        f"(circuits); {n_edges:,} edges, ablated to the counterfactual prompts "
        f"({info['counterfactuals']})." + (drawn if best else "")
    )


def print_edge_summary(result: Any) -> None:
    """Each edge method's CPR and CMD, and its time."""
    frame = result.summary()
    frame["time_s"] = [result.info["timings_s"].get(m) for m in frame.index]
    n_test, n_edges = result.info["n_test"], result.circuits.n_edges
    print(f"\nedge circuits on the test split ({n_test} prompts, {n_edges:,} edges, ablated)")
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
) -> None:
    """``report.html``, ``compare.json`` and ``mib/<method>.json`` of an `EdgeCompareResult`
    into folder `out`; the report draws the top edges of ranking `drawn` (if any)."""
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
    result.write_mib(out / "mib")
