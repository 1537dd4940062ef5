"""One entry point for the benchmark scripts: ``python -m benchmarks NAME [args]``.

Runs ``benchmarks/NAME.py``'s ``main(argv)`` with the remaining arguments, so
``python -m benchmarks step --wait`` is ``python -m benchmarks.step --wait``. Without a name, or
with ``--help``, lists the scripts and what each measures.
"""

import ast
import difflib
import importlib
import sys
from pathlib import Path

#: the runnable scripts (``floor``, ``setups`` and ``common`` are helpers they share)
SCRIPTS = (
    "answer_columns",
    "circuits",
    "compare_cost",
    "compile_cpu",
    "demo",
    "dynamic_generalisation",
    "fit_defaults",
    "gpu_step",
    "localisation",
    "localisation_cost",
    "memory",
    "paper_sizes",
    "peers",
    "plot",
    "precision",
    "prefix",
    "report_screenshot",
    "scaling",
    "step",
    "summary",
    "tradeoffs",
)


def usage() -> str:
    """The scripts, each with the first line of its docstring (read without importing it)."""
    here = Path(__file__).resolve().parent
    lines = ["usage: python -m benchmarks NAME [args]  (NAME --help for its arguments)", ""]
    for name in SCRIPTS:
        doc = ast.get_docstring(ast.parse((here / f"{name}.py").read_text(encoding="utf-8")))
        lines.append(f"  {name:24s}{doc.splitlines()[0] if doc else ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one benchmark script by name; its exit status is returned."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SCRIPTS:
        close = difflib.get_close_matches(name, SCRIPTS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        print(f"unknown benchmark {name!r}{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{name}")
    if argv is None:  # the script's --help and errors name the command that ran it
        sys.argv[0] = f"python -m benchmarks {name}"
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
