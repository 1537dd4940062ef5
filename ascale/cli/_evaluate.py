"""``ascale evaluate``: measure a saved intervention on a jsonl file."""

import argparse

from ascale.cli._common import load_model, loadable, print_table


def evaluate_command(args: argparse.Namespace) -> int:
    import ascale
    from ascale._outputs import check_output_file, claim, write_json
    from ascale._rows import read_jsonl
    from ascale.data import ContrastSet
    from ascale.io import METADATA, TENSORS, read_metadata

    rows = read_jsonl(args.data, flag="--data")
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
