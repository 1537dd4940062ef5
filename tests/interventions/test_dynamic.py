"""DynamicScalars: oracle tests on tiny models, and generalisation to unseen lengths on SmolLM2."""

from __future__ import annotations

import json

import pytest
import torch

import ascale
from ascale.data import ContrastSet
from ascale.errors import AscaleError, PromptLengthError, UnknownSiteError
from ascale.interventions import METHODS, ActivationScalars, DynamicScalars
from ascale.io import load, save

SHORT, LONG = "When Mary and John went", "When Mary and John went to the store, John gave a drink"
ROWS = [
    {"prompt": f"When {a} and {b} went to the {place}, {b} gave a drink to", "correct": f" {a}",
     "wrong": f" {b}"}
    for a, b in [("Mary", "John"), ("Alice", "Bob"), ("Carol", "Dave"), ("Eve", "Bob")]
    for place in ("store", "city of Rome")
]  # fmt: skip


def _random(iv: DynamicScalars, std: float = 0.3, seed: int = 0) -> DynamicScalars:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in iv.parameters():
            p.normal_(std=std)
    return iv


def test_registered_and_not_position_tied(tiny):
    dyn = DynamicScalars(tiny, sites="attn_out,heads")
    assert METHODS["dynamic"] is DynamicScalars and dyn.method == "dynamic"
    assert not dyn.position_tied and dyn.is_bound and dyn.n_pos is None
    n_layers, n_heads = tiny.cfg.n_layers, tiny.cfg.n_heads
    assert dyn.params["attn_out"].shape == (n_layers, 1, tiny.cfg.d_model + 1)
    assert dyn.params["heads"].shape == (n_layers, 1, n_heads, tiny.cfg.d_head + 1)
    assert dyn.n_probes == n_layers * (1 + n_heads)
    assert dyn.n_params == n_layers * (tiny.cfg.d_model + 1 + n_heads * (tiny.cfg.d_head + 1))
    with pytest.raises((AscaleError, TypeError), match="detach_input"):
        DynamicScalars(tiny, sites="attn_out", detach_input="yes")  # type: ignore[arg-type]


def test_identity_at_init_for_prompts_of_any_length(tiny):
    dyn = DynamicScalars(tiny, sites="attn_out,mlp_out,heads,resid")
    for prompt in (SHORT, LONG):
        tokens = tiny.to_tokens(prompt)
        with torch.no_grad():
            clean = tiny(tokens)
            with dyn.applied(tiny, beta=1.0):
                assert torch.equal(tiny(tokens), clean)


def test_beta_zero_is_the_clean_model(tiny):
    dyn = _random(DynamicScalars(tiny, sites="attn_out,heads"))
    tokens = tiny.to_tokens(LONG)
    with torch.no_grad():
        clean = tiny(tokens)
        with dyn.applied(tiny, beta=0.0):
            assert torch.equal(tiny(tokens), clean)
        with dyn.applied(tiny, beta=1.0):
            assert not torch.allclose(tiny(tokens), clean)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("detach_input", [True, False])
def test_hook_is_the_probe_formula(tiny, detach_input, normalize):
    dyn = DynamicScalars(
        tiny, sites="mlp_out,heads", detach_input=detach_input, normalize=normalize
    )
    hooks = dict(_random(dyn).hooks(beta=-0.5))

    def unit(x):
        return x / x.norm(dim=-1, keepdim=True) if normalize else x

    w, b = dyn.probe("mlp_out")
    act = torch.randn(2, 5, tiny.cfg.d_model)
    alpha = unit(act) @ w[1] + b[1]  # [batch, pos]
    expected = act * (1 - 0.5 * alpha[..., None])
    torch.testing.assert_close(hooks["blocks.1.hook_mlp_out"](act, None), expected)
    torch.testing.assert_close(dyn.alpha("mlp_out", 1, act), alpha)
    w, b = dyn.probe("heads")
    z = torch.randn(2, 5, tiny.cfg.n_heads, tiny.cfg.d_head)
    alpha = torch.einsum("bphd,hd->bph", unit(z), w[0]) + b[0]  # one probe per head
    torch.testing.assert_close(dyn.alpha("heads", 0, z), alpha)
    torch.testing.assert_close(
        hooks["blocks.0.attn.hook_z"](z, None), z * (1 - 0.5 * alpha[..., None])
    )


def test_each_position_is_edited_alone(tiny):
    """What makes KV-cached steps exact: a position's edit depends on that position only."""
    dyn = _random(DynamicScalars(tiny, sites="attn_out,heads"))
    for name, hook in dyn.hooks(beta=1.0):
        shape = (2, 7, tiny.cfg.n_heads, tiny.cfg.d_head) if "hook_z" in name else (2, 7, 32)
        act = torch.randn(shape)
        whole = hook(act, None)
        for i in range(7):
            torch.testing.assert_close(hook(act[:, i : i + 1], None), whole[:, i : i + 1])


def test_detach_input_changes_only_the_gradients_upstream(tiny):
    """The forward pass is the same; gradients differ only for probes below another probe."""
    tokens = tiny.to_tokens(LONG)
    grads, outs = {}, {}
    for detach in (True, False):
        dyn = _random(DynamicScalars(tiny, sites="attn_out", detach_input=detach), std=0.05)
        with dyn.applied(tiny, beta=1.0):
            out = tiny(tokens)[0, -1].log_softmax(-1)[:50].sum()
        out.backward()
        outs[detach], grads[detach] = out.detach(), dyn.params["attn_out"].grad
    assert torch.equal(outs[True], outs[False])
    top = tiny.cfg.n_layers - 1  # no probe above the last layer's: its input depends on none
    torch.testing.assert_close(grads[True][top], grads[False][top])
    assert not torch.allclose(grads[True][0], grads[False][0])


def test_gradients_reach_only_the_probes(tiny):
    dyn = DynamicScalars(tiny, sites="attn_out,mlp_out,heads", detach_input=False)
    tokens = tiny.to_tokens([SHORT, SHORT.replace("Mary", "Alice")])
    with dyn.applied(tiny, beta=torch.tensor([1.0, -1.0])):
        tiny(tokens)[:, -1].logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dyn.parameters())
    assert all(p.grad is None for p in tiny.parameters())


def test_minimality_covers_weights_and_biases(tiny):
    dyn = DynamicScalars(tiny, sites="attn_out,heads")
    assert float(dyn.l1().detach()) == 0 and dyn.n_active() == 0
    with torch.no_grad():
        dyn.params["attn_out"][0, 0, -1] = -0.5  # a bias alone
        dyn.params["heads"][1, 0, 2, :-1] = 0.2  # one head's weights alone
    n_w = tiny.cfg.d_head  # 8: ||w|| = 0.2 * sqrt(8) = 0.57
    assert float(dyn.l1().detach()) == pytest.approx(0.5 + 0.2 * n_w)
    assert dyn.n_active() == 2  # a probe counts once, by ||w|| or |b|
    assert dyn.n_active(threshold=0.5) == 1  # ||w|| = 0.57 > 0.5; |b| = 0.5 is not
    w, b = dyn.probe("heads")
    assert w.shape == (tiny.cfg.n_layers, tiny.cfg.n_heads, n_w) and b.shape == w.shape[:-1]
    with pytest.raises(UnknownSiteError, match="no site 'mlp_out'"):
        dyn.probe("mlp_out")
    with pytest.raises(UnknownSiteError, match="no probe at site 'heads', layer 5"):
        dyn.alpha("heads", 5, torch.zeros(1, 1, tiny.cfg.n_heads, n_w))


def test_repr_says_any_length(tiny):
    text = repr(DynamicScalars(tiny, sites="heads", layers=[1], detach_input=False))
    assert "heads[1]" in text and "any length" in text and "detach_input=False" in text
    assert f"n_probes={tiny.cfg.n_heads}" in text


@pytest.mark.parametrize("detach_input", [True, False])
def test_save_load_restores_the_probes_and_detach_input(tiny, tmp_path, detach_input):
    dyn = _random(DynamicScalars(tiny, sites="mlp_out,heads", detach_input=detach_input))
    folder = save(dyn, tmp_path / "dyn")
    meta = json.loads((folder / "intervention.json").read_text())
    assert meta["method"] == "dynamic" and meta["detach_input"] is detach_input
    again = load(folder, tiny)
    assert isinstance(again, DynamicScalars) and again.detach_input is detach_input
    assert repr(again) == repr(dyn)
    tokens = tiny.to_tokens(LONG)
    with torch.no_grad():
        with dyn.applied(tiny):
            before = tiny(tokens)
        with again.applied(tiny):
            assert torch.equal(tiny(tokens), before)


def test_fit_and_evaluate_on_mixed_lengths_without_n_pos(tiny_gpt2):
    data = ContrastSet.from_rows(ROWS, tiny_gpt2)
    assert not data.is_uniform
    dyn = DynamicScalars(tiny_gpt2, sites="attn_out,mlp_out")
    result = ascale.fit(tiny_gpt2, dyn, data, steps=3, batch_size=4, progress=False)
    assert result.steps_run == 3 and float(dyn.l1().detach()) > 0
    metrics = ascale.evaluate(tiny_gpt2, dyn, data)
    assert metrics.n_prompts == len(data) and metrics.n_params == dyn.n_params
    tied = ActivationScalars(tiny_gpt2, sites="attn_out")
    with pytest.raises(PromptLengthError, match="differ in token length"):
        ascale.fit(tiny_gpt2, tied, data, steps=1, progress=False)


def test_position_tied_refuses_unseen_lengths_where_dynamic_runs(tiny_gpt2):
    data = ContrastSet.from_rows(ROWS, tiny_gpt2)
    short = data.with_length(int(data.lengths.min()))
    tied = ActivationScalars(tiny_gpt2, sites="attn_out")
    ascale.fit(tiny_gpt2, tied, short, steps=1, progress=False)
    longer = data.with_length(int(data.lengths.max()))
    with pytest.raises(PromptLengthError, match=f"tied to prompts of {short.n_pos} tokens"):
        ascale.evaluate(tiny_gpt2, tied, longer)
    dyn = DynamicScalars(tiny_gpt2, sites="attn_out")
    ascale.fit(tiny_gpt2, dyn, short, steps=1, progress=False)
    assert ascale.evaluate(tiny_gpt2, dyn, longer).n_prompts == len(longer)


# ---- real behaviour: SmolLM2 ----


@pytest.mark.real
def test_dynamic_scalars_flip_prompts_of_unseen_lengths(smol, one_thread):
    """Trained on IOI prompts of 14-15 tokens, flips prompts of 17-19 tokens, both ways."""
    data = ascale.tasks.ioi(smol, n=200, seed=0, length=None, templates="all")
    train = data.subset((data.lengths <= 15).nonzero().flatten()[:12])
    test = data.subset((data.lengths >= 17).nonzero().flatten()[:16])
    assert not set(train.lengths.tolist()) & set(test.lengths.tolist())
    torch.manual_seed(0)
    dyn = DynamicScalars(smol, sites="heads", layers=list(range(15, 30)))
    ascale.fit(smol, dyn, train, steps=20, lr=0.05, batch_size=12, progress=False)
    metrics = ascale.evaluate(smol, dyn, test)
    assert metrics.logit_diff_clean < -2  # the clean model answers correctly by a margin
    assert metrics.flip_rate_forward >= 0.8 and metrics.flip_rate_backward >= 0.8, str(metrics)
    tied = ActivationScalars(smol, sites="heads", layers=list(range(15, 30)), n_pos=15)
    with pytest.raises(PromptLengthError, match="tied to prompts of 15 tokens"):
        ascale.evaluate(smol, tied, test.with_length(17))
