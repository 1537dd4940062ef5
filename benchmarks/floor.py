"""The floor: the ascale training step written by hand on a plain Hugging Face Llama.

No TransformerLens, no ascale: ``LlamaForCausalLM`` with plain ``torch`` hooks that scale each
head's ``z`` (the input of ``self_attn.o_proj``, reshaped to heads) and each MLP's output by
``1 + beta * alpha[layer, pos, (head)]``, and the same loss as ``ascale.fit``: hinge on the answer
logit difference at both signs of ``beta`` (stacked into one batch), KL of the answer-masked
next-token distribution against the clean one (computed once), and L1 of the scalars. Adam and a
cosine learning-rate schedule, as in ``ascale.fit``.

This file needs only torch and transformers, so the GPU script can use it on a bare machine.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

MASKED = -1e9  # as ascale.training.objective: exp() of it is 0 and differences stay finite


def load_hf(folder: str, attn: str = "eager", device: str = "cpu") -> Any:
    """A frozen ``LlamaForCausalLM`` in eval mode, fp32."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation=attn
    ).to(device)
    hf.requires_grad_(False)
    hf.eval()
    return hf


class FloorScalars(nn.Module):
    """Scalars on every head's z and every MLP output (or a subset), as plain torch hooks."""

    def __init__(
        self,
        hf: Any,
        n_pos: int,
        *,
        heads: Sequence[int] | None = None,
        mlp: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        cfg = hf.config
        n_layers = cfg.num_hidden_layers
        self.n_heads = cfg.num_attention_heads
        self.d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.head_layers = list(range(n_layers)) if heads is None else list(heads)
        self.mlp_layers = list(range(n_layers)) if mlp is None else list(mlp)
        device = next(hf.parameters()).device
        self.alpha_z = nn.Parameter(
            torch.zeros(len(self.head_layers), n_pos, self.n_heads, device=device)
        )
        self.alpha_mlp = nn.Parameter(torch.zeros(len(self.mlp_layers), n_pos, device=device))
        self.beta: Tensor | None = None
        self.handles: list[Any] = []
        layers = hf.model.layers
        for k, layer in enumerate(self.head_layers):
            pre = functools.partial(self._scale_z, k)
            self.handles.append(layers[layer].self_attn.o_proj.register_forward_pre_hook(pre))
        for k, layer in enumerate(self.mlp_layers):
            post = functools.partial(self._scale_mlp, k)
            self.handles.append(layers[layer].mlp.register_forward_hook(post))

    def _scale_z(self, k: int, module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor]:
        (z,) = args
        if self.beta is None:  # the clean run
            return (z,)
        b, p, _ = z.shape
        scale = 1 + self.beta[:, None, None] * self.alpha_z[k]  # [batch, pos, head]
        z = z.view(b, p, self.n_heads, self.d_head) * scale[..., None]
        return (z.reshape(b, p, self.n_heads * self.d_head),)

    def _scale_mlp(self, k: int, module: nn.Module, args: Any, out: Tensor) -> Tensor:
        if self.beta is None:
            return out
        return out * (1 + self.beta[:, None, None] * self.alpha_mlp[k][None, :, None])

    def l1(self) -> Tensor:
        return self.alpha_z.abs().sum() + self.alpha_mlp.abs().sum()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def last_logits(hf: Any, tokens: Tensor, last_only: bool) -> Tensor:
    """Logits at the last position (prompts of one length: no padding)."""
    if last_only:  # an index tensor, as ascale._tl.run: an int slices a non-contiguous view
        keep = torch.tensor([tokens.shape[1] - 1], device=tokens.device)
        return hf(input_ids=tokens, logits_to_keep=keep).logits[:, -1]
    return hf(input_ids=tokens).logits[:, -1]


def masked_log_probs(logits: Tensor, correct: Tensor, wrong: Tensor) -> Tensor:
    masked = logits.scatter(1, torch.stack([correct, wrong], dim=1), MASKED)
    return torch.log_softmax(masked, dim=-1)


def objective(
    logits: Tensor,
    correct: Tensor,
    wrong: Tensor,
    clean: Tensor,
    l1: Tensor,
    *,
    margin: float,
    lambda_faith: float,
    lambda_min: float,
) -> Tensor:
    """ascale's loss from the last-position logits of ``[beta=+1 rows; beta=-1 rows]``."""
    n = len(logits) // 2
    picked = logits.gather(1, torch.stack([wrong, correct], dim=1))
    delta = picked[:, 0] - picked[:, 1]
    kl = (clean.exp() * (clean - masked_log_probs(logits, correct, wrong))).sum(-1)
    effectiveness = (torch.relu(margin - delta[:n]) + torch.relu(margin + delta[n:])).mean()
    faithfulness = (kl[:n] + kl[n:]).mean()
    return effectiveness + lambda_faith * faithfulness + lambda_min * l1


def clean_log_probs(
    hf: Any, tokens: Tensor, correct: Tensor, wrong: Tensor, batch: int = 32
) -> Tensor:
    """Answer-masked clean log-probabilities, once, before training."""
    out = []
    with torch.no_grad():
        for s in range(0, len(tokens), batch):
            logits = last_logits(hf, tokens[s : s + batch], last_only=True)
            out.append(masked_log_probs(logits, correct[s : s + batch], wrong[s : s + batch]))
    return torch.cat(out)


class FloorTrainer:
    """The training loop of ``ascale.fit`` by hand: one `step` draws a batch and updates."""

    def __init__(
        self,
        hf: Any,
        scalars: FloorScalars,
        tokens: Tensor,
        correct: Tensor,
        wrong: Tensor,
        *,
        batch_size: int = 32,
        lr: float = 0.05,
        margin: float = 2.0,
        lambda_faith: float = 1.0,
        lambda_min: float = 1e-2,
        last_only: bool = False,
        total_steps: int = 10_000,
        seed: int = 0,
    ) -> None:
        self.hf, self.scalars = hf, scalars
        self.tokens, self.correct, self.wrong = tokens, correct, wrong
        self.batch_size, self.last_only = batch_size, last_only
        self.margin, self.lambda_faith, self.lambda_min = margin, lambda_faith, lambda_min
        self.clean = clean_log_probs(hf, tokens, correct, wrong)
        self.optimizer = torch.optim.Adam(scalars.parameters(), lr=lr)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, total_steps)
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(tokens), generator=self.generator)
        self.cursor = 0

    def logits(self, tokens: Tensor, beta: Tensor) -> Tensor:
        """Last-position logits of the scaled model (peers override this with their own hooks)."""
        self.scalars.beta = beta
        try:
            return last_logits(self.hf, tokens, self.last_only)
        finally:
            self.scalars.beta = None  # the hooks stay; they are no-ops outside a step

    def loss(self, index: Tensor) -> Tensor:
        """The loss on the prompts at `index`, both signs of beta stacked in one batch."""
        dev = self.tokens.device
        index = index.to(dev)
        n = len(index)
        tokens = self.tokens[index].repeat(2, 1)
        correct, wrong = self.correct[index].repeat(2), self.wrong[index].repeat(2)
        beta = torch.cat([torch.ones(n, device=dev), -torch.ones(n, device=dev)])
        return objective(
            self.logits(tokens, beta),
            correct,
            wrong,
            self.clean[index].repeat(2, 1),
            self.scalars.l1(),
            margin=self.margin,
            lambda_faith=self.lambda_faith,
            lambda_min=self.lambda_min,
        )

    def step(self) -> float:
        """One training step on the next batch (reshuffled once per epoch, as ascale.fit)."""
        if self.cursor >= len(self.order):
            self.order = torch.randperm(len(self.tokens), generator=self.generator)
            self.cursor = 0
        index = self.order[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        loss = self.loss(index)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        return float(loss.detach())
