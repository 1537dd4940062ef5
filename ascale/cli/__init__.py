"""The ``ascale`` command: ``fit``, ``evaluate``, ``generate``, ``demo``, ``compare``, ``sweep``
(``ascale COMMAND --help``; ``docs/cli.md``).

Every command checks its inputs, options and output folder before it loads a model or trains:
a mistake exits with status 1 (2 for a malformed option) and one line, ``ascale CMD: error:
...``, naming the value and what would be valid; ``--debug`` shows the traceback instead.
Ctrl-C (SIGINT) and SIGTERM stop any command with one line and status 130 or 143: nothing of
the interrupted run is kept, earlier outputs are as they were (no lock or staging folder left;
SIGTERM is raised as `ascale.cli._signals.Terminated` so that cleanup runs). Output folders are
written as a unit when the run succeeds (`ascale.cli._runfolder.RunFolder`): never over an input, never
mixed with an earlier run's files (``--overwrite`` replaces them), locked while a run writes.

Modules: `_options` (the parser) and `_values` (its values' parsers), `_common` (data, the
command line's fit options, fitting one intervention, the metrics table), one module per command
(`_fit`, `_evaluate`, `_generate`, `_demo`, `_compare` with `_compare_edges` for ``--level
edges``, `_sweep`), and what only the command line needs: `_runfolder` (output folders written as
a unit) and `_signals` (SIGTERM as an exception, sections that hold signals).
"""

import argparse
import contextlib
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ascale.cli._compare import compare_command
from ascale.cli._demo import demo_command
from ascale.cli._evaluate import evaluate_command
from ascale.cli._fit import fit_command
from ascale.cli._generate import generate_command
from ascale.cli._options import build_parser
from ascale.cli._signals import Terminated, terminate_raises
from ascale.cli._sweep import sweep_command

__all__ = ["build_parser", "main"]

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "fit": fit_command,
    "evaluate": evaluate_command,
    "generate": generate_command,
    "demo": demo_command,
    "compare": compare_command,
    "sweep": sweep_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ascale`` console script (and of ``python -m ascale``)."""
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
        with terminate_raises(), _warnings_as_lines(name), _processes(args) as rank:
            name += "" if rank is None else f" (rank {rank})"
            return COMMANDS[args.command](args)
    except (KeyboardInterrupt, Terminated) as stop:
        if args.debug:
            raise
        signum = stop.signum if isinstance(stop, Terminated) else signal.SIGINT
        what = signal.Signals(signum).name
        print(f"{name}: interrupted ({what}); earlier outputs are as they were", file=sys.stderr)
        return 128 + signum
    except Exception as err:
        if args.debug:
            raise
        print(f"{name}: error: {_describe(err)}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _processes(args: argparse.Namespace) -> Iterator[int | None]:
    """Under torchrun: join the process group for the command (its rank), leave it after."""
    from ascale import distributed

    if not distributed.launched():
        yield None
        return
    distributed.check_launch(args.command)
    distributed.init(getattr(args, "device", "cpu"))
    try:
        yield int(os.environ.get("RANK", "0"))
    finally:
        distributed.close()


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
