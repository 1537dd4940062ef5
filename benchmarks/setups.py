"""Building the configurations that the step, memory and scaling benchmarks time.

Each ``*_runner`` returns a callable that trains for ``k`` steps and returns seconds per step:

- ``ascale``: ``ascale.fit(model, scalars, data, steps=k)``, timed by fit's own ``wall_time_s``
  (which starts after the once-per-fit setup, the clean forward pass); everything fit does per
  step is inside it (batch selection, hooks, forward, loss, backward, Adam, history).
- ``floor``: `benchmarks.floor.FloorTrainer` on a plain Hugging Face ``LlamaForCausalLM``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

import ascale
from ascale.loading import embedded_folder
from ascale.training import _passes
from benchmarks.floor import FloorScalars, FloorTrainer, load_hf

Runner = Callable[[], float]

# sites of the benchmark: every head's z and every MLP output
ALL_SITES = "heads,mlp_out"


def smollm2_folder() -> str:
    """The cached fp32 SmolLM2 folder that ``ascale.load_model()`` boots from."""
    return str(embedded_folder("smollm2-135m"))


def ccc_data(model: Any, n: int, prefix_repeats: int = 0) -> ascale.ContrastSet:
    """`n` CCC prompts of one token length, optionally lengthened by a neutral prefix.

    ``prefix_repeats > 0`` puts ``"The weather was mild that week. "`` that many times before
    each prompt (for the prompt-length scaling) and keeps the most common resulting length.
    """
    base = ascale.tasks.ccc(model, n=max(n, 200))
    if prefix_repeats:
        prefix = "The weather was mild that week. " * prefix_repeats
        rows = [{**r, "prompt": prefix + r["prompt"]} for r in base.rows()]
        base = ascale.ContrastSet.from_rows(rows, model)
        lengths = base.lengths.tolist()
        base = base.with_length(max(set(lengths), key=lengths.count))
    if len(base) < n:
        raise SystemExit(f"only {len(base)} prompts of one length, {n} needed")
    return base.subset(range(n))


def ascale_runner(
    model: Any, data: ascale.ContrastSet, k: int, batch_size: int, sites: str = ALL_SITES
) -> Runner:
    """``ascale.fit`` for `k` steps; seconds per step from fit's own wall time."""
    scalars = ascale.ActivationScalars(model, sites=sites, positions="all")

    def run() -> float:
        result = ascale.fit(
            model,
            scalars,
            data,
            steps=k,
            batch_size=batch_size,
            stop="none",
            progress=False,
        )
        return result.wall_time_s / result.steps_run

    return run


def ascale_loss_and_grads(
    model: Any,
    data: ascale.ContrastSet,
    index: torch.Tensor,
    alpha_z: torch.Tensor,
    alpha_mlp: torch.Tensor,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """ascale's loss on the prompts at `index` and its gradients, at the given scalars.

    Uses `ascale.training._passes.step_terms` (the loss of one training step) with all heads' and
    MLPs' scalars set to `alpha_z` ``[layer, pos, head]`` and `alpha_mlp` ``[layer, pos]``, the
    floor's layout: the floor and ascale must agree on both (the check in `benchmarks.step`).
    """
    scalars = ascale.ActivationScalars(model, sites=ALL_SITES, positions="all")
    scalars.bind(data.n_pos)
    with torch.no_grad():
        scalars.params["heads"].copy_(alpha_z)
        scalars.params["mlp_out"].copy_(alpha_mlp)
    clean = _passes.clean_log_probs(model, data, 32)
    terms = _passes.step_terms(model, scalars, data.subset(index), clean[index], ascale.Objective())
    params = [scalars.params["heads"], scalars.params["mlp_out"]]
    return terms["loss"].detach(), list(torch.autograd.grad(terms["loss"], params))


def floor_parts(sites: str, n_layers: int) -> dict[str, list[int]]:
    """ascale site names -> the floor's ``heads=`` / ``mlp=`` layer lists."""
    heads: list[int] = []
    mlp: list[int] = []
    for name in sites.split(","):
        name = name.strip()
        if name == "heads":
            heads = list(range(n_layers))
        elif name == "mlp_out":
            mlp = list(range(n_layers))
        elif name.startswith("blocks.") and name.endswith(".hook_mlp_out"):
            mlp.append(int(name.split(".")[1]))
        elif name.startswith("blocks.") and name.endswith(".attn.hook_z"):
            heads.append(int(name.split(".")[1]))
        else:
            raise ValueError(f"the floor has no site {name!r}")
    return {"heads": heads, "mlp": mlp}


def floor_runner(
    hf: Any,
    data: ascale.ContrastSet,
    k: int,
    batch_size: int,
    *,
    last_only: bool,
    sites: str = ALL_SITES,
) -> Runner:
    """The hand-written floor for `k` steps; seconds per step."""
    parts = floor_parts(sites, hf.config.num_hidden_layers)
    objective = ascale.Objective()
    trainer = FloorTrainer(
        hf,
        FloorScalars(hf, data.n_pos, **parts),
        data.tokens,
        data.correct_ids,
        data.wrong_ids,
        batch_size=batch_size,
        margin=objective.margin,
        lambda_faith=objective.lambda_faith,
        lambda_min=objective.lambda_min,
        last_only=last_only,
    )

    def run() -> float:
        start = time.perf_counter()
        for _ in range(k):
            trainer.step()
        return (time.perf_counter() - start) / k

    run.trainer = trainer  # type: ignore[attr-defined]  # to remove its hooks when done
    return run


def forward_runner(model: Any, tokens: torch.Tensor, k: int, hf: bool) -> Runner:
    """A no-hook forward pass (no grad, full logits), `k` times; seconds per pass."""

    def run() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for _ in range(k):
                model(input_ids=tokens) if hf else model(tokens)
        return (time.perf_counter() - start) / k

    return run


def load_all(plain_bridge: bool = True, sdpa: bool = True) -> dict[str, Any]:
    """The models compared: Bridge (compatibility mode, and plain), HF eager (and sdpa)."""
    folder = smollm2_folder()
    models = {"bridge": ascale.load_model(), "hf_eager": load_hf(folder, "eager")}
    if plain_bridge:
        models["bridge_plain"] = ascale.load_model(compatibility_mode=False)
    if sdpa:
        models["hf_sdpa"] = load_hf(folder, "sdpa")
    return models
