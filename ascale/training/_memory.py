"""What a training step will hold for its backward pass, checked before it runs.

A step over prompts of thousands of tokens otherwise runs until the kernel kills the process.
`ascale.fit` calls `check_step_memory` before its first step.
"""

import torch

from ascale._types import Configured, HookedModel
from ascale.errors import AscaleError

__all__ = ["available_bytes", "check_step_memory", "step_bytes"]


def step_bytes(model: Configured, rows: int, n_pos: int, first_layer: int = 0) -> int:
    """About how many bytes a training step's forward pass keeps for the backward pass.

    Per row, position and block from `first_layer` on (the blocks below need no gradient, and
    with prefix reuse do not run): ``8 d_model + 3 d_mlp`` floats (residual stream, norms,
    attention and MLP inputs and outputs); per row, head and block, ``2 n_pos**2`` floats for
    eager attention (the pattern kept for the backward pass, and the scores beside it while a
    layer runs). On SmolLM2 (batch 32, 64 rows of 12 tokens, every layer) that is 869 MB against
    883 MB measured (``benchmarks/results/memory.json``); the attention term, which dominates
    long prompts, is not calibrated by that measurement.
    """
    cfg = model.cfg
    d_mlp = int(getattr(cfg, "d_mlp", None) or 4 * int(cfg.d_model))
    width = torch.finfo(getattr(cfg, "dtype", None) or torch.float32).bits // 8
    blocks = max(1, int(cfg.n_layers) - max(0, first_layer))
    per_token = 8 * int(cfg.d_model) + 3 * d_mlp
    attention = 2 * int(cfg.n_heads) * n_pos * n_pos
    return int(rows * blocks * (n_pos * per_token + attention) * width)


def available_bytes(model: HookedModel) -> int | None:
    """Memory free for a step on the model's device: the GPU's free memory, or Linux's
    ``MemAvailable``; ``None`` where it cannot be read."""
    device = torch.device(getattr(model.cfg, "device", None) or "cpu")
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_step_memory(
    model: HookedModel, rows_per_prompt: int, batch_size: int, n_pos: int, first_layer: int = 0
) -> None:
    """Raise `AscaleError` before a training step that would not fit in memory.

    A step over prompts of thousands of tokens otherwise runs until the kernel kills the
    process (a 3,000-token pair took 22 GB and died with no Python error).
    """
    free = available_bytes(model)
    need = step_bytes(model, rows_per_prompt * batch_size, n_pos, first_layer)
    if free is None or need <= free:
        return
    per_prompt = step_bytes(model, rows_per_prompt, n_pos, first_layer)
    fits = free // per_prompt
    advice = (
        f"lower batch_size to {fits}"
        if fits >= 1
        else "shorten the prompts (not one prompt of this length fits)"
    )
    raise AscaleError(
        f"a training step on {batch_size} prompts of {n_pos} tokens needs about "
        f"{need / 2**30:.1f} GiB for the backward pass, and {free / 2**30:.1f} GiB are free: "
        f"{advice}"
    )
