"""Right-padded batches of mixed lengths give what each prompt gives alone (tiny models, SmolLM2).

Right padding keeps every real token at the position it has alone, and causal attention keeps
real tokens from seeing the padding after them, so the logits at each prompt's last real token,
and every metric read from them, match single unpadded runs up to float rounding.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import ascale
from ascale import _tl
from ascale.data import ContrastSet
from ascale.interventions import ActivationScalars, DynamicScalars
from ascale.training.objective import answer_logit_diff, masked_kl, masked_log_probs

ROWS = [
    {"prompt": "When Mary and John went to the store, John gave a drink to", "correct": " Mary",
     "wrong": " John"},
    {"prompt": "Rome is the capital of France. Rome is in", "correct": " Italy",
     "wrong": " France"},
    {"prompt": "Then, Alice and Bob had a long argument, and afterwards Bob said to",
     "correct": " Alice", "wrong": " Bob"},
    {"prompt": "Paris is in", "correct": " France", "wrong": " Italy"},
]  # fmt: skip


def _interventions(model, std: float = 0.3):
    dyn = DynamicScalars(model, sites="attn_out,mlp_out,heads", detach_input=True)
    shared = ActivationScalars(model, sites="mlp_out,heads", positions="shared")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in [*dyn.parameters(), *shared.parameters()]:
            p.normal_(std=std, generator=generator)
    return {"clean": None, "dynamic": dyn, "shared scalars": shared}


def _last_logits(model, data: ContrastSet, iv, beta: float = 1.0):
    """(padded batch, each prompt alone) logits at each prompt's last real token."""
    context = torch.no_grad() if iv is None else iv.applied(model, beta)
    with torch.no_grad(), context:
        padded = _tl.run(model, data.tokens, data.attention_mask)
        alone = [model(data.tokens[i : i + 1, : int(n)])[0, -1] for i, n in enumerate(data.lengths)]
    return padded[torch.arange(len(data)), data.lengths - 1], torch.stack(alone)


def _check(model, rows, atol: float, std: float = 0.3) -> None:
    data = ContrastSet.from_rows(rows, model)
    assert not data.is_uniform and data.attention_mask.sum(1).tolist() == data.lengths.tolist()
    ids = (data.correct_ids, data.wrong_ids)
    with torch.no_grad():
        clean = masked_log_probs(_last_logits(model, data, None)[1], *ids)
    for name, iv in _interventions(model, std).items():
        padded, alone = _last_logits(model, data, iv)
        torch.testing.assert_close(padded, alone, rtol=0, atol=atol, msg=name)
        # the per-prompt metrics: answer logit difference and faithfulness KL
        torch.testing.assert_close(
            answer_logit_diff(padded, *ids), answer_logit_diff(alone, *ids), rtol=0, atol=atol
        )
        torch.testing.assert_close(
            masked_kl(clean, padded, *ids), masked_kl(clean, alone, *ids), rtol=0, atol=atol
        )
        if name != "dynamic":
            continue
        batched = ascale.evaluate(model, iv, data, batch_size=len(data))
        single = ascale.evaluate(model, iv, data, batch_size=1)  # each prompt alone, no padding
        for key, value in dataclasses.asdict(batched).items():
            assert value == pytest.approx(getattr(single, key), abs=atol, nan_ok=True), (name, key)


def test_padded_batch_equals_single_prompts_on_tiny_models(tiny):
    _check(tiny, ROWS, atol=1e-5)


@pytest.mark.real
def test_padded_batch_equals_single_prompts_on_smollm2(smol, one_thread):
    # logits of ~20: fp32 rounding differs with the batch shape (~5e-5), and random probes
    # on every layer amplify it, so they are kept small here
    _check(smol, ROWS, atol=5e-4, std=0.1)
