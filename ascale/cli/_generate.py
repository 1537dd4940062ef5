"""``ascale generate``: continue a prompt with a saved intervention."""

import argparse

from ascale.cli._common import load_model, loadable


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
