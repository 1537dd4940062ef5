"""Oracle tests of the interventions' mechanics, on tiny random models."""

import pytest
import torch
from jaxtyping import TypeCheckError

from ascale.errors import AscaleError, PromptLengthError
from ascale.interventions import ActivationScalars, SteeringVectors

PROMPT = "When Mary and John went to the store"


def _tokens(model, prompt=PROMPT):
    return model.to_tokens([prompt, prompt.replace("Mary", "Alice")])


@pytest.mark.parametrize("cls", [ActivationScalars, SteeringVectors])
def test_identity_parameters_give_bit_identical_logits(tiny, cls):
    tokens = _tokens(tiny)
    iv = cls(tiny, sites="attn_out,mlp_out,heads,resid", n_pos=tokens.shape[1])
    with torch.no_grad():
        clean = tiny(tokens)
        with iv.applied(tiny, beta=1.0):
            steered = tiny(tokens)
    assert torch.equal(clean, steered)


def test_beta_zero_is_the_clean_model(tiny):
    tokens = _tokens(tiny)
    iv = ActivationScalars(tiny, sites="attn_out,heads", n_pos=tokens.shape[1])
    with torch.no_grad():
        for p in iv.parameters():
            p.normal_()
        clean = tiny(tokens)
        with iv.applied(tiny, beta=0.0):
            assert torch.equal(tiny(tokens), clean)
        with iv.applied(tiny, beta=1.0):
            assert not torch.allclose(tiny(tokens), clean)


@pytest.mark.parametrize(
    "site, hook", [("mlp_out", "blocks.1.hook_mlp_out"), ("heads", "blocks.0.attn.hook_z")]
)
def test_alpha_minus_one_equals_zero_ablation(tiny, site, hook):
    tokens = _tokens(tiny)
    layer = int(hook.split(".")[1])
    iv = ActivationScalars(tiny, sites=site, layers=[layer], n_pos=tokens.shape[1])
    with torch.no_grad():
        iv.params[site].fill_(-1.0)
        with iv.applied(tiny, beta=1.0):
            scaled = tiny(tokens)
        ablated = tiny.run_with_hooks(
            tokens, fwd_hooks=[(hook, lambda a, hook: torch.zeros_like(a))]
        )
    torch.testing.assert_close(scaled, ablated, rtol=0, atol=1e-6)


def test_one_head_scaled_touches_only_that_head(tiny):
    tokens = _tokens(tiny)
    iv = ActivationScalars(tiny, sites="heads", layers=[0], n_pos=tokens.shape[1])
    with torch.no_grad():
        iv.params["heads"][0, :, 2] = 0.5
        _, clean = tiny.run_with_cache(tokens, names_filter="blocks.0.attn.hook_z")
    z = clean["blocks.0.attn.hook_z"]
    edited = iv.hooks()[0][1](z, None)
    assert torch.equal(edited[:, :, [0, 1, 3]], z[:, :, [0, 1, 3]])
    torch.testing.assert_close(edited[:, :, 2], 1.5 * z[:, :, 2])


def test_hooks_are_pure_and_removed_after_errors(tiny):
    tokens = _tokens(tiny)
    iv = SteeringVectors(tiny, sites="resid", n_pos=tokens.shape[1])
    with torch.no_grad():
        iv.params["resid"].fill_(1.0)
        act = torch.randn(2, tokens.shape[1], tiny.cfg.d_model)
        before = act.clone()
        out = iv.hooks()[0][1](act, None)
        assert torch.equal(act, before) and not torch.equal(out, act)
        clean = tiny(tokens)
        with pytest.raises(RuntimeError, match="boom"), iv.applied(tiny):
            raise RuntimeError("boom")
        assert torch.equal(tiny(tokens), clean)


def test_gradients_reach_only_the_intervention(tiny):
    tokens = _tokens(tiny)
    iv = ActivationScalars(tiny, sites="attn_out,mlp_out,heads", n_pos=tokens.shape[1])
    with iv.applied(tiny, beta=torch.tensor([1.0, -1.0])):
        tiny(tokens)[:, -1].logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in iv.parameters())
    assert all(p.grad is None for p in tiny.parameters())


def test_listed_positions_leave_other_positions_alone(tiny):
    tokens = _tokens(tiny)
    n = tokens.shape[1]
    iv = ActivationScalars(tiny, sites="mlp_out", layers=[1], positions=[-1], n_pos=n)
    assert iv.positions == (n - 1,) and iv.n_params == 1
    act = torch.randn(2, n, tiny.cfg.d_model)
    with torch.no_grad():
        iv.params["mlp_out"].fill_(1.0)
    out = iv.hooks()[0][1](act, None)
    assert torch.equal(out[:, :-1], act[:, :-1])
    torch.testing.assert_close(out[:, -1], 2 * act[:, -1])


def test_shared_positions_accept_any_length(tiny):
    iv = ActivationScalars(tiny, sites="attn_out", positions="shared")
    assert iv.n_params == tiny.cfg.n_layers and not iv.position_tied
    for prompt in ("Mary", PROMPT):
        with torch.no_grad(), iv.applied(tiny):
            tiny(tiny.to_tokens(prompt))


def test_position_tied_refuses_other_lengths(tiny):
    iv = ActivationScalars(tiny, sites="attn_out", n_pos=5)
    with pytest.raises(PromptLengthError, match="tied to prompts of 5 tokens"), iv.applied(tiny):
        tiny(tiny.to_tokens(PROMPT))
    with pytest.raises(PromptLengthError):
        iv.bind(6)
    unbound = ActivationScalars(tiny, sites="attn_out")
    with pytest.raises(AscaleError, match="needs the prompt length"):
        unbound.hooks()


def test_generation_under_the_dial(tiny):
    prompt = PROMPT
    n = tiny.to_tokens(prompt).shape[1]
    iv = ActivationScalars(tiny, sites="attn_out,mlp_out", n_pos=n)
    with torch.no_grad():
        iv.params["mlp_out"].fill_(-3.0)
    kwargs = {"max_new_tokens": 4, "do_sample": False, "verbose": False}
    clean = tiny.generate(prompt, **kwargs)
    with iv.applied(tiny, beta=0.0):
        assert tiny.generate(prompt, **kwargs) == clean
    with iv.applied(tiny, beta=1.0):
        steered = tiny.generate(prompt, **kwargs)
    assert isinstance(steered, str) and steered.startswith(prompt)


def test_hook_edit_shapes_are_checked_in_the_test_run(tiny):
    """A per-prompt `beta` of one value for two prompts would broadcast silently; the hook's
    annotations (``beta: Float[Tensor, " batch"]`` against ``act: "batch pos *head d"``) refuse it."""
    tokens = _tokens(tiny)
    iv = ActivationScalars(tiny, sites="heads", n_pos=tokens.shape[1])
    with (
        torch.no_grad(),
        pytest.raises(TypeCheckError, match="batch"),
        iv.applied(tiny, beta=torch.ones(1)),
    ):
        tiny(tokens)


def test_repr_shows_sites_and_summary(tiny):
    iv = ActivationScalars(tiny, sites="heads,mlp_out", n_pos=4)
    text = repr(iv)
    assert "heads[0-1]" in text and "mlp_out[0-1]" in text
    assert f"n_params={4 * 2 * tiny.cfg.n_heads + 4 * 2}" in text
    assert "unbound" in repr(ActivationScalars(tiny, sites="heads"))


def test_vectors_count_active_by_norm(tiny):
    iv = SteeringVectors(tiny, sites="attn_out", n_pos=3)
    assert iv.n_params == 2 * 3 * tiny.cfg.d_model
    with torch.no_grad():
        iv.params["attn_out"][0, 1] = 1.0
    assert iv.n_active() == 1


def test_non_finite_beta_empty_layers_and_zero_length_are_refused(tiny_gpt2):
    import ascale
    from ascale.errors import UnknownSiteError

    scalars = ascale.ActivationScalars(tiny_gpt2, sites="mlp_out", n_pos=4)
    for beta in (float("nan"), float("inf"), torch.tensor([1.0, float("nan")])):
        with pytest.raises(AscaleError, match="beta must be finite"):
            scalars.hooks(beta)
    with pytest.raises(UnknownSiteError, match="layers is empty"):
        ascale.ActivationScalars(tiny_gpt2, sites="mlp_out", layers=[])
    with pytest.raises(PromptLengthError, match="at least 1"):
        ascale.ActivationScalars(tiny_gpt2, sites="mlp_out", n_pos=0)
    with torch.no_grad():
        scalars.params["mlp_out"][0, 0] = float("nan")
    data = ascale.ContrastSet.from_rows(
        [{"prompt": "Rome is in", "correct": " Italy", "wrong": " France"}], tiny_gpt2
    )
    with pytest.raises(AscaleError, match="NaN or infinite"):
        ascale.evaluate(tiny_gpt2, scalars, data)


def test_a_beta_tensor_of_the_wrong_length_is_named(tiny_gpt2):
    scalars = ActivationScalars(tiny_gpt2, sites="mlp_out", n_pos=5)
    tokens = torch.zeros((3, 5), dtype=torch.long)
    wrong = torch.tensor([1.0, -1.0])
    with (
        pytest.raises(AscaleError, match="beta holds 2 values for a batch of 3 prompts"),
        scalars.applied(tiny_gpt2, beta=wrong),
    ):
        tiny_gpt2(tokens)
    with scalars.applied(tiny_gpt2, beta=torch.tensor([1.0, -1.0, 0.5])):
        assert tiny_gpt2(tokens).shape[0] == 3  # one per prompt is fine
