"""What the paper's model sizes cost: parameters, memory and time of one scalars training step.

GPT-2 small (124M), GPT2-XL (1.56B) and Pythia-1.4B, built from their published configurations
(transformers config classes, sizes from the models' ``config.json`` on the Hugging Face hub)
with **seeded random weights**: nothing is downloaded, and a step's time and memory do not depend
on the weight values. Each is loaded as `ascale.load_model` loads a model (a TransformerBridge in
compatibility mode, frozen, eval), and ``ascale.fit`` runs a scalars step (``attn_out`` and
``mlp_out``, every layer and position, random token ids of ``--tokens`` tokens, both signs of
beta in one batch, Adam) at ``--batch`` prompts.

Each model runs in a fresh process (its dtypes one after another, the first freed before the
next is built), so its memory is its own:

- ``peak_memory_mb``: on CUDA ``torch.cuda.max_memory_allocated`` over the steps (the model's
  weights included); on CPU the process's peak resident set (``ru_maxrss``), which includes
  building the model and Python itself;
- ``step_s``: median wall time of one optimiser step over ``--steps`` steps (after one warm-up
  step), measured by ``ascale.fit``;
- ``n_params``: the model's parameters, and ``n_scalars``: the intervention's.

Run: ``.venv/bin/python -m benchmarks.studies.paper_sizes --device cpu --models gpt2-small`` (CPU; add
``--batch 1 --models gpt2-xl,pythia-1.4b`` for a single step of the large ones), or on a GPU
``python3 -m benchmarks.studies.paper_sizes --device cuda --out $OUT``. Writes ``paper_sizes.json`` to
``--out`` (default ``benchmarks/studies/results``), merging with the rows already there.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import common

#: published sizes (the hub's config.json of gpt2, gpt2-xl, EleutherAI/pythia-1.4b)
CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2-small": {
        "kind": "gpt2",
        "n_layer": 12,
        "n_head": 12,
        "n_embd": 768,
        "n_positions": 1024,
        "vocab_size": 50257,
    },
    "gpt2-xl": {
        "kind": "gpt2",
        "n_layer": 48,
        "n_head": 25,
        "n_embd": 1600,
        "n_positions": 1024,
        "vocab_size": 50257,
    },
    "pythia-1.4b": {
        "kind": "gpt_neox",
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "max_position_embeddings": 2048,
        "rotary_pct": 0.25,
        "rotary_emb_base": 10000,
        "use_parallel_residual": True,
        "tie_word_embeddings": False,
        "vocab_size": 50304,
    },
}


def hf_config(name: str) -> Any:
    from transformers import GPT2Config, GPTNeoXConfig

    sizes = dict(CONFIGS[name])
    kind = sizes.pop("kind")
    common_ids = {"bos_token_id": 0, "eos_token_id": 0}
    if kind == "gpt2":
        return GPT2Config(**sizes, **common_ids)
    return GPTNeoXConfig(**sizes, **common_ids)


def published_params(name: str) -> int:
    """The Hugging Face model's parameters (tied embeddings once), counted on the meta device.

    The Bridge's own count is larger: TransformerLens keeps split q/k/v copies of fused
    attention weights and, in compatibility mode, an untied unembedding.
    """
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(hf_config(name))
    return sum(p.numel() for p in hf.parameters())


def build(name: str, device: str, dtype: str, folder: Path, plain: bool = False) -> Any:
    """The model as `ascale.load_model` gives it, from its config with seeded random weights."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM

    import ascale
    from ascale.testing import (
        train_tokenizer as _tokenizer,  # a small tokenizer: the step reads token ids only
    )

    config = hf_config(name)
    config.architectures = [
        "GPT2LMHeadModel" if config.model_type == "gpt2" else "GPTNeoXForCausalLM"
    ]
    config.save_pretrained(folder)
    _tokenizer(folder)
    torch.manual_seed(0)
    torch_dtype = ascale.loading.parse_dtype(dtype)
    # initialised where it runs: a 1.5B-parameter random init on the host takes minutes
    with torch.device(device):
        hf = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    with ascale.loading.quiet():
        model = TransformerBridge.boot_transformers(
            str(folder), hf_model=hf, device=device, dtype=torch_dtype
        )
    model.cfg.model_name = name
    if not plain:  # as load_model does by default
        model.enable_compatibility_mode(disable_warnings=True)
    model.requires_grad_(False)
    model.eval()
    return model


def one(
    name: str, device: str, dtype: str, batch: int, tokens: int, steps: int, plain: bool
) -> dict[str, Any]:
    """Build one model and time its steps (run in a fresh process by `main`)."""
    import ascale

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = build(name, device, dtype, Path(tmp), plain)
    built_s = time.perf_counter() - started
    n_params = sum(p.numel() for p in model.parameters())
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    generator = torch.Generator().manual_seed(0)
    vocab = int(model.cfg.d_vocab)
    ids = torch.randint(1, vocab, (batch, tokens), generator=generator)
    answers = torch.randint(1, vocab, (2, batch), generator=generator)
    data = ascale.ContrastSet(
        prompts=tuple(f"prompt {i}" for i in range(batch)),
        correct=tuple("a" for _ in range(batch)),
        wrong=tuple("b" for _ in range(batch)),
        tokens=ids,
        lengths=torch.full((batch,), tokens),
        correct_ids=answers[0],
        wrong_ids=answers[1],
    )
    scalars = ascale.ActivationScalars(model, sites="attn_out,mlp_out", n_pos=tokens)
    options = {"batch_size": batch, "stop": "none", "progress": False}
    ascale.fit(model, scalars, data, steps=1, **options)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()  # the steps' peak, the resident weights included
    times = []
    for _ in range(steps):
        times.append(ascale.fit(model, scalars, data, steps=1, **options).wall_time_s)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    row = {
        "model": name,
        "dtype": dtype,
        "device": device,
        "batch": batch,
        "tokens": tokens,
        "bridge": "plain" if plain else "compatibility mode",
        "n_params": published_params(name),
        "n_params_bridge": n_params,
        "weights_mb_bridge": round(weights_mb, 1),
        "n_scalars": scalars.n_params,
        "step_s": round(statistics.median(times), 4),
        "step_s_all": [round(t, 4) for t in times],
        "peak_memory_mb": round(peak, 1),
        "memory_kind": "cuda max_memory_allocated over the timed steps"
        if device.startswith("cuda")
        else "peak RSS",
        "build_s": round(built_s, 1),
    }
    if device.startswith("cuda"):
        row["gpu"] = torch.cuda.get_device_name()
    del model, scalars
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default="gpt2-small,gpt2-xl,pythia-1.4b")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
    parser.add_argument("--out", type=Path, default=common.RECORD)
    parser.add_argument(
        "--plain", action="store_true", help="the plain Bridge (compatibility_mode=False)"
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds for each model's process"
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # the child process: one model, each dtype in turn, a JSON line per dtype
        for dtype in args.dtypes.split(","):
            try:
                row = one(
                    args.models, args.device, dtype, args.batch, args.tokens, args.steps, args.plain
                )
            except Exception as error:  # the next dtype still runs (a GPU out of memory, say)
                row = {"model": args.models, "dtype": dtype, "error": repr(error)[:500]}
            print("ROW " + json.dumps(row), flush=True)
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
        return 0
    out = args.out / "paper_sizes.json"
    old = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    runs = old.get("runs", [])
    bridge = "plain" if args.plain else "compatibility mode"
    for name in args.models.split(","):
        argv = [sys.executable, "-m", "benchmarks.studies.paper_sizes", "--one", "--models", name]
        argv += ["--dtypes", args.dtypes, "--device", args.device, "--batch", str(args.batch)]
        argv += ["--tokens", str(args.tokens), "--steps", str(args.steps)]
        argv += ["--plain"] if args.plain else []
        print(f"{name} {args.dtypes} batch {args.batch} on {args.device} ...", flush=True)
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, check=False, timeout=args.timeout
            )
            stdout, stderr, code = done.stdout, done.stderr, done.returncode
        except subprocess.TimeoutExpired as expired:
            stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else ""
            stderr, code = f"stopped after {args.timeout} s (--timeout)", -1
        rows = {
            r["dtype"]: r
            for r in (json.loads(line[4:]) for line in stdout.splitlines() if line[:4] == "ROW ")
        }
        for dtype in args.dtypes.split(","):
            row = rows.get(dtype)
            if row is None:  # the child died before this dtype's row
                tail = (stderr or stdout).strip().splitlines()[-1:]
                if code < 0 and "stopped after" not in stderr:  # -9: out-of-memory killer
                    tail = [f"killed by signal {-code}", *tail]
                row = {"model": name, "dtype": dtype, "error": " ".join(tail)}
            row = {**row, "bridge": bridge, "device": args.device, "batch": args.batch}
            row["n_params"] = published_params(name)
            print(json.dumps(row), flush=True)
            key = (name, dtype, args.device, args.batch, bridge)
            runs = [
                r
                for r in runs
                if (
                    r["model"],
                    r["dtype"],
                    r["device"],
                    r["batch"],
                    r.get("bridge", "compatibility mode"),
                )
                != key
            ]
            runs.append({**row, "machine": common.machine_info(args.device)})
        payload = {
            "what": "scalars training step (attn_out + mlp_out, all positions, both signs of "
            "beta) on the paper's model sizes built from published configs with random weights",
            "runs": runs,
        }
        # after each model, so a run stopped later keeps what finished; each run keeps the
        # machine it ran on, the top-level `machine` is the last run's
        common.write_result(out.stem, payload, folder=args.out, device=args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
