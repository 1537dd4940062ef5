"""Steered generation against Hugging Face ``generate`` with its KV cache, on the same weights.

The same CCC prompts (8, of 11 and 12 tokens; the same token ids, ascale's BOS included), the
same number of new tokens (end-of-text
ignored on both sides, so every row gets all of them), greedy, in one run: Hugging Face's
``generate`` on a ``LlamaForCausalLM`` loaded from the embedded model's folder (its default
attention), and ``ascale.generate`` with `DynamicScalars` on every ``attn_out`` and ``mlp_out``
(random probes, std 0.05: the cost does not depend on their values) and with no intervention.
Each prompt alone (8 calls) and the 8 in one call, at 32, 64 and 256 new tokens; each run twice,
the order of the three reversed the second time, the faster kept (machines drift). The yardstick
(``../shared/tools/floor_step.py``) is timed before and after; the load is recorded.

Also recorded: the share of prompts whose clean greedy tokens from ascale equal Hugging Face's
(the same function up to float rounding: the Bridge's weight processing), and the process's
peak memory after each setting.

Run: ``.venv/bin/python -m benchmarks generation [--new 32,64,256]``; writes
results/generation.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from typing import Any

import torch

from benchmarks import common


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new", default="32,64,256", help="new tokens, comma-separated")
    parser.add_argument("--n", type=int, default=8, help="prompts")
    parser.add_argument("--modes", default="batch,one", help="batch, one (each prompt alone)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, the fastest kept")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="generation")
    args = parser.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import ascale
    from ascale._tl._generate import left_padded
    from ascale.loading import embedded_folder

    load, before = common.start_timed(args.threads)
    model = ascale.load_model()
    folder = embedded_folder("smollm2-135m")
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    # every row gets all its new tokens, end-of-text a token like any other, on both sides
    # (min_new_tokens would instead forbid end-of-text, and change the text)
    hf.generation_config.eos_token_id = None
    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    prompts = list(ascale.tasks.ccc(model).prompts[: args.n])
    dyn = ascale.DynamicScalars(model, sites="attn_out,mlp_out")
    with torch.no_grad():
        for p in dyn.parameters():
            p.normal_(std=0.05, generator=torch.Generator().manual_seed(0))

    def run_hf(batch: list[str], new: int) -> list[list[int]]:
        # the token ids ascale feeds (its BOS included), left-padded as Hugging Face pads
        ids, mask = left_padded([model.to_tokens(p)[0] for p in batch], tokenizer.pad_token_id)
        with torch.no_grad():
            out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new,
                              do_sample=False, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        return out[:, ids.shape[1] :].tolist()

    def run_ascale(iv: Any, batch: list[str], new: int) -> list[list[int]]:
        table = ascale.generate(model, iv, batch, beta=[1.0], max_new_tokens=new,
                                stop_at_eos=False)  # fmt: skip
        return [list(r.tokens) for r in table.rows]

    runs = {
        "hf": lambda b, n: run_hf(b, n),
        "ascale_steered": lambda b, n: run_ascale(dyn, b, n),
        "ascale_clean": lambda b, n: run_ascale(None, b, n),
    }
    run_hf(prompts[:1], 2), run_ascale(dyn, prompts[:1], 2)  # warm-up
    rows, tokens = [], {}
    for new in [int(x) for x in args.new.split(",")]:
        for mode in args.modes.split(","):
            batches = [prompts] if mode == "batch" else [[p] for p in prompts]
            times: dict[str, list[float]] = {name: [] for name in runs}
            common.reset_peak_rss()  # the setting's own peak, not the loading's
            for repeat in range(args.repeats):  # the order reversed each time: drift cancels
                for name in list(runs) if repeat % 2 == 0 else list(runs)[::-1]:
                    t = time.perf_counter()
                    tokens[(new, mode, name)] = [row for b in batches for row in runs[name](b, new)]
                    times[name].append(time.perf_counter() - t)
            for name in runs:
                seconds = min(times[name])  # the least disturbed of the repeats
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
                rows.append({"new_tokens": new, "mode": mode, "method": name,
                             "seconds": round(seconds, 3),
                             "repeats_s": [round(x, 3) for x in times[name]],
                             "ms_per_new_token_step": round(1000 * seconds / new / len(batches), 2),
                             "peak_rss_gb": round(peak, 3),
                             "peak_rss_gb_during_setting": common.peak_rss_gb()})  # fmt: skip
                print(rows[-1], flush=True)
            load.append(os.getloadavg()[0])
    after = common.yardstick(args.threads)
    step = (before + after) / 2
    for row in rows:
        row["yardstick_steps"] = round(row["seconds"] / step, 2)
    payload = {
        "prompts": prompts,
        "rows": rows,
        "ratios": _ratios(rows),
        "per_token_growth_256_vs_32": _growth(rows),
        "clean_equals_hf": {
            f"{new}_{mode}": sum(
                a == b
                for a, b in zip(
                    tokens[(new, mode, "ascale_clean")], tokens[(new, mode, "hf")], strict=True
                )
            )
            / len(prompts)
            for (new, mode, name) in tokens
            if name == "hf"
        },
        "batch_equals_one": {
            f"{new}_{name}": tokens[(new, "batch", name)] == tokens[(new, "one", name)]
            for (new, mode, name) in tokens
            if mode == "batch" and (new, "one", name) in tokens
        },
        "yardstick_s": {"before": before, "after": after},
        "load_1min": load,
        "settings": vars(args),
    }
    common.write_result(args.name, payload)
    print(payload["ratios"], payload["per_token_growth_256_vs_32"])
    return 0


def _ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """ascale's time over Hugging Face's, per setting and ascale run."""
    hf = {(r["new_tokens"], r["mode"]): r["seconds"] for r in rows if r["method"] == "hf"}
    return {
        f"{r['method']}_{r['mode']}_{r['new_tokens']}": round(
            r["seconds"] / hf[(r["new_tokens"], r["mode"])], 3
        )
        for r in rows
        if r["method"] != "hf"
    }


def _growth(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Time per new token at 256 over at 32, per method and mode (1.0: flat)."""
    per = {(r["method"], r["mode"], r["new_tokens"]): r["ms_per_new_token_step"] for r in rows}
    return {
        f"{m}_{mode}": round(per[(m, mode, 256)] / per[(m, mode, 32)], 3)
        for (m, mode, n) in per
        if n == 256 and (m, mode, 32) in per
    }


if __name__ == "__main__":
    raise SystemExit(main())
