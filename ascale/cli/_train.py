"""``ascale fit``, ``evaluate``, ``generate`` and ``demo``: one intervention at a time."""

import argparse
import time
from pathlib import Path

from ascale.cli._common import (
    fit_one,
    load_data,
    load_model,
    load_split,
    loadable,
    make_intervention,
    print_table,
    read_rows,
    run_folder,
)
from ascale.cli._maps import print_summary, write_compare
from ascale.cli._options import build_parser

# The demo's budgets, smaller than `fit`'s and `compare`'s so that it ends in about two minutes
# on 2 CPU cores (docs/benchmarks.md "A first result"; benchmarks/results/demo_budget*.json and
# first_result_run*.json, on the demo's split): each steering fit settles for 1 step after 95% of
# the training prompts flip, not as many as reaching that took (scalars 20 steps, test flips
# 0.98 / 0.98, KL 0.84, against 38 steps and KL 0.76; vectors 10 steps, 0.98 / 0.98, KL 0.95,
# against 18 and 0.89); circuit scalars run 24 steps of 32 prompts (CPR 1.03 / CMD 0.036,
# against 1.05 / 0.033 at fit_circuit's 120 of 16, in under half the time); the random
# baseline averages 3 orders, not 5 (CPR 0.266 against 0.262).
DEMO_SETTLE = 1
DEMO_CIRCUIT_STEPS = 24
DEMO_RANDOM_ORDERS = 3


def fit_command(args: argparse.Namespace) -> int:
    from ascale import distributed

    rows = read_rows(args)
    if args.method == "circuit":
        return _fit_circuit_command(args, rows)
    main = distributed.is_main()  # under torchrun, only rank 0 evaluates and writes
    with run_folder(args) as run:
        model = load_model(args, args.model)
        intervention = make_intervention(model, args.method, args)  # bad sites: before work
        train, test = load_split(args, model, rows, tied=intervention.position_tied)
        metrics = fit_one(model, intervention, train, test, args, run.stage if main else None)
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
        given = {"steps": args.steps, "lr": args.lr, "batch_size": args.batch_size}
        options = {k: v for k, v in given.items() if v is not None}
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


def generate_command(args: argparse.Namespace) -> int:
    import ascale
    from ascale.io import read_metadata

    saved = read_metadata(args.intervention)  # a damaged or missing save: before the model
    model = load_model(args, args.model or loadable(saved["model"]["model_name"]))
    intervention = ascale.load(args.intervention, model)
    text = ascale.generate(
        model, intervention, args.prompt, beta=args.beta, max_new_tokens=args.max_new_tokens
    )
    print(text)
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    import ascale
    from ascale._outputs import check_output_file, claim, write_json
    from ascale._rows import read_jsonl
    from ascale.data import ContrastSet
    from ascale.io import METADATA, TENSORS, read_metadata

    rows = read_jsonl(args.data)
    saved = read_metadata(args.intervention)
    folder = args.intervention.expanduser()
    out = (args.out or folder / "eval.json").expanduser()
    inputs = [("--data", args.data), *(("--intervention", folder / f) for f in (METADATA, TENSORS))]
    check_output_file(out, inputs, overwrite=args.overwrite)
    model = load_model(args, args.model or loadable(saved["model"]["model_name"]))
    intervention = ascale.load(folder, model)
    data = ContrastSet.from_rows(rows, model)
    metrics = ascale.evaluate(model, intervention, data)
    write_json(out, {"data": str(args.data), **metrics.to_dict()})
    claim(out)  # in a run's folder, --overwrite of that run replaces it
    print_table({saved.get("method", "intervention"): metrics.to_dict()}, title=str(args.data))
    print(f"wrote {out}")
    return 0


def demo_command(args: argparse.Namespace) -> int:
    import ascale
    from ascale._outputs import write_json
    from ascale._runfolder import RunFolder

    start = time.perf_counter()
    default = args.out is None  # ascale's own folder: a new demo replaces the previous one
    folder = RunFolder(
        Path("ascale-out/demo") if default else args.out,
        overwrite=args.overwrite or default,
        replace_any=default,
    )
    with folder as run:
        timings: dict[str, float] = {}
        t = time.perf_counter()
        model = load_model(args, None)
        timings["load_model"] = time.perf_counter() - t
        data = ascale.tasks.ccc(model, n=args.n, seed=args.seed)
        train, test = data.split(test_size=0.3, seed=args.seed)
        print(
            f"CCC on {model.cfg.model_name}: {len(train)} train / {len(test)} test prompts "
            f"of {data.n_pos} tokens, e.g. {data.prompts[0]!r} -> {data.correct[0]!r} vs "
            f"{data.wrong[0]!r}"
        )
        opts = _demo_options(args)
        table, ivs, measured, steps = {}, {}, {}, {}
        for method in ("scalars", "vectors"):
            ivs[method] = intervention = make_intervention(model, method, opts)
            # the scalars are the demo's map too: fitted sparse (exact zeros), as compare does
            sparse = argparse.Namespace(**{**vars(opts), "sparsity": "proximal"})
            settings = sparse if method == "scalars" else opts
            t = time.perf_counter()
            # the test split only: the demo's first table, and compare's metrics of its fits
            # (`ascale evaluate --data scalars/train.jsonl` measures the training split)
            metrics = fit_one(
                model, intervention, train, test, settings, run.stage / method, splits=("test",)
            )
            timings[f"fit_and_evaluate_{method}"] = time.perf_counter() - t
            table[method] = metrics["test"]
            measured[method] = ascale.Metrics(**metrics["test"])
            steps[method] = metrics["fit"]["steps_run"]
        title = f"CCC test split, {model.cfg.model_name}, sites attn_out+mlp_out, all positions"
        print_table(table, title=title)
        # --steps caps the circuit scalars' steps too
        circuit_steps = min(args.steps or DEMO_CIRCUIT_STEPS, DEMO_CIRCUIT_STEPS)
        # the same split: the demo's own fits are ranked and scored beside patching and random
        result = ascale.compare(
            model,
            data,
            ascale.tasks.ccc_corrupt(data, model, seed=args.seed),
            methods=[
                "scalars",
                "vectors",
                "circuit",
                "activation_patching",
                "attribution_patching",
                "random",
            ],
            fitted={"scalars": ivs["scalars"], "vectors": ivs["vectors"]},
            fitted_metrics=measured,
            fit_options={"circuit": {"steps": circuit_steps, "batch_size": 32}},
            sites=opts.sites,
            positions=opts.positions,
            test_size=0.3,
            seed=args.seed,
            patch_n=8,
            n_random=DEMO_RANDOM_ORDERS,
            k=10,
        )
        description = (
            f"{model.cfg.model_name}, task ccc: {len(data)} prompts of {data.n_pos} tokens "
            f"(e.g. {data.prompts[0]!r} -> {data.correct[0]!r} vs {data.wrong[0]!r}), "
            f"{result.info['n_train']} train / {result.info['n_test']} test; patching on "
            f"{result.info['n_patched']} train prompts, circuits on the test split, "
            f"{result.info['ablation']} ablation. scalars (fitted sparse) and vectors are the "
            "demo's fits (scalars/, vectors/)."
        )
        write_compare(run.stage, result, title="ascale demo: CCC", description=description)
        print_summary(result)
        timings.update({f"compare_{k}": v for k, v in result.info["timings_s"].items()})
        timings["compare"] = result.info["wall_time_s"]
        summary = {
            "wall_time_s": round(time.perf_counter() - start, 1),
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
            "steps_run": steps,
            "test": table,
            "circuits": result.to_dict()["summary"],
        }
        write_json(run.stage / "summary.json", summary)
    print(
        f"wrote {run.path}/ (scalars/, vectors/, summary.json, report.html, compare.json) in "
        f"{round(time.perf_counter() - start, 1)} s"
    )
    return 0


def _demo_options(args: argparse.Namespace) -> argparse.Namespace:
    """The `fit` command's defaults (one source of truth), with the demo's steps, seed and
    settling steps, at every position: the demo's maps and compare's patching share one
    layer x position grid."""
    argv = ["fit", "--task", "ccc", "--out", "unused", "--seed", str(args.seed)]
    argv += ["--positions", "all", "--settle", str(DEMO_SETTLE)]
    steps = [] if args.steps is None else ["--steps", str(args.steps)]
    return build_parser().parse_args([*argv, *steps])
