"""Activation and attribution patching: oracles on tiny models, and a planted head."""

import pandas as pd
import pytest
import torch
from transformer_lens import patching as tl_patching

import ascale
from ascale import _tl
from ascale.analysis.patching import activation_patching, attribution_patching
from ascale.data import ContrastSet
from ascale.errors import AscaleError, PromptLengthError
from ascale.testing import PLANTED_HEAD, PLANTED_LAYER
from ascale.testing import ioi_like_rows as _rows


def test_planted_head_is_ranked_first_by_every_method(planted):
    model, clean, corrupted = planted
    first = f"heads L{PLANTED_LAYER}H{PLANTED_HEAD} @{clean.n_pos - 1}"
    torch.manual_seed(0)
    scalars = ascale.ActivationScalars(model, sites="heads")
    ascale.fit(model, scalars, clean, steps=100, lr=0.1, stop="none", progress=False)
    assert ascale.evaluate(model, scalars, clean).flip_rate_forward == 1.0
    rankings = [
        ascale.rank_components(scalars),
        activation_patching(model, clean, corrupted, like=scalars),
        attribution_patching(model, clean, corrupted, like=scalars),
        activation_patching(model, clean, like=scalars, ablation="mean"),
        attribution_patching(model, clean, like=scalars, ablation="zero"),
    ]
    for ranking in rankings:
        top = ranking.top(2)
        assert top["component"][0] == first, (ranking.method, top)
        assert top["magnitude"][0] > 5 * top["magnitude"][1], (ranking.method, top)


def _corrupted_pair(model):
    clean_rows, corrupt_rows = _rows(5, seed=1)
    return ContrastSet.from_rows(clean_rows, model), ContrastSet.from_rows(corrupt_rows, model)


def _naive(model, base, source, comps):
    """One forward pass per component: Δ with that component replaced by `source`'s value."""
    names = sorted({site_hook for site_hook, _, _ in comps})
    _, src = _tl.capture(model, source.tokens, names)
    out = []
    for name, pos, head in comps:

        def patch(act, hook, name=name, pos=pos, head=head):
            act = act.clone()
            index = (slice(None), pos) + (() if head is None else (head,))
            act[index] = src[name][index]
            return act

        with torch.no_grad(), _tl.attach(model, [(name, patch)]):
            logits = _tl.run(model, base.tokens)
        out.append(_mean_delta(logits, base))
    return torch.tensor(out)


def _mean_delta(logits, data):
    picked = logits[:, -1]
    return float(
        (
            picked.gather(1, data.wrong_ids[:, None]) - picked.gather(1, data.correct_ids[:, None])
        ).mean()
    )


@pytest.mark.parametrize("max_batch", [3, 64])
def test_batched_patching_equals_one_component_per_pass(tiny, max_batch):
    clean, corrupted = _corrupted_pair(tiny)
    result = activation_patching(
        tiny, clean, corrupted, sites="attn_out,heads", positions=[2, -1], max_batch=max_batch
    )
    frame = result.to_frame().sort_values(["site", "layer", "pos", "head"])
    hooks = {"attn_out": "blocks.{}.hook_attn_out", "heads": "blocks.{}.attn.hook_z"}
    comps = [
        (hooks[s].format(la), int(p), None if pd.isna(h) else int(h))
        for s, la, p, h in zip(
            frame["site"], frame["layer"], frame["pos"], frame["head"], strict=True
        )
    ]
    with torch.no_grad():
        d_clean = _mean_delta(_tl.run(tiny, clean.tokens), clean)
        d_corrupt = _mean_delta(_tl.run(tiny, corrupted.tokens), corrupted)
    expected = (_naive(tiny, clean, corrupted, comps) - d_clean) / (d_corrupt - d_clean)
    torch.testing.assert_close(
        torch.tensor(frame["value"].to_numpy(), dtype=torch.float32), expected, atol=1e-4, rtol=1e-4
    )


def test_denoising_matches_transformer_lens_get_act_patch(tiny_gpt2):
    clean, corrupted = _corrupted_pair(tiny_gpt2)
    ours = activation_patching(tiny_gpt2, clean, corrupted, sites="heads", direction="denoising")
    _, cache = tiny_gpt2.run_with_cache(clean.tokens)
    reference = tl_patching.get_act_patch_attn_head_out_by_pos(
        tiny_gpt2, corrupted.tokens, cache, lambda logits: torch.tensor(_mean_delta(logits, clean))
    )  # [layer, pos, head], one forward pass per component
    with torch.no_grad():
        d_clean = _mean_delta(_tl.run(tiny_gpt2, clean.tokens), clean)
        d_corrupt = _mean_delta(_tl.run(tiny_gpt2, corrupted.tokens), clean)
    expected = (reference - d_corrupt) / (d_clean - d_corrupt)
    frame = ours.to_frame()
    got = torch.zeros_like(expected)
    for layer, pos, head, value in zip(
        frame["layer"], frame["pos"], frame["head"], frame["value"], strict=True
    ):
        got[layer, pos, head] = value
    torch.testing.assert_close(got, expected.float(), atol=1e-4, rtol=1e-4)


def test_zero_ablation_gives_the_raw_change_in_logit_difference(tiny_gpt2):
    clean, _ = _corrupted_pair(tiny_gpt2)
    result = activation_patching(
        tiny_gpt2, clean, sites="mlp_out", layers=[1], positions=[-1], ablation="zero"
    )
    assert result.value_name == "Δ logit diff" and not result.info["normalised"]

    def zero_last(act, hook):
        act = act.clone()
        act[:, -1] = 0
        return act

    with torch.no_grad():
        d_clean = _mean_delta(_tl.run(tiny_gpt2, clean.tokens), clean)
        with _tl.attach(tiny_gpt2, [("blocks.1.hook_mlp_out", zero_last)]):
            d_ablated = _mean_delta(_tl.run(tiny_gpt2, clean.tokens), clean)
    assert result.to_frame()["value"][0] == pytest.approx(d_ablated - d_clean, abs=1e-5)


def test_attribution_patching_with_zero_ablation_is_minus_the_scalar_gradient(tiny):
    """Scaling h by (1 + alpha) moves it by alpha h, and zero-ablation by -h: at alpha = 0 the
    first-order estimate of zero-ablation is -dΔ/dalpha, which the scalars' gradient gives."""
    clean, _ = _corrupted_pair(tiny)
    scalars = ascale.ActivationScalars(tiny, sites="heads,mlp_out", n_pos=clean.n_pos)
    with scalars.applied(tiny, beta=1.0):
        _delta_tensor(_tl.run(tiny, clean.tokens), clean).mean().backward()
    estimate = attribution_patching(tiny, clean, like=scalars, ablation="zero")
    grad = ascale.ActivationScalars(tiny, sites="heads,mlp_out", n_pos=clean.n_pos)
    with torch.no_grad():
        for name, p in scalars.params.items():
            grad.params[name].copy_(-p.grad)
    expected = ascale.rank_components(grad).to_frame().set_index("component")["value"]
    got = estimate.to_frame().set_index("component")["value"]
    torch.testing.assert_close(
        torch.tensor(got.sort_index().to_numpy()),
        torch.tensor(expected.sort_index().to_numpy()),
        atol=1e-5,
        rtol=1e-4,
    )


def _delta_tensor(logits, data):
    picked = logits[:, -1]
    return (
        picked.gather(1, data.wrong_ids[:, None])[:, 0]
        - picked.gather(1, data.correct_ids[:, None])[:, 0]
    )


def test_shared_positions_patch_every_position_at_once(tiny_gpt2):
    clean, corrupted = _corrupted_pair(tiny_gpt2)
    shared = activation_patching(
        tiny_gpt2, clean, corrupted, sites="resid", layers=[1], positions="shared"
    )
    frame = shared.to_frame()
    assert len(frame) == 1 and frame["token"][0] == "(all)" and frame["pos"].isna().all()
    # the last residual stream carries everything: replacing it at every position is the
    # corrupted run
    assert frame["value"][0] == pytest.approx(1.0, abs=1e-4)


def test_bad_inputs_are_refused(tiny_gpt2):
    clean, corrupted = _corrupted_pair(tiny_gpt2)
    with pytest.raises(AscaleError, match="denoising needs corrupted"):
        activation_patching(tiny_gpt2, clean, direction="denoising")
    with pytest.raises(PromptLengthError, match="align row by row"):
        activation_patching(tiny_gpt2, clean, corrupted.subset([0, 1]))
    with pytest.raises(PromptLengthError, match="do not exist"):
        attribution_patching(tiny_gpt2, clean, corrupted, positions=[99])
    with pytest.raises(AscaleError, match="same mean logit difference"):
        activation_patching(tiny_gpt2, clean, clean, sites="mlp_out")
