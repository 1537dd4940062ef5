"""Peer libraries doing the same trainable scaling: nnsight and pyvene, against the floor and ascale.

The same step as `benchmarks.step` (scalars on every head's z and every MLP output of SmolLM2,
position-tied, batch 32 CCC prompts, both signs of beta in one batch, the same loss, Adam), with
the scaling written the way each library's documentation does it:

- **nnsight**: ``LanguageModel(hf).trace(tokens)``, setting ``self_attn.o_proj.input`` (z, per
  head) and ``mlp.output`` inside the trace, layer by layer in execution order; the logits saved
  from ``model.output``; backward outside the trace.
- **pyvene**: an ``IntervenableModel`` with 60 representations (``head_attention_value_output``
  with unit ``h.pos``, ``mlp_output`` with unit ``pos``, every position), each a custom
  ``SourcelessIntervention`` + ``TrainableIntervention`` holding that layer's scalars.

Every configuration gets its own Hugging Face model instance (eager attention, logits at the last
position only) so hooks never leak between them. Before timing, each computes the loss and the
gradients at the same random scalars as the floor; the differences are recorded
(``equivalence``), so the ratios compare the same computation.

This needs nnsight and pyvene beside ascale: they live in ``benchmarks/.venv-peers`` (torch 2.13.0
CPU first, then ``pip install nnsight pyvene`` and ``pip install -e .``). Run from the repo root:
``benchmarks/.venv-peers/bin/python -m benchmarks.studies.peers``; writes studies/results/peers.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks import common
from benchmarks.floor import FloorScalars, FloorTrainer, load_hf

Factory = Callable[[Any, int], tuple[Any, nn.Module, Callable[[Tensor, Tensor], Tensor]]]


class Scalars(nn.Module):
    """The floor's parameter layout (``alpha_z [layer, pos, head]``, ``alpha_mlp [layer, pos]``)."""

    def __init__(self, n_layers: int, n_pos: int, n_heads: int) -> None:
        super().__init__()
        self.alpha_z = nn.Parameter(torch.zeros(n_layers, n_pos, n_heads))
        self.alpha_mlp = nn.Parameter(torch.zeros(n_layers, n_pos))

    def l1(self) -> Tensor:
        return self.alpha_z.abs().sum() + self.alpha_mlp.abs().sum()


def _keep(tokens: Tensor) -> Tensor:
    return torch.tensor([tokens.shape[1] - 1])


def nnsight_setup(hf: Any, n_pos: int) -> tuple[Any, nn.Module, Callable[[Tensor, Tensor], Tensor]]:
    from nnsight import LanguageModel
    from transformers import AutoTokenizer

    cfg = hf.config
    n_layers, n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
    d_head = cfg.hidden_size // n_heads
    lm = LanguageModel(hf, tokenizer=AutoTokenizer.from_pretrained(hf.name_or_path))
    scalars = Scalars(n_layers, n_pos, n_heads)

    def logits(tokens: Tensor, beta: Tensor) -> Tensor:
        b, p = tokens.shape
        with lm.trace(tokens, logits_to_keep=_keep(tokens)):
            for layer in range(n_layers):
                o_proj = lm.model.layers[layer].self_attn.o_proj
                z = o_proj.input.view(b, p, n_heads, d_head)
                scale = 1 + beta[:, None, None] * scalars.alpha_z[layer]
                o_proj.input = (z * scale[..., None]).reshape(b, p, n_heads * d_head)
                mlp = lm.model.layers[layer].mlp
                mlp.output = mlp.output * (
                    1 + beta[:, None, None] * scalars.alpha_mlp[layer][None, :, None]
                )
            out = lm.output.logits.save()
        return out[:, -1]

    return lm, scalars, logits


def pyvene_setup(hf: Any, n_pos: int) -> tuple[Any, nn.Module, Callable[[Tensor, Tensor], Tensor]]:
    import pyvene as pv

    cfg = hf.config
    n_layers, n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
    scalars = Scalars(n_layers, n_pos, n_heads)
    state: dict[str, Tensor] = {}

    class Scale(pv.SourcelessIntervention, pv.TrainableIntervention):
        """``base * (1 + beta * alpha)``; base is [b, pos, d] or [b, head, pos, d_head]."""

        def __init__(self, alpha: Callable[[], Tensor], **kwargs: Any) -> None:
            super().__init__(keep_last_dim=True, **kwargs)
            self.alpha = alpha

        def forward(self, base: Tensor, source: Any = None, subspaces: Any = None) -> Tensor:
            beta = state["beta"]
            alpha = self.alpha()
            if base.ndim == 4:  # [b, head, pos, d_head]; alpha [pos, head]
                return base * (1 + beta[:, None, None, None] * alpha.T[None, :, :, None])
            return base * (1 + beta[:, None, None] * alpha[None, :, None])

    reps = []
    for layer in range(n_layers):
        reps.append(
            {
                "layer": layer,
                "component": "head_attention_value_output",
                "unit": "h.pos",
                "intervention": Scale(lambda layer=layer: scalars.alpha_z[layer]),
            }
        )
        reps.append(
            {
                "layer": layer,
                "component": "mlp_output",
                "unit": "pos",
                "intervention": Scale(lambda layer=layer: scalars.alpha_mlp[layer]),
            }
        )
    model = pv.IntervenableModel(pv.IntervenableConfig(representations=reps), model=hf)
    model.disable_model_gradients()
    positions, heads = list(range(n_pos)), list(range(n_heads))

    def logits(tokens: Tensor, beta: Tensor) -> Tensor:
        state["beta"] = beta
        b = len(tokens)
        per_layer = [[[heads] * b, [positions] * b], [positions] * b]
        locations = {"sources->base": (None, per_layer * n_layers)}
        base = {"input_ids": tokens, "logits_to_keep": _keep(tokens)}
        _, out = model(base=base, unit_locations=locations)
        return out.logits[:, -1]

    return model, scalars, logits


class PeerTrainer(FloorTrainer):
    """The floor's training loop with a peer library's forward pass."""

    def __init__(self, forward: Callable[[Tensor, Tensor], Tensor], *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.forward = forward

    def logits(self, tokens: Tensor, beta: Tensor) -> Tensor:
        return self.forward(tokens, beta)


def equivalence(
    trainers: dict[str, FloorTrainer], bridge: Any, data: Any, index: Tensor, seed: int = 1
) -> dict[str, dict[str, float]]:
    """Loss and gradients of every configuration at the same random scalars, against the floor."""
    from benchmarks import setups

    floor = trainers["floor"].scalars
    gen = torch.Generator().manual_seed(seed)
    alphas = [0.2 * torch.randn(p.shape, generator=gen) for p in (floor.alpha_z, floor.alpha_mlp)]
    results: dict[str, tuple[Tensor, list[Tensor]]] = {}
    for name, trainer in trainers.items():
        params = [trainer.scalars.alpha_z, trainer.scalars.alpha_mlp]
        with torch.no_grad():
            for p, a in zip(params, alphas, strict=True):
                p.copy_(a)
        loss = trainer.loss(index)
        results[name] = (loss.detach(), list(torch.autograd.grad(loss, params)))
        with torch.no_grad():
            for p in params:
                p.zero_()
    results["ascale"] = setups.ascale_loss_and_grads(bridge, data, index, *alphas)
    ref_loss, ref_grads = results["floor"]
    return {
        name: {
            "loss": float(loss),
            "loss_abs_diff": float((loss - ref_loss).abs()),
            "grad_max_rel_diff": max(
                float((g - r).abs().max() / r.abs().max())
                for g, r in zip(grads, ref_grads, strict=True)
            ),
        }
        for name, (loss, grads) in results.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="steps per round and config")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n-prompts", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--peers", default="nnsight,pyvene")
    parser.add_argument("--wait", action="store_true", help="wait for a quiet machine first")
    parser.add_argument("--name", default="peers")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import ascale
    from benchmarks import setups

    folder = setups.smollm2_folder()
    bridge = ascale.load_model()
    data = setups.ccc_data(bridge, args.n_prompts)
    objective = ascale.Objective()
    common_kw = {
        "batch_size": args.batch,
        "margin": objective.margin,
        "lambda_faith": objective.lambda_faith,
        "lambda_min": objective.lambda_min,
        "last_only": True,
    }
    rows = (data.tokens, data.correct_ids, data.wrong_ids)
    floor_hf = load_hf(folder, "eager")
    trainers: dict[str, FloorTrainer] = {
        "floor": FloorTrainer(floor_hf, FloorScalars(floor_hf, data.n_pos), *rows, **common_kw)
    }
    status: dict[str, str] = {}
    setups_by_name: dict[str, Factory] = {"nnsight": nnsight_setup, "pyvene": pyvene_setup}
    for name in args.peers.split(","):
        try:
            hf = load_hf(folder, "eager")
            _, scalars, forward = setups_by_name[name](hf, data.n_pos)
            trainers[name] = PeerTrainer(forward, hf, scalars, *rows, **common_kw)
            status[name] = "ok"
        except Exception as err:  # a peer that cannot express it is reported, not fatal
            status[name] = f"failed: {type(err).__name__}: {err}"
            print(name, status[name], flush=True)
    check = equivalence(trainers, bridge, data, torch.arange(min(8, len(data))))
    print("equivalence", check, flush=True)

    def timed(trainer: FloorTrainer) -> Callable[[], float]:
        def run() -> float:
            start = time.perf_counter()
            for _ in range(args.steps):
                trainer.step()
            return (time.perf_counter() - start) / args.steps

        return run

    runners = {name: timed(t) for name, t in trainers.items()}
    runners["ascale"] = setups.ascale_runner(bridge, data, args.steps, args.batch)
    load = common.wait_for_quiet() if args.wait else None
    machine = common.machine_info()
    samples = common.interleaved(runners, rounds=args.rounds)
    medians = {n: statistics.median(v) for n, v in samples.items()}
    result = {
        "benchmark": "training step of the peers, seconds per step, same process as the floor",
        "machine": machine,
        "load_average_after_wait": load,
        "setup": {
            "n_pos": data.n_pos,
            "batch_prompts": args.batch,
            "rounds": args.rounds,
            "steps_per_round": args.steps,
        },
        "status": status,
        "equivalence": check,
        "seconds_per_step": {n: common.summary(v) for n, v in samples.items()},
        "ratio_to_floor": common.ratios(samples, "floor"),
        "paired_ratio_to_floor": common.paired_ratios(samples, "floor"),
        "ascale_over_peer": {
            n: medians["ascale"] / medians[n] for n in medians if n not in ("ascale", "floor")
        },
    }
    common.write_result(args.name, result, common.RECORD)
    for n, m in medians.items():
        print(f"{n:10s} {m:.3f} s  x{result['ratio_to_floor'][n]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
