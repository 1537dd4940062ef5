"""Generating under an intervention: `ascale.generate`, hooks during `model.generate`, and the CLI."""

from __future__ import annotations

import pytest
import torch

import ascale
from ascale.cli import build_parser, main
from ascale.errors import AscaleError, AscaleWarning, PromptLengthError
from ascale.interventions import ActivationScalars, DynamicScalars, SteeringVectors

PROMPT = "When Mary and John went to the store"


def _greedy(model, prompt: str, n: int, context) -> str:
    """The oracle: greedy decoding by hand, one full forward pass a token, inside `context`."""
    tokens = model.to_tokens(prompt)
    with torch.no_grad(), context:
        for _ in range(n):
            nxt = model(tokens)[0, -1].argmax()
            tokens = torch.cat([tokens, nxt.view(1, 1)], dim=1)
    start = 1 if model.cfg.default_prepend_bos else 0  # generate() returns text without BOS
    return model.to_string(tokens[0, start:])


def _dynamic(model, std: float = 0.5) -> DynamicScalars:
    dyn = DynamicScalars(model, sites="attn_out,mlp_out,resid")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in dyn.parameters():
            p.normal_(std=std, generator=generator)
    return dyn


def test_beta_zero_generates_exactly_the_clean_text(tiny):
    n = tiny.to_tokens(PROMPT).shape[1]
    clean = ascale.generate(tiny, None, PROMPT, max_new_tokens=6)
    assert clean == _greedy(tiny, PROMPT, 6, torch.no_grad())
    scalars = ActivationScalars(tiny, sites="resid", n_pos=n)
    with torch.no_grad():
        scalars.params["resid"].normal_(std=3.0, generator=torch.Generator().manual_seed(0))
    for iv in (_dynamic(tiny), scalars):
        assert ascale.generate(tiny, iv, PROMPT, beta=0.0, max_new_tokens=6) == clean


@pytest.mark.parametrize("beta", [1.0, -1.0])
def test_dynamic_scalars_act_on_every_generated_position(tiny, beta):
    dyn = _dynamic(tiny)
    text = ascale.generate(tiny, dyn, PROMPT, beta=beta, max_new_tokens=6)
    assert text == _greedy(tiny, PROMPT, 6, dyn.applied(tiny, beta))


def test_dynamic_hooks_edit_the_one_token_kv_cache_steps(tiny):
    """With the KV cache, each new token reaches the hooks alone; the probe edits it too."""
    dyn = _dynamic(tiny)
    seen: list[tuple[int, bool]] = []
    hooks = []
    for name, fn in dyn.hooks(beta=1.0):

        def spy(act, hook, fn=fn):
            out = fn(act, hook)
            seen.append((act.shape[1], not torch.equal(out, act)))
            return out

        hooks.append((name, spy))
    with tiny.hooks(fwd_hooks=hooks):
        tiny.generate(PROMPT, max_new_tokens=3, do_sample=False, verbose=False)
    steps = [edited for n, edited in seen if n == 1]
    assert len(steps) == 2 * len(hooks) and all(steps)  # 2 cached steps after the prompt


@pytest.mark.parametrize("cls", [ActivationScalars, SteeringVectors])
def test_position_tied_generation_edits_only_the_trained_positions(tiny, cls):
    n = tiny.to_tokens(PROMPT).shape[1]
    iv = cls(tiny, sites="mlp_out", n_pos=n)
    with torch.no_grad():
        iv.params["mlp_out"].normal_(std=2.0, generator=torch.Generator().manual_seed(0))
    full = iv.params["mlp_out"].detach()

    def prompt_only(layer):
        def hook(act, hook):
            grown = torch.cat([full[layer], full.new_zeros((act.shape[1] - n, *full.shape[2:]))])
            return iv._edit(act, grown, 1.0)

        return hook

    manual = tiny.hooks(fwd_hooks=[(f"blocks.{k}.hook_mlp_out", prompt_only(k)) for k in (0, 1)])
    text = ascale.generate(tiny, iv, PROMPT, beta=1.0, max_new_tokens=5)
    assert text == _greedy(tiny, PROMPT, 5, manual)
    with pytest.raises(PromptLengthError, match=f"tied to prompts of {n} tokens"):
        ascale.generate(tiny, iv, PROMPT + " and then", max_new_tokens=2)


@pytest.mark.xfail(
    reason="transformer-lens 4.3 Bridge with transformers 5.x: cached steps see an empty KV "
    "cache, so ascale.generate recomputes the sequence instead (docs/generation.md)",
    strict=False,
)
def test_bridge_kv_cache_matches_full_recompute(tiny_gpt2):
    kwargs = {"max_new_tokens": 4, "do_sample": False, "verbose": False, "output_logits": True}
    cached = tiny_gpt2.generate(PROMPT, use_past_kv_cache=True, **kwargs)
    full = tiny_gpt2.generate(PROMPT, use_past_kv_cache=False, **kwargs)
    torch.testing.assert_close(torch.stack(cached.logits), torch.stack(full.logits))


def test_the_broken_kv_cache_is_turned_off_with_a_warning(tiny_gpt2, monkeypatch):
    from ascale import _tl

    real, seen = _tl.generate_text, []

    def spy(model, prompt, **kwargs):
        seen.append(kwargs.get("use_past_kv_cache"))
        return real(model, prompt, **kwargs)

    monkeypatch.setattr(_tl, "generate_text", spy)
    with pytest.warns(AscaleWarning, match="use_past_kv_cache=True is turned off"):
        cached = ascale.generate(tiny_gpt2, None, PROMPT, max_new_tokens=4, use_past_kv_cache=True)
    assert seen == [False]  # the Bridge never sees the cache switched on
    assert cached == ascale.generate(tiny_gpt2, None, PROMPT, max_new_tokens=4)


@pytest.mark.parametrize(
    ("prompt", "beta", "message"),
    [
        (PROMPT, float("nan"), "beta must be one finite number, got nan"),
        (PROMPT, float("inf"), "beta must be one finite number, got inf"),
        (PROMPT, torch.tensor([1.0, -1.0]), r"beta must be one .*a tensor of shape \[2\]"),
        (PROMPT, "1", "beta must be one finite number, got '1'"),
        ("", 1.0, "the prompt is empty"),
        ([PROMPT, PROMPT], 1.0, "prompt must be one string, got list .*once per prompt"),
    ],
)
def test_a_non_finite_beta_or_an_empty_prompt_is_refused(tiny_gpt2, prompt, beta, message):
    with pytest.raises(AscaleError, match=message):
        _as_users_get_it(ascale.generate)(
            tiny_gpt2, _dynamic(tiny_gpt2), prompt, beta=beta, max_new_tokens=2
        )


def _as_users_get_it(fn):
    """`fn` without the run-time type check the test run adds (jaxtyping): wrong types reach
    ascale's own checks, as they do for users."""
    import inspect

    return inspect.unwrap(fn)


def test_cli_generate_has_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["generate", "--help"])
    assert exit_info.value.code == 0
    assert "--beta" in capsys.readouterr().out


def test_cli_generate_prints_the_text(tiny_dirs, tiny_gpt2, tmp_path, capsys):
    folder = ascale.save(_dynamic(tiny_gpt2), tmp_path / "dyn")
    clean = ascale.generate(tiny_gpt2, None, PROMPT, max_new_tokens=4)
    args = ["generate", "--intervention", str(folder), "--prompt", PROMPT, "--max-new-tokens", "4"]
    assert main([*args, "--beta", "0"]) == 0
    assert capsys.readouterr().out.strip() == clean
    assert main([*args, "--beta", "1", "--model", str(tiny_dirs["gpt2"])]) == 0
    steered = capsys.readouterr().out.strip()
    assert steered == ascale.generate(tiny_gpt2, _dynamic(tiny_gpt2), PROMPT, max_new_tokens=4)


def test_cli_fit_dynamic_on_mixed_lengths(tiny_dirs, tiny_gpt2, tmp_path, capsys):
    rows = [
        {"prompt": f"When {a} and {b} went to the {p}, {b} gave a drink to", "correct": f" {a}",
         "wrong": f" {b}"}
        for a, b in [("Mary", "John"), ("Alice", "Bob"), ("Carol", "Dave"), ("Eve", "Bob")]
        for p in ("store", "city of Rome", "park")
    ]  # fmt: skip
    data = ascale.ContrastSet.from_rows(rows, tiny_gpt2)
    assert not data.is_uniform
    out = tmp_path / "dyn"
    model = str(tiny_dirs["gpt2"])
    base = ["fit", "--model", model, "--data", str(data.to_jsonl(tmp_path / "rows.jsonl"))]
    assert main([*base, "--method", "dynamic", "--steps", "2", "--out", str(out)]) == 0
    loaded = ascale.load(out, tiny_gpt2)
    assert isinstance(loaded, DynamicScalars) and not loaded.detach_input
    assert main(["evaluate", "--intervention", str(out), "--data", str(out / "test.jsonl")]) == 0
    assert main([*base, "--method", "scalars", "--steps", "2", "--out", str(tmp_path / "s")]) == 1
    assert "differ in token length" in capsys.readouterr().err


@pytest.mark.real
def test_generation_on_smollm2(smol, one_thread):
    prompt = "Rome is the capital of France. Rome is in"
    dyn = DynamicScalars(smol, sites="mlp_out", layers=[20])
    with torch.no_grad():
        dyn.params["mlp_out"][0, 0, -1] = -1.0  # alpha = -1: ablate the MLP of layer 20
    clean = ascale.generate(smol, None, prompt, max_new_tokens=4)
    assert clean == _greedy(smol, prompt, 4, torch.no_grad())
    assert ascale.generate(smol, dyn, prompt, beta=0.0, max_new_tokens=4) == clean
    assert ascale.generate(smol, dyn, prompt, beta=1.0, max_new_tokens=4) == _greedy(
        smol, prompt, 4, dyn.applied(smol, 1.0)
    )


def test_generation_past_the_context_or_with_nan_parameters_is_refused(tiny_gpt2):
    n_ctx = tiny_gpt2.cfg.n_ctx
    n = int(tiny_gpt2.to_tokens(PROMPT).shape[1])
    with pytest.raises(
        AscaleError,
        match=f"past the model's context window of {n_ctx}; use max_new_tokens <= {n_ctx - n}",
    ):
        ascale.generate(tiny_gpt2, None, PROMPT, max_new_tokens=n_ctx)
    with pytest.raises(AscaleError, match="max_new_tokens must be a whole number"):
        _as_users_get_it(ascale.generate)(tiny_gpt2, None, PROMPT, max_new_tokens=2.5)
    dyn = _dynamic(tiny_gpt2)
    with torch.no_grad():
        next(iter(dyn.parameters()))[0] = float("nan")
    with pytest.raises(AscaleError, match=r"parameter .* holds NaN or infinite values"):
        ascale.generate(tiny_gpt2, dyn, PROMPT, max_new_tokens=2)
