"""The ``ascale`` command: ``fit``, ``evaluate``, ``generate``, ... (``ascale COMMAND --help``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ascale`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from ascale.errors import AscaleError

    try:
        return COMMANDS[args.command](args)
    except AscaleError as err:
        print(f"ascale {args.command}: error: {err}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ascale",
        description="Learn activation scalars that steer a language model, and see where they act.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _fit_parser(sub.add_parser("fit", help="learn an intervention on a task or a jsonl file"))
    _evaluate_parser(
        sub.add_parser("evaluate", help="measure a saved intervention on a jsonl file")
    )
    _demo_parser(sub.add_parser("demo", help="the main job: scalars vs vectors on CCC"))
    _generate_parser(sub.add_parser("generate", help="generate text with a saved intervention"))
    compare_help = "learned scalars vs activation and attribution patching: report.html"
    _compare_parser(sub.add_parser("compare", aliases=["report"], help=compare_help))
    return parser


# ---- shared options ----


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model name or path (default: embedded SmolLM2)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", choices=["ccc", "ioi"], help="a built-in task")
    source.add_argument("--data", type=Path, help="jsonl file of {prompt, correct, wrong} rows")
    p.add_argument("--n", type=int, default=200, help="prompts to build for --task (default 200)")
    p.add_argument("--test-size", type=float, default=0.3, help="test share (default 0.3)")
    p.add_argument("--seed", type=int, default=0, help="seed for data, split and batches")


def _train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sites", default="attn_out,mlp_out", help="comma-separated sites or hooks")
    p.add_argument("--layers", default=None, help="comma-separated layers (default: all)")
    p.add_argument("--positions", default="all", help="'all', 'shared' or e.g. '-1,-2'")
    p.add_argument("--steps", type=int, default=100, help="maximum optimiser steps")
    p.add_argument("--lr", type=float, default=0.1, help="Adam learning rate (cosine decay)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--margin", type=float, default=2.0)
    p.add_argument("--lambda-faith", type=float, default=1.0)
    p.add_argument("--lambda-min", type=float, default=1e-2)
    p.add_argument("--no-early-stop", action="store_true", help="always run every step")


def _fit_parser(p: argparse.ArgumentParser) -> None:
    _data_options(p)
    p.add_argument("--method", choices=["scalars", "vectors", "dynamic"], default="scalars")
    p.add_argument(
        "--detach-input",
        action="store_true",
        help="dynamic: stop gradients through the activation inside the probe",
    )
    _train_options(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(command="fit")


def _evaluate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--intervention", type=Path, required=True, help="folder written by `fit`")
    p.add_argument("--data", type=Path, required=True, help="jsonl file of rows to evaluate on")
    p.add_argument("--model", default=None, help="default: the model it was trained on")
    p.add_argument("--out", type=Path, default=None, help="metrics file (default: DIR/eval.json)")
    p.set_defaults(command="evaluate")


def _compare_parser(p: argparse.ArgumentParser) -> None:
    _data_options(p)
    _train_options(p)
    # None: per task (CCC attn_out,mlp_out at all positions; IOI heads at the last position)
    p.set_defaults(sites=None, positions=None, command="compare")
    p.add_argument("--vectors", action="store_true", help="also fit and rank steering vectors")
    p.add_argument("--patch-n", type=int, default=16, help="prompts to patch (default 16)")
    p.add_argument("--k", type=int, default=10, help="k of the top-k overlap (default 10)")
    p.add_argument("--direction", choices=["noising", "denoising"], default="noising")
    p.add_argument("--out", type=Path, required=True, help="output folder")


def _generate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--intervention", type=Path, required=True, help="folder written by `fit`")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--beta", type=float, default=1.0, help="the steering dial (default 1.0)")
    p.add_argument("--max-new-tokens", type=int, default=20, help="default 20")
    p.add_argument("--model", default=None, help="default: the model it was trained on")
    p.set_defaults(command="generate")


def _demo_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("ascale-out/demo"))
    p.add_argument("--steps", type=int, default=100, help="maximum optimiser steps per method")
    p.add_argument("--n", type=int, default=200, help="CCC prompts")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(command="demo")


# ---- commands ----


def _command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Any]:
    def register(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn

    return register


@_command("fit")
def _fit(args: argparse.Namespace) -> int:
    import ascale

    model = ascale.load_model(args.model)
    intervention = _make_intervention(model, args.method, args)  # bad sites fail before any work
    train, test = _load_split(args, model)
    metrics = _fit_one(model, intervention, train, test, args, args.out)
    _print_table({args.method: metrics["test"]}, title=f"{args.method}, test split")
    print(f"wrote {args.out}/intervention.safetensors, intervention.json, metrics.json")
    return 0


@_command("generate")
def _generate(args: argparse.Namespace) -> int:
    import ascale
    from ascale.io import read_metadata

    saved = read_metadata(args.intervention)
    model = ascale.load_model(args.model or _loadable(saved["model"]["model_name"]))
    intervention = ascale.load(args.intervention, model)
    text = ascale.generate(
        model, intervention, args.prompt, beta=args.beta, max_new_tokens=args.max_new_tokens
    )
    print(text)
    return 0


@_command("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    import ascale
    from ascale.io import read_metadata

    saved = read_metadata(args.intervention)
    model = ascale.load_model(args.model or _loadable(saved["model"]["model_name"]))
    intervention = ascale.load(args.intervention, model)
    data = ascale.load_jsonl(args.data, model)
    metrics = ascale.evaluate(model, intervention, data)
    out = args.out or args.intervention / "eval.json"
    _write_json(out, {"data": str(args.data), **metrics.to_dict()})
    print(metrics)
    print(f"wrote {out}")
    return 0


@_command("demo")
def _demo(args: argparse.Namespace) -> int:
    import ascale

    start = time.perf_counter()
    model = ascale.load_model()
    data = ascale.tasks.ccc(model, n=args.n, seed=args.seed)
    train, test = data.split(test_size=0.3, seed=args.seed)
    print(
        f"CCC on {model.cfg.model_name}: {len(train)} train / {len(test)} test prompts "
        f"of {data.n_pos} tokens, e.g. {data.prompts[0]!r} -> {data.correct[0]!r} vs "
        f"{data.wrong[0]!r}"
    )
    opts = _demo_options(args)
    table, ivs = {}, {}
    for method in ("scalars", "vectors"):
        ivs[method] = intervention = _make_intervention(model, method, opts)
        metrics = _fit_one(model, intervention, train, test, opts, args.out / method)
        table[method] = metrics["test"]
    _print_table(table, title="CCC test split, SmolLM2-135M, sites attn_out+mlp_out, all positions")
    summary = {"wall_time_s": round(time.perf_counter() - start, 1), "test": table}
    _write_json(args.out / "summary.json", summary)
    _localise(model, ivs, test, "ccc", table, args.out, patch_n=8, k=10)  # patching: ~2-4 min
    print(
        f"wrote {args.out}/ (scalars/, vectors/, summary.json, report.html, compare.json) in "
        f"{round(time.perf_counter() - start, 1)} s"
    )
    return 0


@_command("compare")
def _compare(args: argparse.Namespace) -> int:
    import ascale

    task = args.task or "data"
    args.sites = args.sites or ("heads" if task == "ioi" else "attn_out,mlp_out")
    args.positions = args.positions or ("-1" if task == "ioi" else "all")
    model = ascale.load_model(args.model)
    methods = ["scalars", "vectors"] if args.vectors else ["scalars"]
    ivs = {m: _make_intervention(model, m, args) for m in methods}
    train, test = _load_split(args, model)
    table = {
        m: _fit_one(model, iv, train, test, args, args.out / m)["test"] for m, iv in ivs.items()
    }
    _print_table(table, title=f"{task} test split")
    _localise(model, ivs, test, task, table, args.out, args.patch_n, args.k, args.direction)
    print(f"wrote {args.out}/report.html and {args.out}/compare.json")
    return 0


def _localise(
    model: Any,
    interventions: dict[str, Any],
    data: Any,
    task: str,
    metrics: dict[str, Any],
    out: Path,
    patch_n: int,
    k: int,
    direction: str = "noising",
) -> None:
    """Rank the interventions' components, patch the same grid, compare, write the report."""
    import ascale

    clean = data.subset(range(min(patch_n, len(data))))
    corrupt = {"ccc": ascale.tasks.ccc_corrupt, "ioi": ascale.tasks.ioi_corrupt}.get(task)
    corrupted = corrupt(clean, model) if corrupt else None  # a jsonl file: mean-ablation
    grid = interventions["scalars"]
    rankings = {
        m: ascale.rank_components(iv, model=model, data=clean) for m, iv in interventions.items()
    }
    opts = {"like": grid, "direction": direction}
    rankings["activation_patching"] = ascale.activation_patching(model, clean, corrupted, **opts)
    rankings["attribution_patching"] = ascale.attribution_patching(model, clean, corrupted, **opts)
    agree = ascale.agreement(rankings, k=k)
    cumulative = [ascale.cumulative_effect(model, iv, data) for iv in interventions.values()]
    description = (
        f"{model.cfg.model_name}, task {task}: {len(data)} test prompts of {data.n_pos} tokens "
        f"(e.g. {data.prompts[0]!r} -> {data.correct[0]!r} vs {data.wrong[0]!r}); patching on "
        f"{len(clean)} of them, "
        + (f"{direction} with corrupted prompts." if corrupted else "mean-ablation.")
    )
    ascale.write_report(
        out,
        rankings,
        agreement=agree,
        metrics=metrics,
        cumulative=cumulative,
        title=f"ascale: where do the scalars act? ({task})",
        description=description,
    )
    top = {
        m: [f"{c} {t!r}" for c, t in r.top(k)[["component", "token"]].itertuples(index=False)]
        for m, r in rankings.items()
    }
    kept = {
        c.method: c.to_frame()[["flip_kept_forward", "flip_kept_backward"]]
        .round(4)
        .to_dict("index")
        for c in cumulative
    }
    _write_json(out / "compare.json", {**agree.to_dict(), "top_k": top, "flip_kept": kept})
    print(agree.to_frame().round(3).to_string(index=False))


def _demo_options(args: argparse.Namespace) -> argparse.Namespace:
    """The `fit` command's defaults (one source of truth), with the demo's steps and seed."""
    argv = ["fit", "--task", "ccc", "--out", str(args.out), "--steps", str(args.steps)]
    return build_parser().parse_args([*argv, "--seed", str(args.seed)])


# ---- helpers ----


def _load_split(args: argparse.Namespace, model: Any) -> tuple[Any, Any]:
    import ascale

    if args.data is not None:
        data = ascale.load_jsonl(args.data, model)
    else:
        data = getattr(ascale.tasks, args.task)(model, n=args.n, seed=args.seed)
    return data.split(test_size=args.test_size, seed=args.seed)


def _make_intervention(model: Any, method: str, args: argparse.Namespace) -> Any:
    from ascale.interventions import METHODS

    layers = None if args.layers is None else [int(x) for x in str(args.layers).split(",")]
    positions: Any = args.positions
    if positions not in ("all", "shared"):
        positions = [int(x) for x in str(positions).split(",")]
    if method == "dynamic":  # not tied to positions: any prompt length
        from ascale.interventions import DynamicScalars

        detach = bool(getattr(args, "detach_input", False))
        return DynamicScalars(model, sites=args.sites, layers=layers, detach_input=detach)
    return METHODS[method](model, sites=args.sites, layers=layers, positions=positions)


def _fit_one(
    model: Any, intervention: Any, train: Any, test: Any, args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    import ascale

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
        early_stop=not args.no_early_stop,
    )
    metrics = {
        "train": ascale.evaluate(model, intervention, train).to_dict(),
        "test": ascale.evaluate(model, intervention, test).to_dict(),
    }
    hyper = {**result.settings, **vars(objective), "sites": args.sites, "positions": args.positions}
    ascale.save(
        intervention,
        out,
        metadata={
            "hyperparameters": hyper,
            "fit": {
                "steps_run": result.steps_run,
                "stopped_early": result.stopped_early,
                "wall_time_s": round(result.wall_time_s, 2),
            },
        },
    )
    _write_json(out / "metrics.json", metrics)
    _write_json(out / "history.json", result.history)
    train.to_jsonl(out / "train.jsonl")
    test.to_jsonl(out / "test.jsonl")
    return metrics


def _loadable(model_name: str) -> str | None:
    from ascale.models import DEFAULT_MODEL

    return None if model_name == DEFAULT_MODEL else model_name


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


ROWS = (
    ("flip rate, beta=+1", "flip_rate_forward", "{:.2f}"),
    ("flip rate, beta=-1", "flip_rate_backward", "{:.2f}"),
    ("logit diff, beta=+1", "logit_diff_forward", "{:+.2f}"),
    ("logit diff, beta=-1", "logit_diff_backward", "{:+.2f}"),
    ("logit diff, clean", "logit_diff_clean", "{:+.2f}"),
    ("faithfulness KL", "faithfulness_kl", "{:.4f}"),
    ("parameters", "n_params", "{:,}"),
    ("active (>0.01)", "n_active", "{:,}"),
    ("L1", "l1", "{:.3g}"),
)


def _print_table(columns: dict[str, dict[str, Any]], title: str) -> None:
    names = list(columns)
    print(f"\n{title}")
    print(f"{'':22}" + "".join(f"{n:>14}" for n in names))
    for label, key, fmt in ROWS:
        print(f"{label:22}" + "".join(f"{fmt.format(columns[n][key]):>14}" for n in names))
    print()


if __name__ == "__main__":
    raise SystemExit(main())
