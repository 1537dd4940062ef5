"""The ``ascale`` command: ``fit``, ``evaluate``, ``generate``, ... (``ascale COMMAND --help``).

Every command checks its inputs, options and output folder before it loads a model or trains:
a mistake exits with status 1 (2 for a malformed option) and one line, ``ascale CMD: error:
...``, naming the value and what would be valid; ``--debug`` shows the traceback instead.
Ctrl-C exits with status 130 and leaves earlier outputs as they were. Output folders are
written as a unit when the run succeeds (`ascale.outputs.RunFolder`): never over an input, never
mixed with an earlier run's files (``--overwrite`` replaces them), locked while a run writes.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["main"]

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ascale`` console script."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, or a malformed option (one line already printed)
        return int(done.code or 0)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    name = f"ascale {args.command}"
    try:
        with _warnings_as_lines(name):
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{name}: interrupted; earlier outputs are as they were", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        print(f"{name}: error: {_describe(err)}", file=sys.stderr)
        return 1


def _describe(err: Exception) -> str:
    """One line for an error: the message of ours and of the OS, more context for others."""
    from ascale.errors import AscaleError

    text = " ".join(str(err).split())
    if isinstance(err, (AscaleError, OSError)):
        return text
    return f"{type(err).__name__}: {text} (unexpected; rerun with --debug for the traceback)"


@contextlib.contextmanager
def _warnings_as_lines(name: str) -> Iterator[None]:
    """Show `AscaleWarning`s as one line each, ``ascale CMD: warning: ...``."""
    from ascale.errors import AscaleWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", AscaleWarning)
        show = warnings.showwarning

        def one_line(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
            if issubclass(category, AscaleWarning):
                print(f"{name}: warning: {message}", file=sys.stderr)
            else:
                show(message, category, *args, **kwargs)

        warnings.showwarning = one_line
        yield


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake reported in one line (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ascale",
        description="Learn activation scalars that steer a language model, and see where they act.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _fit_parser(sub.add_parser("fit", help="learn an intervention on a task or a jsonl file"))
    _evaluate_parser(
        sub.add_parser("evaluate", help="measure a saved intervention on a jsonl file")
    )
    _demo_parser(sub.add_parser("demo", help="the main job: scalars vs vectors on CCC"))
    _generate_parser(sub.add_parser("generate", help="generate text with a saved intervention"))
    compare_help = "learned scalars vs activation and attribution patching: report.html"
    _compare_parser(sub.add_parser("compare", aliases=["report"], help=compare_help))
    for p in {id(p): p for p in sub.choices.values()}.values():  # `ascale fit ... --debug`
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="")
    return parser


# ---- option values: checked as they are parsed ----


def _whole(minimum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or (minimum is not None and value < minimum):
            floor = "" if minimum is None else f" of {minimum} or more"
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number{floor}")
        return value

    return parse


def _real(what: str, ok: Callable[[float], bool] = lambda x: True) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def _layers(text: str) -> list[int]:
    return _ints(text, "comma-separated layer numbers, such as '0,1' or '-1'")


def _positions(text: str) -> str | list[int]:
    if text in ("all", "shared"):
        return text
    return _ints(text, "'all', 'shared' or comma-separated positions, such as '-1' or '0,-1'")


def _sites(text: str) -> str:
    from ascale.errors import closest
    from ascale.sites import SITE_HOOKS

    for name in (s.strip() for s in text.split(",")):
        if name not in SITE_HOOKS and not re.match(r"^blocks\.\d+\.", name):
            raise argparse.ArgumentTypeError(
                f"unknown site {name!r} in {text!r}; sites are {', '.join(sorted(SITE_HOOKS))} "
                f"or hook names like 'blocks.0.hook_mlp_out' (closest: "
                f"{closest(name, SITE_HOOKS)})"
            )
    return text


def _text(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("the prompt is empty; give the text to continue")
    return text


_POSITIVE = _real("a finite number above 0, such as 0.1", lambda x: x > 0)
_NON_NEGATIVE = _real("a finite number of 0 or more", lambda x: x >= 0)
_SHARE = _real("a share between 0 and 1 (both excluded), such as 0.3", lambda x: 0 < x < 1)
_FINITE = _real("a finite number, such as 1 or -0.5")


# ---- shared options ----


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model name or path (default: embedded SmolLM2)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", choices=["ccc", "ioi"], help="a built-in task")
    source.add_argument("--data", type=Path, help="jsonl file of {prompt, correct, wrong} rows")
    p.add_argument("--n", type=_whole(2), default=200, help="prompts to build for --task (200)")
    p.add_argument("--test-size", type=_SHARE, default=0.3, help="test share (default 0.3)")
    p.add_argument("--seed", type=_whole(), default=0, help="seed for data, split and batches")


def _out_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    kwargs: dict[str, Any] = {"required": True} if required else {"default": None}
    p.add_argument("--out", type=Path, help="output folder (new or empty)", **kwargs)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the files of an earlier run in --out (never mixed, never over an input)",
    )


def _train_options(p: argparse.ArgumentParser) -> None:
    sites_help = "comma-separated sites or hooks"
    p.add_argument("--sites", type=_sites, default="attn_out,mlp_out", help=sites_help)
    p.add_argument("--layers", type=_layers, default=None, help="e.g. '0,1,-1' (default: all)")
    p.add_argument("--positions", type=_positions, default="all", help="'all', 'shared', '-1,-2'")
    p.add_argument("--steps", type=_whole(1), default=None, help="maximum optimiser steps")
    p.add_argument("--lr", type=_POSITIVE, default=None, help="learning rate (cosine decay)")
    p.add_argument("--batch-size", type=_whole(1), default=None, help="prompts a step")
    p.add_argument("--margin", type=_NON_NEGATIVE, default=2.0)
    p.add_argument("--lambda-faith", type=_NON_NEGATIVE, default=1.0)
    p.add_argument("--lambda-min", type=_NON_NEGATIVE, default=1e-2)
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
    _out_options(p)
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
    p.add_argument("--patch-n", type=_whole(1), default=16, help="prompts to patch (default 16)")
    p.add_argument("--k", type=_whole(1), default=10, help="k of the top-k overlap (default 10)")
    p.add_argument("--direction", choices=["noising", "denoising"], default="noising")
    _out_options(p)


def _generate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--intervention", type=Path, required=True, help="folder written by `fit`")
    p.add_argument("--prompt", type=_text, required=True, help="the text to continue")
    p.add_argument("--beta", type=_FINITE, default=1.0, help="the steering dial (default 1.0)")
    p.add_argument("--max-new-tokens", type=_whole(1), default=20, help="default 20")
    p.add_argument("--model", default=None, help="default: the model it was trained on")
    p.set_defaults(command="generate")


def _demo_parser(p: argparse.ArgumentParser) -> None:
    _out_options(p, required=False)
    p.add_argument("--steps", type=_whole(1), default=None, help="maximum optimiser steps")
    p.add_argument("--n", type=_whole(2), default=200, help="CCC prompts")
    p.add_argument("--seed", type=_whole(), default=0)
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
    from ascale.outputs import RunFolder

    rows = _read_rows(args)
    with RunFolder(args.out, overwrite=args.overwrite, inputs={"--data": args.data}) as run:
        model = ascale.load_model(args.model)
        intervention = _make_intervention(model, args.method, args)  # bad sites: before work
        train, test = _load_split(args, model, rows, [intervention])
        metrics = _fit_one(model, intervention, train, test, args, run.stage)
    _print_table({args.method: metrics["test"]}, title=f"{args.method}, test split")
    print(f"wrote {run.path}/intervention.safetensors, intervention.json, metrics.json")
    return 0


@_command("generate")
def _generate(args: argparse.Namespace) -> int:
    import ascale
    from ascale.io import read_metadata

    saved = read_metadata(args.intervention)  # a damaged or missing save: before the model
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
    from ascale.data import ContrastSet, read_jsonl
    from ascale.io import METADATA, TENSORS, read_metadata
    from ascale.outputs import check_output_file, write_json

    rows = read_jsonl(args.data)
    saved = read_metadata(args.intervention)
    folder = args.intervention.expanduser()
    out = (args.out or folder / "eval.json").expanduser()
    inputs = [("--data", args.data), *(("--intervention", folder / f) for f in (METADATA, TENSORS))]
    check_output_file(out, inputs)
    model = ascale.load_model(args.model or _loadable(saved["model"]["model_name"]))
    intervention = ascale.load(folder, model)
    data = ContrastSet.from_rows(rows, model)
    metrics = ascale.evaluate(model, intervention, data)
    write_json(out, {"data": str(args.data), **metrics.to_dict()})
    print(metrics)
    print(f"wrote {out}")
    return 0


@_command("demo")
def _demo(args: argparse.Namespace) -> int:
    import ascale
    from ascale.outputs import RunFolder, write_json

    start = time.perf_counter()
    default = args.out is None  # ascale's own folder: a new demo replaces the previous one
    folder = RunFolder(
        Path("ascale-out/demo") if default else args.out,
        overwrite=args.overwrite or default,
        replace_any=default,
    )
    with folder as run:
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
            metrics = _fit_one(model, intervention, train, test, opts, run.stage / method)
            table[method] = metrics["test"]
        title = "CCC test split, SmolLM2-135M, sites attn_out+mlp_out, all positions"
        _print_table(table, title=title)
        summary = {"wall_time_s": round(time.perf_counter() - start, 1), "test": table}
        write_json(run.stage / "summary.json", summary)
        _localise(model, ivs, test, "ccc", table, run.stage, patch_n=8, k=10)  # ~2-4 min
    print(
        f"wrote {run.path}/ (scalars/, vectors/, summary.json, report.html, compare.json) in "
        f"{round(time.perf_counter() - start, 1)} s"
    )
    return 0


@_command("compare")
def _compare(args: argparse.Namespace) -> int:
    import ascale
    from ascale.outputs import RunFolder

    task = args.task or "data"
    args.sites = args.sites or ("heads" if task == "ioi" else "attn_out,mlp_out")
    args.positions = args.positions or ([-1] if task == "ioi" else "all")
    rows = _read_rows(args)
    with RunFolder(args.out, overwrite=args.overwrite, inputs={"--data": args.data}) as run:
        model = ascale.load_model(args.model)
        methods = ["scalars", "vectors"] if args.vectors else ["scalars"]
        ivs = {m: _make_intervention(model, m, args) for m in methods}
        train, test = _load_split(args, model, rows, list(ivs.values()))
        table = {
            m: _fit_one(model, iv, train, test, args, run.stage / m)["test"]
            for m, iv in ivs.items()
        }
        _print_table(table, title=f"{task} test split")
        _localise(model, ivs, test, task, table, run.stage, args.patch_n, args.k, args.direction)
    print(f"wrote {run.path}/report.html and {run.path}/compare.json")
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
    from ascale.outputs import write_json

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
    write_json(out / "compare.json", {**agree.to_dict(), "top_k": top, "flip_kept": kept})
    print(agree.to_frame().round(3).to_string(index=False))


def _demo_options(args: argparse.Namespace) -> argparse.Namespace:
    """The `fit` command's defaults (one source of truth), with the demo's steps and seed."""
    argv = ["fit", "--task", "ccc", "--out", "unused", "--seed", str(args.seed)]
    steps = [] if args.steps is None else ["--steps", str(args.steps)]
    return build_parser().parse_args([*argv, *steps])


# ---- helpers ----


def _read_rows(args: argparse.Namespace) -> list[dict[str, str]] | None:
    """The rows of ``--data``, checked before any model is loaded (``None`` for ``--task``)."""
    from ascale.data import read_jsonl

    return None if args.data is None else read_jsonl(args.data)


def _load_split(
    args: argparse.Namespace, model: Any, rows: list[dict[str, str]] | None, ivs: list[Any]
) -> tuple[Any, Any]:
    """The data, tokenised and split; one prompt length if an intervention needs one."""
    import ascale

    if rows is not None:
        data = ascale.ContrastSet.from_rows(rows, model)
    else:
        data = getattr(ascale.tasks, args.task)(model, n=args.n, seed=args.seed)
    if any(iv.position_tied for iv in ivs):
        _ = data.n_pos  # PromptLengthError now, not after training on the first split
    return data.split(test_size=args.test_size, seed=args.seed)


def _make_intervention(model: Any, method: str, args: argparse.Namespace) -> Any:
    from ascale.interventions import METHODS

    if method == "dynamic":  # not tied to positions: any prompt length
        from ascale.interventions import DynamicScalars

        detach = bool(getattr(args, "detach_input", False))
        return DynamicScalars(model, sites=args.sites, layers=args.layers, detach_input=detach)
    return METHODS[method](model, sites=args.sites, layers=args.layers, positions=args.positions)


def _fit_one(
    model: Any, intervention: Any, train: Any, test: Any, args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    import ascale
    from ascale.outputs import write_json

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
    write_json(out / "metrics.json", metrics)
    write_json(out / "history.json", result.history)
    train.to_jsonl(out / "train.jsonl")
    test.to_jsonl(out / "test.jsonl")
    return metrics


def _loadable(model_name: str) -> str | None:
    from ascale.models import DEFAULT_MODEL

    return None if model_name == DEFAULT_MODEL else model_name


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
