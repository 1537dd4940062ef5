"""One entry point for the benchmark scripts: ``python -m benchmarks NAME [args]``.

Runs the script's ``main(argv)`` with the remaining arguments, so ``python -m benchmarks step
--wait`` is ``python -m benchmarks.step --wait``. The scripts are found, not listed: every module
of ``benchmarks/`` (the maintained suite: re-run to check a claim, results in ``results/``),
``benchmarks/studies/`` (one-off studies, named ``studies.NAME``) and ``benchmarks/gpu/`` (GPU
one-offs, ``gpu.NAME``) that defines a top-level ``main``; the one-offs' results are the record,
``studies/results/``. Without a name, or with ``--help``, lists them and what each measures.
"""

import ast
import difflib
import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GROUPS = ("", "studies", "gpu")
TITLES = {"": "the maintained suite", "studies": "one-off studies", "gpu": "GPU one-offs"}


def _has_main(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body)


def scripts() -> dict[str, Path]:
    """Each runnable script's name (``step``, ``studies.fit_defaults``) and its file."""
    found = {}
    for group in GROUPS:
        for path in sorted((HERE / group).glob("*.py")):
            if not path.name.startswith("_") and _has_main(path):
                found[f"{group}.{path.stem}" if group else path.stem] = path
    return found


def usage() -> str:
    """The scripts, each with the first line of its docstring (read without importing it)."""
    lines = ["usage: python -m benchmarks NAME [args]  (NAME --help for its arguments)"]
    for group in GROUPS:
        lines += ["", f"{TITLES[group]}:"]
        for name, path in scripts().items():
            if name.rpartition(".")[0] == group:
                doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
                lines.append(f"  {name:32s}{doc.splitlines()[0] if doc else ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one benchmark script by name; its exit status is returned."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    name, rest, known = args[0], args[1:], scripts()
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        print(f"unknown benchmark {name!r}{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{name}")
    if argv is None:  # the script's --help and errors name the command that ran it
        sys.argv[0] = f"python -m benchmarks {name}"
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
