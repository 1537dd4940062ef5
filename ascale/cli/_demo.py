"""``ascale demo``: the main job on the embedded model in about two minutes: scalars and vectors
fitted on CCC, then every ranking scored as a circuit beside patching (report.html)."""

import argparse
import time
from pathlib import Path
from typing import Any

from ascale._types import HookedModel
from ascale.cli._common import fit_one, fit_options, load_model, make_intervention, print_table
from ascale.cli._compare import print_summary, write_compare

# The demo's budgets, smaller than `fit`'s and `compare`'s so that it ends in about two minutes
# on 2 CPU cores (docs/benchmarks.md "A first result"; benchmarks/studies/results/demo_budget*.json and
# first_result_run*.json, on the demo's split): each steering fit settles for 1 step after 95% of
# the training prompts flip, not as many as reaching that took (scalars 20 steps, test flips
# 0.98 / 0.98, KL 0.84, against 38 steps and KL 0.76; vectors 10 steps, 0.98 / 0.98, KL 0.95,
# against 18 and 0.89); circuit scalars run 24 steps of 32 prompts (CPR 1.03 / CMD 0.036,
# against 1.05 / 0.033 at fit_circuit's 120 of 16, in under half the time); the random
# baseline averages 3 orders, not 5 (CPR 0.266 against 0.262).
DEMO_SETTLE = 1
DEMO_CIRCUIT_STEPS = 24
DEMO_RANDOM_ORDERS = 3
#: the report's steered text: the scalars on this many test prompts at each beta
DEMO_TEXT_PROMPTS = 4
DEMO_TEXT_BETAS = (-1.0, 0.0, 1.0)
DEMO_TEXT_TOKENS = 12


#: the demo's grid: every position of attn_out and mlp_out, so that its maps and compare's
#: patching share one layer x position grid
DEMO_GRID: dict[str, Any] = {"sites": "attn_out,mlp_out", "layers": None, "positions": "all"}
#: the demo's fits and their own settings: the scalars are the demo's map too, fitted sparse
#: (exact zeros) as compare fits them
DEMO_FITS: dict[str, dict[str, Any]] = {"scalars": {"sparsity": "proximal"}, "vectors": {}}
#: what compare ranks and scores in the demo
DEMO_METHODS = (
    "scalars",
    "vectors",
    "circuit",
    "activation_patching",
    "attribution_patching",
    "random",
)


def demo_command(args: argparse.Namespace) -> int:
    import ascale
    from ascale._outputs import write_json
    from ascale.cli._runfolder import RunFolder

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
        fitted = _fit_both(model, train, test, args, run.stage, timings)
        t = time.perf_counter()
        texts: Any = ascale.generate(
            model, fitted["ivs"]["scalars"], test.subset(range(min(DEMO_TEXT_PROMPTS, len(test)))),
            beta=list(DEMO_TEXT_BETAS), max_new_tokens=DEMO_TEXT_TOKENS,
        )  # fmt: skip
        timings["generate"] = time.perf_counter() - t
        result = _compare(model, data, args, fitted)
        description = (
            f"{model.cfg.model_name}, task ccc: {len(data)} prompts of {data.n_pos} tokens "
            f"(e.g. {data.prompts[0]!r} -> {data.correct[0]!r} vs {data.wrong[0]!r}), "
            f"{result.info['n_train']} train / {result.info['n_test']} test; patching on "
            f"{result.info['n_patched']} train prompts, circuits on the test split, "
            f"{result.info['ablation']} ablation. scalars (fitted sparse) and vectors are the "
            "demo's fits (scalars/, vectors/)."
        )
        write_compare(run.stage, result, title="ascale demo: CCC", description=description,
                      generations=texts)  # fmt: skip
        print_summary(result)
        timings.update({f"compare_{k}": v for k, v in result.info["timings_s"].items()})
        timings["compare"] = result.info["wall_time_s"]
        summary = {
            "wall_time_s": round(time.perf_counter() - start, 1),
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
            "steps_run": fitted["steps"],
            "test": fitted["table"],
            "circuits": result.to_dict()["summary"],
            "steered_text": texts.to_records(),
        }
        write_json(run.stage / "summary.json", summary)
    print(
        f"wrote {run.path}/ (scalars/, vectors/, summary.json, report.html, compare.json) in "
        f"{round(time.perf_counter() - start, 1)} s"
    )
    return 0


def _fit_both(
    model: HookedModel,
    train: Any,
    test: Any,
    args: argparse.Namespace,
    stage: Path,
    timings: dict[str, float],
) -> dict[str, Any]:
    """Scalars (fitted sparse: the demo's map, as compare fits it) and vectors, each evaluated
    on the test split only (`ascale evaluate --data scalars/train.jsonl` measures the training
    split) and saved under `stage`; their interventions, metrics and steps."""
    import ascale

    fitted: dict[str, Any] = {"ivs": {}, "table": {}, "measured": {}, "steps": {}}
    for method, own in DEMO_FITS.items():
        iv = fitted["ivs"][method] = make_intervention(model, method, **DEMO_GRID)
        options = fit_options(steps=args.steps, settle=DEMO_SETTLE, **own)
        t = time.perf_counter()
        metrics = fit_one(
            model, iv, train, test, options, stage / method,
            seed=args.seed, sites=DEMO_GRID["sites"], splits=("test",),
        )  # fmt: skip
        timings[f"fit_and_evaluate_{method}"] = time.perf_counter() - t
        fitted["table"][method] = metrics["test"]
        fitted["measured"][method] = ascale.Metrics(**metrics["test"])
        fitted["steps"][method] = metrics["fit"]["steps_run"]
    title = f"CCC test split, {model.cfg.model_name}, sites attn_out+mlp_out, all positions"
    print_table(fitted["table"], title=title)
    return fitted


def _compare(
    model: HookedModel, data: Any, args: argparse.Namespace, fitted: dict[str, Any]
) -> Any:
    """The demo's own fits ranked and scored beside patching and random, on the same split."""
    import ascale

    # --steps caps the circuit scalars' steps too
    circuit_steps = min(args.steps or DEMO_CIRCUIT_STEPS, DEMO_CIRCUIT_STEPS)
    return ascale.compare(
        model,
        data,
        ascale.tasks.ccc_corrupt(data, model, seed=args.seed),
        methods=DEMO_METHODS,
        fitted=fitted["ivs"],
        fitted_metrics=fitted["measured"],
        fit_options={"circuit": {"steps": circuit_steps, "batch_size": 32}},
        sites=DEMO_GRID["sites"],
        positions=DEMO_GRID["positions"],
        test_size=0.3,
        seed=args.seed,
        patch_n=8,
        n_random=DEMO_RANDOM_ORDERS,
        k=10,
    )
