"""The ``ascale`` command's options: every value checked as it is parsed (`ascale.cli._values`).

A malformed value is an argparse error in one line (status 2), naming the option, the value and
what would be valid; nothing has been loaded or written by then.
"""

import argparse
import inspect
import re
from pathlib import Path
from typing import Any, NoReturn

from ascale.analysis.compare_methods import METHODS as COMPARE_METHODS
from ascale.analysis.edge_compare import EDGE_METHODS
from ascale.analysis.sweep import sweep
from ascale.cli._values import (
    FINITE,
    NON_NEGATIVE,
    POSITIVE,
    SHARE,
    UNIT,
    device_map,
    device_name,
    layer_list,
    list_of,
    method_names,
    position_list,
    prompt_text,
    site_list,
    whole,
)
from ascale.interventions import ABLATIONS, steering_methods
from ascale.interventions import METHODS as FIT_METHODS
from ascale.training.objective import Objective
from ascale.training.optim import SPARSITY

__all__ = ["build_parser"]

#: `ascale compare`'s methods unless --methods says otherwise (``--level edges``: `EDGE_METHODS`)
COMPARE_DEFAULT = "scalars,circuit,activation_patching,attribution_patching,random"
#: ``--level edges``: prompts per split at most unless --edge-n says otherwise
EDGE_N = 32
#: the objective's defaults, which the flags show and pass on
_OBJECTIVE = Objective()
#: `ascale.sweep`'s default lambda_min grid (one source of truth)
SWEEP_LAMBDA_MIN: tuple[float, ...] = inspect.signature(sweep).parameters["lambda_min"].default


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake reported in one line (no usage block), and a list of numbers
    that starts with a minus sign (``--beta -1,0,1``) taken as a value, not as an option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # argparse's own pattern knows single numbers only ("-1", "-0.5")
        self._negative_number_matcher = re.compile(r"^-\.?\d[\d.,eE+-]*$")

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``ascale COMMAND ...`` (``--debug`` goes before or after the command)."""
    parser = _Parser(
        prog="ascale",
        description="Learn activation scalars that steer a language model, and see where they act.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _fit_parser(sub.add_parser("fit", help="learn an intervention on a task or a jsonl file"))
    evaluate_help = "measure a saved intervention on a jsonl file"
    _evaluate_parser(sub.add_parser("evaluate", help=evaluate_help))
    demo_help = "the main job: scalars, vectors and circuits on CCC, in about two minutes"
    _demo_parser(sub.add_parser("demo", help=demo_help))
    _generate_parser(sub.add_parser("generate", help="generate text with a saved intervention"))
    compare_help = "rank components by scalars and patching, score each as a circuit: report.html"
    _compare_parser(sub.add_parser("compare", aliases=["report"], help=compare_help))
    sweep_help = "fit over a grid of lambda_min: effectiveness vs minimality and faithfulness"
    _sweep_parser(sub.add_parser("sweep", help=sweep_help))
    for p in {id(p): p for p in sub.choices.values()}.values():  # `ascale fit ... --debug`
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="")
    return parser


# ---- shared options ----


def _data_options(p: argparse.ArgumentParser, test_size: float = 0.3) -> None:
    p.add_argument("--model", default=None, help="model name or path (default: embedded SmolLM2)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", choices=["ccc", "ioi"], help="a built-in task")
    source.add_argument(
        "--data", type=Path, help="jsonl file of {prompt, correct, wrong[, corrupted]} rows"
    )
    p.add_argument("--n", type=whole(2), default=200, help="prompts to build for --task (200)")
    p.add_argument(
        "--test-size", type=SHARE, default=test_size, help=f"test share (default {test_size})"
    )
    p.add_argument("--seed", type=whole(), default=0, help="seed for data, split and batches")
    _placement_options(p)


def _placement_options(p: argparse.ArgumentParser) -> None:
    """Where the model runs and in what precision (every command that loads a model)."""
    from ascale.loading import DTYPES

    place = p.add_mutually_exclusive_group()
    place.add_argument(
        "--device",
        type=device_name,
        default="cpu",
        help="'cpu' (default), 'cuda', 'cuda:N', 'mps'; under torchrun 'cuda' is each "
        "process's own GPU (LOCAL_RANK)",
    )
    place.add_argument(
        "--device-map",
        type=device_map,
        default=None,
        help="split the model over devices through Accelerate: 'auto', 'balanced' or a JSON "
        "object of module name -> device",
    )
    p.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default="float32",
        help="the model's dtype (default float32); interventions and the loss stay float32",
    )


def _out_options(p: argparse.ArgumentParser, required: bool = True) -> None:
    kwargs: dict[str, Any] = {"required": True} if required else {"default": None}
    p.add_argument("--out", type=Path, help="output folder (new or empty)", **kwargs)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the files of an earlier run in --out (never mixed, never over an input)",
    )


def _grid_options(p: argparse.ArgumentParser, per_task: bool = False, auto: bool = False) -> None:
    """`auto`: ``--positions auto`` (fit's choice, `ascale.training.positions`); else ``all``."""
    positions_default = "auto" if auto else "all"
    sites, positions = (
        (" (default: ioi heads, else attn_out,mlp_out)", " (default: ioi -1, else all)")
        if per_task
        else (" (default attn_out,mlp_out)", f" (default {positions_default})")
    )
    sites = "comma-separated sites or hooks" + sites
    p.add_argument("--sites", type=site_list, default="attn_out,mlp_out", help=sites)
    p.add_argument("--layers", type=layer_list, default=None, help="e.g. '0,1,-1' (default: all)")
    p.add_argument(
        "--positions",
        type=position_list,
        default=positions_default,
        help="'auto' (fit: the last positions), 'all', 'shared', '-1,-2'" + positions,
    )


def _fit_settings(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=whole(1), default=None, help="maximum optimiser steps")
    p.add_argument("--lr", type=POSITIVE, default=None, help="learning rate (cosine decay)")
    p.add_argument("--batch-size", type=whole(1), default=None, help="prompts a step")
    p.add_argument("--no-early-stop", action="store_true", help="always run every step")
    settle = "steps after the flip target is reached (default: as many as reaching it took)"
    p.add_argument("--settle", type=whole(0), default=None, help=settle)


def _train_options(p: argparse.ArgumentParser) -> None:
    _grid_options(p, auto=True)
    _fit_settings(p)
    p.add_argument("--margin", type=NON_NEGATIVE, default=_OBJECTIVE.margin)
    p.add_argument("--lambda-faith", type=NON_NEGATIVE, default=_OBJECTIVE.lambda_faith)
    p.add_argument("--lambda-min", type=NON_NEGATIVE, default=_OBJECTIVE.lambda_min)
    _sparsity_option(p)


def _sparsity_option(p: argparse.ArgumentParser) -> None:
    """``--sparsity`` (``fit`` and ``sweep``; ``compare``'s fits keep their method's own)."""
    p.add_argument(
        "--sparsity",
        choices=SPARSITY,
        default=None,
        help="'proximal': the L1 term as a soft-threshold, exact zeros (default: the method's)",
    )


# ---- commands ----


def _fit_parser(p: argparse.ArgumentParser) -> None:
    _data_options(p)
    p.add_argument("--method", choices=sorted(FIT_METHODS), default="scalars")
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
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _placement_options(p)
    p.set_defaults(command="evaluate")


def _compare_parser(p: argparse.ArgumentParser) -> None:
    _data_options(p, test_size=0.5)
    p.add_argument(
        "--level",
        choices=["nodes", "edges"],
        default="nodes",
        help="rank components (nodes, default) or the edges of MIB's graph (edges)",
    )
    edge_methods = ", ".join(EDGE_METHODS)
    listed = f"{', '.join(COMPARE_METHODS)} (nodes); {edge_methods} (--level edges)"
    p.add_argument(
        "--methods",
        "--method",
        dest="methods",
        type=method_names(list(dict.fromkeys([*COMPARE_METHODS, *EDGE_METHODS])), listed),
        default=None,
        help=f"comma-separated, of {', '.join(COMPARE_METHODS)} (default {COMPARE_DEFAULT}); "
        f"--level edges: of {edge_methods} (default all)",
    )
    p.add_argument(
        "--edge-n",
        type=whole(2),
        default=None,
        help=f"--level edges: prompts per split at most (default {EDGE_N}; edges cost more)",
    )
    p.add_argument(
        "--mib-binary",
        action="store_true",
        help="--level edges: also write each ranking's circuits at MIB's fractions as binary "
        "MIB graph files, mib/<method>/abs-False/ (signed order) and abs-True/ (absolute)",
    )
    p.add_argument("--vectors", action="store_true", help="also rank steering vectors")
    _grid_options(p, per_task=True)
    _fit_settings(p)
    # None: the method's own setting (scalars: the sparse map, `compare_methods.SPARSE_MAP`)
    for flag in ("--margin", "--lambda-faith", "--lambda-min"):
        p.add_argument(flag, type=NON_NEGATIVE, default=None, help="default: the method's")
    # None: per task (CCC and --data attn_out,mlp_out at all positions; IOI heads at the last)
    p.set_defaults(sites=None, positions=None, command="compare")
    p.add_argument(
        "--ablation",
        choices=ABLATIONS,
        default=None,
        help="what replaces a component (--level edges: what an edge carries) outside a "
        "circuit (default: counterfactual when there are corrupted prompts, else mean; "
        "--level edges: counterfactual)",
    )
    p.add_argument("--patch-n", type=whole(1), default=16, help="prompts to patch (default 16)")
    p.add_argument("--k", type=whole(1), default=10, help="k of the top-k overlap (default 10)")
    p.add_argument(
        "--refit",
        type=list_of(whole(1), "circuit sizes such as '10' or '5,10,20'"),
        default=[],
        help="refit scalars on only their top k components, for each k given (e.g. '10')",
    )
    _out_options(p)
    node_only = ["vectors", "sites", "layers", "positions", "lr", "no_early_stop", "settle"]
    node_only += ["margin", "lambda_faith", "lambda_min", "patch_n", "k", "refit"]
    # what --level edges refuses when given (differs from its default), read by
    # `ascale.cli._compare_edges`
    p.set_defaults(node_only={name: p.get_default(name) for name in node_only})


def _sweep_parser(p: argparse.ArgumentParser) -> None:
    _data_options(p)
    p.add_argument(
        "--method",
        "--methods",
        dest="methods",
        type=method_names(steering_methods()),
        default=["scalars", "vectors"],
        help=f"comma-separated, of {', '.join(steering_methods())} (default scalars,vectors)",
    )
    floats = list_of(NON_NEGATIVE, "comma-separated numbers of 0 or more, such as '1e-3,0.1'")
    default_grid = ",".join(f"{x:g}" for x in SWEEP_LAMBDA_MIN)
    p.add_argument(
        "--lambda-min",
        type=floats,
        default=list(SWEEP_LAMBDA_MIN),
        help=f"comma-separated L1 weights (default {default_grid})",
    )
    p.add_argument(
        "--lambda-faith",
        type=floats,
        default=[_OBJECTIVE.lambda_faith],
        help=f"comma-separated KL weights (default {_OBJECTIVE.lambda_faith:g})",
    )
    p.add_argument("--margin", type=NON_NEGATIVE, default=_OBJECTIVE.margin)
    _grid_options(p)
    _fit_settings(p)
    _sparsity_option(p)
    _out_options(p)
    p.set_defaults(command="sweep")


def _generate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--intervention", type=Path, required=True, help="folder written by `fit`")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompt", type=prompt_text, help="the text to continue")
    given.add_argument(
        "--data",
        type=Path,
        help="jsonl rows with a 'prompt' (with 'correct' and 'wrong', the table says which "
        "answer each continuation starts with)",
    )
    p.add_argument(
        "--beta",
        type=list_of(FINITE, "finite numbers such as -1,0,1"),
        default=[1.0],
        help="the steering dial, or several: -1,0,1 (default 1)",
    )
    p.add_argument("--max-new-tokens", type=whole(1), default=20, help="default 20")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=POSITIVE, default=1.0, help="with --sample (default 1)")
    p.add_argument("--top-k", type=whole(1), default=None, help="with --sample")
    p.add_argument("--top-p", type=UNIT, default=None, help="with --sample, in (0, 1]")
    p.add_argument("--seed", type=whole(0), default=0, help="with --sample (default 0)")
    p.add_argument("--batch-size", type=whole(1), default=32, help="rows per batch (default 32)")
    p.add_argument("--model", default=None, help="default: the model it was trained on")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for generations.jsonl and report.html (the steered-vs-clean table)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    _placement_options(p)
    p.set_defaults(command="generate")


def _demo_parser(p: argparse.ArgumentParser) -> None:
    _out_options(p, required=False)
    p.add_argument("--steps", type=whole(1), default=None, help="maximum optimiser steps")
    p.add_argument("--n", type=whole(2), default=200, help="CCC prompts")
    p.add_argument("--seed", type=whole(), default=0)
    _placement_options(p)
    p.set_defaults(command="demo")
