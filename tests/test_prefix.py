"""Prefix reuse: starting at a middle block from a cached residual equals the full forward.

When every edited hook sits at layer >= l0, the blocks below l0 see the clean prompt, so their
output (the residual entering block l0) can be computed once. These tests check the logits and
the gradients of an intervention against the full forward, with and without padding, on tiny
models of three architectures and on SmolLM2.
"""

import pytest
import torch

import ascale
from ascale import _tl, loading
from ascale.data import ContrastSet
from ascale.interventions import ActivationScalars, DynamicScalars
from ascale.testing import ioi_like_rows
from ascale.training import _passes


def _randomised(iv, std=0.3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in iv.parameters():
            p.normal_(std=std, generator=generator)
    return iv


def _logits_and_grads(model, iv, tokens, mask, prefix):
    iv.zero_grad(set_to_none=True)
    with torch.enable_grad(), iv.applied(model, beta=1.0):
        logits = _tl.run(model, tokens, mask, prefix=prefix)
    logits.float().pow(2).mean().backward()
    return logits.detach(), [p.grad.clone() for p in iv.parameters()]


@pytest.mark.parametrize("kind", ["gpt2", "llama", "neox"])
def test_prefix_gives_the_full_forward(tiny_dirs, kind):
    model = loading.load_model(tiny_dirs[kind])
    assert _tl.prefix_supported(model, 1)
    top = model.cfg.n_layers - 1
    data = ContrastSet.from_rows(ioi_like_rows(4)[0], model)
    tokens = data.tokens
    scalars = _randomised(
        ActivationScalars(model, sites="attn_out,mlp_out,heads", layers=[top], n_pos=data.n_pos)
    )
    dynamic = _randomised(DynamicScalars(model, sites="mlp_out,heads", layers=[top]))
    for iv in (scalars, dynamic):
        layer = _tl.first_block([name for name, _ in iv.hooks()])
        assert layer == top
        prefix = _tl.prefix_of(model, tokens, layer)
        assert prefix.layer == top and prefix.resid.shape[:2] == tokens.shape
        full, full_grads = _logits_and_grads(model, iv, tokens, None, None)
        part, part_grads = _logits_and_grads(model, iv, tokens, None, prefix)
        torch.testing.assert_close(part, full, atol=1e-5, rtol=1e-5)
        for a, b in zip(part_grads, full_grads, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        # the intervention changes the logits: the test would see a prefix that ignored it
        with torch.no_grad():
            plain = _tl.run(model, tokens, prefix=prefix)
        assert (plain - part).abs().max() > 1e-3


def test_prefix_with_padding_and_a_subset(tiny_gpt2):
    model = tiny_gpt2
    prompts = ["When Mary and John went to the store", "Rome is", "Paris Berlin Germany"]
    tokens, lengths = _tl.tokenize(model, prompts)
    mask = (torch.arange(tokens.shape[1])[None] < lengths[:, None]).long()
    dynamic = _randomised(DynamicScalars(model, sites="attn_out", layers=[1]))
    prefix = _tl.prefix_of(model, tokens, 1, mask, batch_size=2)  # two batches
    full, _ = _logits_and_grads(model, dynamic, tokens, mask, None)
    part, _ = _logits_and_grads(model, dynamic, tokens, mask, prefix)
    last = lengths - 1
    rows = torch.arange(len(prompts))
    torch.testing.assert_close(part[rows, last], full[rows, last], atol=1e-5, rtol=1e-5)
    index = torch.tensor([2, 0])
    sub, _ = _logits_and_grads(model, dynamic, tokens[index], mask[index], prefix.rows(index))
    torch.testing.assert_close(
        sub[[0, 1], last[index]], full[index, last[index]], atol=1e-5, rtol=1e-5
    )


def test_prefix_mismatch_and_layer_zero(tiny_gpt2):
    tokens, _ = _tl.tokenize(tiny_gpt2, ["Rome is the capital", "Paris is the"])
    prefix = _tl.prefix_of(tiny_gpt2, tokens, 1)
    with pytest.raises(ValueError, match="prefix holds"):
        _tl.run(tiny_gpt2, tokens[:1], prefix=prefix)
    assert _tl.prefix_of(tiny_gpt2, tokens, 0).layer == 0  # nothing to reuse
    assert _tl.first_block(["blocks.3.hook_mlp_out", "blocks.1.attn.hook_z"]) == 1
    assert _tl.first_block(["blocks.3.hook_mlp_out", "hook_embed"]) == 0
    assert _tl.first_block([]) == 0


def test_the_model_is_whole_again_after_a_prefix_run(tiny_gpt2):
    tokens, _ = _tl.tokenize(tiny_gpt2, ["Rome is the capital of"])
    before = _tl.run(tiny_gpt2, tokens)
    prefix = _tl.prefix_of(tiny_gpt2, tokens, 1)
    with pytest.raises(RuntimeError), _tl._blocks.blocks_from(tiny_gpt2, 1):
        raise RuntimeError("inside")
    _tl.run(tiny_gpt2, tokens, prefix=prefix)
    torch.testing.assert_close(_tl.run(tiny_gpt2, tokens), before)
    parent, attribute = _tl._blocks.layer_list(tiny_gpt2)
    assert getattr(parent, attribute) is tiny_gpt2.blocks


@pytest.mark.real
def test_prefix_on_smollm2(smol):
    data = ContrastSet.from_rows(ioi_like_rows(3)[0], smol)
    scalars = _randomised(
        ActivationScalars(smol, sites="heads", layers=range(20, 30), n_pos=data.n_pos), std=0.2
    )
    prefix = _tl.prefix_of(smol, data.tokens, 20)
    assert prefix.layer == 20  # supported on SmolLM2: a real saving
    full, full_grads = _logits_and_grads(smol, scalars, data.tokens, None, None)
    part, part_grads = _logits_and_grads(smol, scalars, data.tokens, None, prefix)
    torch.testing.assert_close(part, full, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(part_grads[0], full_grads[0], atol=1e-5, rtol=1e-3)


def test_fit_and_evaluate_with_prefix_equal_the_full_forward(tiny_gpt2, monkeypatch):
    model = tiny_gpt2
    data = ContrastSet.from_rows(ioi_like_rows(12)[0], model)

    def run_once():
        iv = ActivationScalars(model, sites="heads,mlp_out", layers=[1], n_pos=data.n_pos)
        result = ascale.fit(model, iv, data, steps=4, batch_size=8, stop="none", progress=False)
        return result.history["loss"], ascale.evaluate(model, iv, data), iv

    calls = []
    real = _tl.prefix_of
    monkeypatch.setattr(_tl, "prefix_of", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    losses, metrics, iv = run_once()
    assert calls and set(calls) == {1}  # the fit and the evaluation started at block 1
    monkeypatch.setattr(_passes, "clean_prefix", lambda *a, **k: None)  # fit's and evaluate's
    n_calls = len(calls)
    full_losses, full_metrics, full_iv = run_once()
    assert len(calls) == n_calls  # the switch reached both: neither computed a prefix
    torch.testing.assert_close(
        torch.tensor(losses), torch.tensor(full_losses), rtol=1e-5, atol=1e-6
    )
    for a, b in zip(iv.parameters(), full_iv.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert metrics.logit_diff_forward == pytest.approx(full_metrics.logit_diff_forward, abs=1e-5)
    assert metrics.faithfulness_kl == pytest.approx(full_metrics.faithfulness_kl, abs=1e-6)


@pytest.mark.parametrize("sites", ["attn_out,mlp_out", "heads,resid"])
def test_activation_patching_with_prefix_equals_the_full_forward(tiny, monkeypatch, sites):
    from ascale.analysis.patching import activation_patching

    clean_rows, corrupt_rows = ioi_like_rows(6)
    clean = ContrastSet.from_rows(clean_rows, tiny)
    corrupted = ContrastSet.from_rows(corrupt_rows, tiny)
    starts = []
    real_run = _tl.run

    def spy(*args, prefix=None, **kwargs):
        starts.append(0 if prefix is None else prefix.layer)
        return real_run(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(_tl, "run", spy)
    fast = activation_patching(tiny, clean, corrupted, sites=sites, max_batch=12)
    assert max(starts) == tiny.cfg.n_layers - 1  # passes on the top block started there
    monkeypatch.setattr(_tl, "prefix_layers", lambda model, layers: [])
    slow = activation_patching(tiny, clean, corrupted, sites=sites, max_batch=12)
    fast_values, slow_values = (
        torch.tensor(r.components.set_index("component")["value"].sort_index().to_numpy())
        for r in (fast, slow)
    )
    assert fast_values.abs().max() > 1e-3  # the patches moved the logit difference
    torch.testing.assert_close(fast_values, slow_values, atol=1e-5, rtol=1e-4)


def test_prefix_is_refused_where_layer_types_do_not_repeat(tiny_dirs, monkeypatch):
    model = loading.load_model(tiny_dirs["neox"])  # three layers
    config = model.original_model.config
    config.layer_types = ["full_attention", "sliding_attention", "full_attention"]
    forwards = []
    real_capture = _tl.capture
    monkeypatch.setattr(
        _tl._reuse, "capture", lambda *a, **k: forwards.append(1) or real_capture(*a, **k)
    )
    try:
        # layer 1 would run with layer 0's type: refused from the config, before any forward
        assert _tl._reuse._check_prefix(model, [1]) == {1: False} and not forwards
        config.layer_types = ["full_attention"] * 3
        assert _tl._reuse._check_prefix(model, [1, 2]) == {1: True, 2: True} and forwards
    finally:
        del config.layer_types
    assert _tl._reuse._check_prefix(model, [0, 3]) == {0: False, 3: False}  # nothing to start from
    assert _tl.prefix_layers(model, [2, 0, 1]) == [2, 1]
