"""A captured training step (CUDA graphs): the floor's and ascale's, against the eager floor.

The step of `benchmarks.gpu.step` (scalars on every head's z and MLP output for the floor,
``heads,mlp_out`` for ascale; both signs of beta in one batch; Adam) is recorded once as a CUDA
graph (``torch.cuda.graph``: forward, loss, backward and ``Adam(capturable=True)``) and replayed,
reading the loss back each step (one synchronisation a step, as the eager floor's
``float(loss)``). Here the whole set is one batch, so the graph's inputs stay those it was recorded
with; a fit over several batches would also copy each batch into them (a few copies a step, not
measured). A recorded step launches no Python and no per-kernel work from the host: what the
eager step spends in Python and launches is gone.

ascale's step is `ascale.training._passes`'s own code (`answer_logits` through the Bridge and the
intervention's hooks, `ascale.training.objective`), on a batch whose tensors already sit on the device
(``stack_twice`` done once, outside the graph). Whether TransformerLens' Bridge can be recorded
at all is what this measures; a failure is recorded with its traceback.

Correctness: the first replay's loss against the eager loss of the same batch and parameters.

Run: ``python3 -m benchmarks.gpu.capture --device cuda --out $OUT``; on CPU (``--device cpu``)
the static steps run eagerly (no graphs) and only their losses are checked. Writes
``gpu_capture.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks import common
from benchmarks.floor import FloorScalars, FloorTrainer, load_hf, objective
from benchmarks.gpu.step import (
    _stub_datasets,
    ascale_run,
    device_options,
    floor_run,
    model_folder,
)


class Captured:
    """One training step recorded as a CUDA graph (or, off CUDA, run eagerly on the same
    static buffers): `loss_fn` reads only the static inputs and returns the loss."""

    def __init__(
        self, loss_fn: Callable[[], Tensor], params: list[Tensor], lr: float, device: str
    ) -> None:
        self.cuda = device.startswith("cuda")
        self.loss_fn, self.params = loss_fn, params
        self.optimizer = torch.optim.Adam(params, lr=lr, capturable=self.cuda)
        self.graph: Any = None
        if not self.cuda:  # the same three warm-up steps, eagerly
            for _ in range(3):
                self._eager()
        else:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up on a side stream, as torch.cuda.graph asks
                for _ in range(3):
                    self._eager()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            self.optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(self.graph):
                self.static_loss = self.loss_fn()
                self.static_loss.backward()
                self.optimizer.step()

    def _eager(self) -> Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn()
        loss.backward()
        self.optimizer.step()
        return loss

    def step(self) -> float:
        if self.graph is None:
            return float(self._eager().detach())
        self.graph.replay()
        return float(self.static_loss.detach())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    device_options(parser)
    parser.add_argument("--batches", default="32,128")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--floor-attn",
        default="sdpa",
        help="the floor's attention: 'eager' builds its causal mask with a host-to-device copy, "
        "which a CUDA graph cannot record (seen on an H200); 'sdpa' without padding builds none",
    )
    parser.add_argument("--out", type=Path, default=common.RECORD)
    args = parser.parse_args(argv)
    dev = args.device
    _stub_datasets()
    import ascale
    from ascale.training import _passes
    from ascale.training.objective import Objective, answer_logit_diff, masked_kl

    started = time.perf_counter()
    folder, random_weights = model_folder(args.model_dir, seed=0)
    bridge = ascale.load_model(folder, device=dev)
    bridge.cfg.default_prepend_bos = False
    hf = load_hf(folder, args.floor_attn, dev)
    data_all = ascale.load_jsonl(args.data, bridge)
    obj = Objective()
    kw = {"margin": obj.margin, "lambda_faith": obj.lambda_faith, "lambda_min": obj.lambda_min}
    results: dict[str, Any] = {}
    lr = 1e-3  # small: the timed steps should not drive random weights to non-finite values

    def reference_losses(loss_fn: Callable[[], Tensor], params: list[Tensor]) -> list[float]:
        """Four eager steps from the current parameters, which are then restored: the captured
        step's first replay (after its three warm-up steps) should give the fourth loss."""
        saved = [p.detach().clone() for p in params]
        optimizer = torch.optim.Adam(params, lr=lr)
        losses = []
        for _ in range(4):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        with torch.no_grad():
            for p, v in zip(params, saved, strict=True):
                p.copy_(v)
        return losses

    def one_batch(batch: int) -> dict[str, Any]:
        data = data_all.subset(range(min(batch, len(data_all))))
        n = len(data)
        tokens = data.tokens.to(dev)
        correct, wrong = data.correct_ids.to(dev), data.wrong_ids.to(dev)
        floor = FloorTrainer(
            hf, FloorScalars(hf, data.n_pos), tokens, correct, wrong, batch_size=n, lr=lr,
            last_only=True, **kw,
        )  # fmt: skip
        row: dict[str, Any] = {"n_pos": data.n_pos, "rows_per_forward": 2 * n}
        runners: dict[str, Callable[[], float]] = {}

        runners["floor"] = floor_run(floor, args.steps, dev)
        runners["ascale"] = ascale_run(bridge, data, n, args.steps, dev)

        # static inputs: the whole set is one batch, both signs of beta stacked
        beta = torch.cat([torch.ones(n, device=dev), -torch.ones(n, device=dev)])
        st_tokens, st_clean = tokens.repeat(2, 1), floor.clean.repeat(2, 1)
        st_correct, st_wrong = correct.repeat(2), wrong.repeat(2)
        keep = torch.arange(data.n_pos - 1, data.n_pos, device=dev)
        fscalars = floor.scalars  # its hooks are no-ops outside a step (beta None)

        def floor_loss() -> Tensor:
            fscalars.beta = beta
            try:
                logits = hf(input_ids=st_tokens, logits_to_keep=keep).logits[:, -1]
            finally:
                fscalars.beta = None
            return objective(logits, st_correct, st_wrong, st_clean, fscalars.l1(), **kw)

        scalars = ascale.ActivationScalars(bridge, sites="heads,mlp_out", n_pos=data.n_pos)
        doubled = _passes.stack_twice(data)
        static = dataclasses.replace(
            doubled,
            tokens=doubled.tokens.to(dev),
            correct_ids=doubled.correct_ids.to(dev),
            wrong_ids=doubled.wrong_ids.to(dev),
        )  # lengths stay on the host: `answer_logits` reads them there
        a_clean = _passes.clean_log_probs(bridge, data, n)

        def ascale_loss() -> Tensor:
            logits = _passes.answer_logits(bridge, scalars, static, beta)
            delta = answer_logit_diff(logits, static.correct_ids, static.wrong_ids)
            kl = masked_kl(a_clean.repeat(2, 1), logits, static.correct_ids, static.wrong_ids)
            return obj(delta[:n], delta[n:], kl[:n], kl[n:], scalars.l1())["loss"]

        with torch.no_grad():  # the static step is ascale's step
            terms = _passes.step_terms(bridge, scalars, data, a_clean, obj)
            row["ascale_static_loss_minus_step_terms"] = float(ascale_loss() - terms["loss"])
        for name, loss_fn, params in (
            ("floor", floor_loss, list(fscalars.parameters())),
            ("ascale", ascale_loss, list(scalars.parameters())),
        ):
            reference = reference_losses(loss_fn, params)
            try:
                captured = Captured(loss_fn, params, lr, dev)
            except Exception:
                # the first error of the chain is the cause: keep the head of the traceback
                row[f"{name}_captured_error"] = traceback.format_exc()[:12000]
                continue
            first = captured.step()
            row[f"{name}_captured_4th_loss"] = first
            row[f"{name}_eager_4th_loss"] = reference[3]
            runners[f"{name}_captured"] = floor_run(captured, args.steps, dev)
        samples = common.interleaved(runners, rounds=args.rounds)
        med = {k: statistics.median(v) for k, v in samples.items()}
        row["ms_per_step"] = {k: round(1000 * v, 3) for k, v in med.items()}
        row["ratio_to_floor"] = {k: round(v / med["floor"], 3) for k, v in med.items()}
        row["paired_ratio_to_floor"] = {
            k: round(v, 3) for k, v in common.paired_ratios(samples, "floor").items()
        }
        row["samples_s"] = samples
        floor.scalars.remove()
        return row

    for batch in [int(b) for b in args.batches.split(",")]:
        results[f"batch_{batch}"] = row = one_batch(batch)
        print(batch, row["ms_per_step"], flush=True)
        common.write_result(
            "gpu_capture",
            {
                "benchmark": "the training step recorded as a CUDA graph, floor and ascale, "
                "against the eager floor (ms per step, medians)",
                "weights": "random (seeded), SmolLM2-135M config" if random_weights else folder,
                "setup": {"rounds": args.rounds, "steps_per_round": args.steps, "lr": lr},
                "results": results,
                "wall_time_s": round(time.perf_counter() - started, 1),
            },
            folder=args.out,
            device=dev,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
