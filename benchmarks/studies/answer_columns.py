"""Right-padded batches: unembedding each length's answer column only, against every column.

Prompts of several lengths are right-padded, so their answers sit in different columns and the
``last_only`` shortcut (unembed the last column alone) does not apply. Before, `answer_logits`
unembedded every column (49,152 logits per position on SmolLM2) and picked each prompt's; now it
passes the distinct answer columns to Hugging Face's ``logits_to_keep`` (`_tl.run(...,
positions=...)`).

Measured: one dynamic-scalar training step (`_passes.step_terms` and its backward) on the
training split of ``benchmarks/data/pronouns_mixed.jsonl`` (34 prompts of 4-11 tokens, both
signs of beta: 68 rows), SmolLM2-135M fp32, the two versions called round-robin in one process
(`common.interleaved`); ``all_columns`` is the code before, restored by swapping
`_tl.run` for a wrapper that drops ``positions`` and indexes the full logits. The two must
give the same loss: the result file records both.

Run: ``.venv/bin/python -m benchmarks.studies.answer_columns [--rounds 5] [--threads 2]``; writes
``benchmarks/studies/results/answer_columns.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch

import ascale
from ascale import _tl
from ascale.training import _passes
from benchmarks import common

DATA = common.ROOT / "benchmarks" / "data" / "pronouns_mixed.jsonl"


def _all_columns(run: Any) -> Any:
    """`_tl.run` as before: every column unembedded, then the chosen ones picked."""

    def wrapped(*args: Any, positions: Any = None, **kwargs: Any) -> Any:
        logits = run(*args, **kwargs)
        return logits if positions is None else logits[:, positions.to(logits.device)]

    return wrapped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--wait", action="store_true", help="wait for a quiet machine first")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = common.wait_for_quiet() if args.wait else None
    load_start = os.getloadavg()

    model = ascale.load_model()
    data = ascale.load_jsonl(DATA, model)
    train, _ = data.split(test_size=0.3, seed=0)
    dynamic = ascale.DynamicScalars(model, sites="attn_out,mlp_out")
    with torch.no_grad():  # a probe away from the identity, as after some steps
        for p in dynamic.parameters():
            p.normal_(std=0.05, generator=torch.Generator().manual_seed(0))
    clean = _passes.clean_log_probs(model, train, len(train))
    objective = ascale.Objective()
    losses: dict[str, float] = {}
    run = _tl.run

    def step(name: str, runner: Any) -> float:
        _tl.run = runner
        try:
            start = time.perf_counter()
            terms = _passes.step_terms(model, dynamic, train, clean, objective)
            terms["loss"].backward()
            seconds = time.perf_counter() - start
        finally:
            _tl.run = run
        for p in dynamic.parameters():
            p.grad = None
        losses[name] = float(terms["loss"].detach())
        return seconds

    samples = common.interleaved(
        {
            "all_columns": lambda: step("all_columns", _all_columns(run)),
            "answer_columns": lambda: step("answer_columns", run),
        },
        rounds=args.rounds,
    )
    payload = {
        "description": __doc__.splitlines()[0],
        "data": {
            "file": DATA.name,
            "rows": len(train),
            "lengths": sorted(set(train.lengths.tolist())),
        },
        "threads": args.threads,
        "load_after_wait": load,
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "loss": losses,
        "seconds_per_step": {k: common.summary(v) for k, v in samples.items()},
        "ratio_to_all_columns": common.ratios(samples, "all_columns"),
        "paired_ratio_to_all_columns": common.paired_ratios(samples, "all_columns"),
    }
    common.write_result("answer_columns", payload, common.RECORD)
    print(payload["ratio_to_all_columns"], payload["loss"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
