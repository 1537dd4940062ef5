"""``ascale generate``: continue prompts with a saved intervention, at one ``beta`` or several.

One ``--prompt`` at one ``--beta`` prints the text, as ``ascale.generate`` returns it. Several
values of ``--beta``, or ``--data`` rows, print the steered-vs-clean table; with ``--out`` it
is also written as ``generations.jsonl`` (one row per prompt and ``beta``) and ``report.html``
(one row per prompt, one column per ``beta``).
"""

import argparse
from typing import Any

from ascale.cli._common import load_model, loadable


def generate_command(args: argparse.Namespace) -> int:
    import contextlib

    from ascale._rows import read_jsonl
    from ascale.cli._runfolder import RunFolder
    from ascale.io import read_metadata

    saved = read_metadata(args.intervention)  # a damaged or missing save: before the model
    rows = None if args.data is None else read_jsonl(args.data, flag="--data", fields=("prompt",))
    inputs = {"--data": args.data, "--intervention": args.intervention}
    folder: Any = (
        contextlib.nullcontext()
        if args.out is None
        else RunFolder(args.out, overwrite=args.overwrite, inputs=inputs)
    )
    with folder as run:  # --out checked and locked before the model loads
        model = load_model(args, args.model or loadable(saved["model"]["model_name"]))
        result = _generate(args, model, rows)
        if isinstance(result, str):
            print(result)
            return 0
        _print(result)
        if run is not None:
            _write(run.stage, args, result, saved)
    if run is not None:
        print(f"wrote {run.path}/ (generations.jsonl, report.html)")
    return 0


def _generate(args: argparse.Namespace, model: Any, rows: list[dict[str, Any]] | None) -> Any:
    """The text of one prompt at one beta (no --out), else the table of every prompt and beta."""
    import ascale

    one = args.prompt is not None and len(args.beta) == 1 and args.out is None
    prompts = args.prompt if one else [args.prompt]
    if rows is not None:
        prompts = _prompts(rows, model)
    intervention = ascale.load(args.intervention, model)
    return ascale.generate(
        model, intervention, prompts, beta=args.beta[0] if one else args.beta,
        max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, seed=args.seed, batch_size=args.batch_size,
        progress=not one,
    )  # fmt: skip


def _prompts(rows: list[dict[str, Any]], model: Any) -> Any:
    """A `ContrastSet` where every row has its answers (the table then marks them), else the
    rows' prompts."""
    from ascale.data import ContrastSet

    if all("correct" in row and "wrong" in row for row in rows):
        return ContrastSet.from_rows(rows, model)
    return [row["prompt"] for row in rows]


def _print(result: Any) -> None:
    for row in result.rows:
        mark = f" [{row.first}]" if row.first in ("correct", "wrong") else ""
        print(f"beta {row.beta:+g}{mark} | {row.prompt} | {row.text!r}")


def _write(stage: Any, args: argparse.Namespace, result: Any, saved: dict[str, Any]) -> None:
    import json

    import ascale

    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.to_records())
    (stage / "generations.jsonl").write_text(lines, encoding="utf-8")
    method = saved.get("method", "intervention")
    ascale.write_report(
        stage, generations=result, title=f"ascale generate: {method}",
        description=f"{method} from {args.intervention}, {len(result)} rows (prompts x beta), "
        f"at most {args.max_new_tokens} new tokens each.",
    )  # fmt: skip
