"""What the paper's model sizes cost: parameters, memory and time of one scalars training step.

GPT-2 small (124M), GPT2-XL (1.56B) and Pythia-1.4B, built from their published configurations
(transformers config classes, sizes from the models' ``config.json`` on the Hugging Face hub)
with **seeded random weights**: nothing is downloaded, and a step's time and memory do not depend
on the weight values. Each is loaded as `ascale.load_model` loads a model (a TransformerBridge in
compatibility mode, frozen, eval), and ``ascale.fit`` runs a scalars step (``attn_out`` and
``mlp_out``, every layer and position, random token ids of ``--tokens`` tokens, both signs of
beta in one batch, Adam) at ``--batch`` prompts.

Each (model, dtype) runs in a fresh process, so its memory is its own:

- ``peak_memory_mb``: on CUDA ``torch.cuda.max_memory_allocated`` over the steps (the model's
  weights included); on CPU the process's peak resident set (``ru_maxrss``), which includes
  building the model and Python itself;
- ``step_s``: median wall time of one optimiser step over ``--steps`` steps (after one warm-up
  step), measured by ``ascale.fit``;
- ``n_params``: the model's parameters, and ``n_scalars``: the intervention's.

Run: ``.venv/bin/python -m benchmarks.paper_sizes --device cpu --models gpt2-small`` (CPU; add
``--batch 1 --models gpt2-xl,pythia-1.4b`` for a single step of the large ones), or on a GPU
``python3 -m benchmarks.paper_sizes --device cuda --out $OUT``. Writes ``paper_sizes.json`` to
``--out`` (default ``benchmarks/results``), merging with the rows already there.
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

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import ascale
    from conftest import _tokenizer  # a small tokenizer: the step reads token ids only

    config = hf_config(name)
    config.architectures = [
        "GPT2LMHeadModel" if config.model_type == "gpt2" else "GPTNeoXForCausalLM"
    ]
    config.save_pretrained(folder)
    _tokenizer(folder)
    torch.manual_seed(0)
    torch_dtype = ascale.loading.parse_dtype(dtype)
    hf = AutoModelForCausalLM.from_config(config, dtype=torch_dtype).to(device)
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

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = build(name, device, dtype, Path(tmp), plain)
    built_s = time.perf_counter() - started
    n_params = sum(p.numel() for p in model.parameters())
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
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    options = {"batch_size": batch, "stop": "none", "progress": False}
    ascale.fit(model, scalars, data, steps=1, **options)  # warm-up
    times = []
    for _ in range(steps):
        times.append(ascale.fit(model, scalars, data, steps=1, **options).wall_time_s)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "model": name,
        "dtype": dtype,
        "device": device,
        "batch": batch,
        "tokens": tokens,
        "bridge": "plain" if plain else "compatibility mode",
        "n_params": published_params(name),
        "n_params_bridge": n_params,
        "n_scalars": scalars.n_params,
        "step_s": round(statistics.median(times), 3),
        "step_s_all": [round(t, 3) for t in times],
        "peak_memory_mb": round(peak, 1),
        "memory_kind": "cuda max_memory_allocated" if device.startswith("cuda") else "peak RSS",
        "build_s": round(built_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default="gpt2-small,gpt2-xl,pythia-1.4b")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
    parser.add_argument("--out", type=Path, default=common.RESULTS)
    parser.add_argument(
        "--plain", action="store_true", help="the plain Bridge (compatibility_mode=False)"
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:  # the child process: one model and dtype, its row as JSON on the last line
        row = one(
            args.models, args.device, args.dtypes, args.batch, args.tokens, args.steps, args.plain
        )
        print(json.dumps(row))
        return 0
    out = args.out / "paper_sizes.json"
    old = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    runs = old.get("runs", [])
    for name in args.models.split(","):
        for dtype in args.dtypes.split(","):
            argv = [sys.executable, "-m", "benchmarks.paper_sizes", "--one", "--models", name]
            argv += ["--dtypes", dtype, "--device", args.device, "--batch", str(args.batch)]
            argv += ["--tokens", str(args.tokens), "--steps", str(args.steps)]
            argv += ["--plain"] if args.plain else []
            bridge = "plain" if args.plain else "compatibility mode"
            print(f"{name} {dtype} batch {args.batch} on {args.device} ...", flush=True)
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
                if done.returncode < 0:  # killed: -9 is the kernel's out-of-memory killer
                    tail = [f"killed by signal {-done.returncode}", *tail]
                row = {
                    "bridge": bridge,
                    "model": name,
                    "dtype": dtype,
                    "device": args.device,
                    "batch": args.batch,
                    "error": " ".join(tail),
                }
            else:
                row = json.loads(done.stdout.strip().splitlines()[-1])
                row.setdefault("n_params_bridge", row["n_params"])
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
        "what": "scalars training step (attn_out + mlp_out, all positions, both signs of beta) "
        "on the paper's model sizes built from published configs with random weights",
        "runs": runs,
    }
    # each run keeps the machine it ran on; the top-level `machine` is this (last) run's
    common.write_result(out.stem, payload, folder=args.out, device=args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
