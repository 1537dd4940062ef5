"""Generating under an intervention: `ascale.generate`, hooks during `model.generate`, and the CLI."""

from __future__ import annotations

import pytest
import torch

import ascale
from ascale import _tl
from ascale.cli import build_parser, main
from ascale.errors import AscaleError, PromptLengthError
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
    _tl.decode(tiny, [tiny.to_tokens(PROMPT)[0]], max_new_tokens=3, pick=lambda x: x.argmax(-1),
               hooks=hooks)  # fmt: skip
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


def _kinds(model, n_pos: int):
    """One intervention of every kind, with random parameters far from the identity."""
    generator = torch.Generator().manual_seed(1)
    ivs = [
        ActivationScalars(model, sites="attn_out,mlp_out", n_pos=n_pos),
        SteeringVectors(model, sites="mlp_out", n_pos=n_pos),
        ActivationScalars(model, sites="mlp_out,resid", positions="shared"),
        ActivationScalars(model, sites="heads", n_pos=n_pos),
        _dynamic(model),
    ]
    with torch.no_grad():
        for iv in ivs[:4]:
            for p in iv.parameters():
                p.normal_(std=1.5, generator=generator)
    return ivs


def test_cached_text_equals_recomputing_the_sequence_for_every_kind(tiny):
    n = tiny.to_tokens(PROMPT).shape[1]
    for iv in [None, *_kinds(tiny, n)]:
        for beta in (1.0, -1.0):
            cached = ascale.generate(tiny, iv, [PROMPT], beta=[beta], max_new_tokens=6)
            full = ascale.generate(tiny, iv, [PROMPT], beta=[beta], max_new_tokens=6,
                                   use_cache=False)  # fmt: skip
            assert cached[0].tokens == full[0].tokens, (type(iv).__name__, beta)
            context = torch.no_grad() if iv is None else iv.applied(tiny, beta)
            assert PROMPT + cached[0].text == _greedy(tiny, PROMPT, 6, context)


def test_the_plain_model_reproduces_the_bridge_and_other_hooks_run_through_it(tiny):
    """Decoding runs on the plain Hugging Face model where it gives the Bridge's activations
    and logits (checked per model); a hook with no place there runs through the Bridge, with
    its cache, to the same tokens as recomputing the sequence."""
    from ascale._tl._generate import _stepper
    from ascale._tl._plain import plain_supported

    assert plain_supported(tiny)
    assert _stepper(tiny, ["blocks.0.attn.hook_z", "blocks.1.hook_resid_post"], True).__name__ == (
        "_plain_step"
    )

    def halve(act, hook):
        return act * 0.5

    hooks = [("blocks.0.hook_resid_mid", halve)]
    assert _stepper(tiny, [n for n, _ in hooks], True).__name__ == "_cached_step"
    rows = [tiny.to_tokens(PROMPT)[0], tiny.to_tokens("The cat")[0]]
    greedy = {"max_new_tokens": 5, "pick": lambda x: x.argmax(-1), "hooks": hooks}
    assert _tl.decode(tiny, rows, **greedy) == _tl.decode(tiny, rows, use_cache=False, **greedy)
    with tiny.hooks(fwd_hooks=hooks):
        oracle = _greedy(tiny, PROMPT, 5, torch.no_grad())
    assert tiny.to_string(_tl.decode(tiny, rows[:1], **greedy)[0]) == oracle[len(PROMPT) :]


def test_a_batch_of_prompts_and_betas_gives_each_row_its_own_text(tiny):
    prompts = [PROMPT, "The cat", "When Mary and John went to the store, John gave a bottle of"]
    dyn, betas = _dynamic(tiny), [-1.0, 0.0, 1.0]
    table = ascale.generate(tiny, dyn, prompts, beta=betas, max_new_tokens=5, batch_size=4)
    assert [(r.prompt, r.beta) for r in table.rows] == [(p, b) for p in prompts for b in betas]
    for row in table.rows:
        alone = ascale.generate(tiny, dyn, row.prompt, beta=row.beta, max_new_tokens=5)
        assert row.prompt + row.text == alone
    assert table.texts(0.0) == [ascale.generate(tiny, None, [p], max_new_tokens=5)[0].text
                                for p in prompts]  # fmt: skip
    assert len({r.tokens for r in table.rows if r.prompt == PROMPT}) > 1  # beta changes the text


def test_position_tied_batches_need_the_training_length(tiny):
    n = tiny.to_tokens(PROMPT).shape[1]
    scalars = _kinds(tiny, n)[0]
    same = [PROMPT, PROMPT.replace("Mary", "Alice")]
    assert tiny.to_tokens(same[1]).shape[1] == n
    table = ascale.generate(tiny, scalars, same, beta=[-1.0, 1.0], max_new_tokens=4)
    for row in table.rows:
        assert row.prompt + row.text == _greedy(
            tiny, row.prompt, 4, scalars.applied(tiny, row.beta)
        )
    with pytest.raises(PromptLengthError, match=f"tied to prompts of {n} tokens, got"):
        ascale.generate(tiny, scalars, [PROMPT, "The cat"], max_new_tokens=2)


def test_rows_with_answers_say_which_answer_comes_first(tiny_gpt2, tiny_rows):
    table = ascale.generate(tiny_gpt2, None, tiny_rows, beta=[0.0], max_new_tokens=2)
    assert len(table) == len(tiny_rows)
    for i, row in enumerate(table.rows):
        assert (row.correct, row.wrong) == (tiny_rows.correct[i], tiny_rows.wrong[i])
        first = row.tokens[0]
        expected = {int(tiny_rows.correct_ids[i]): "correct", int(tiny_rows.wrong_ids[i]): "wrong"}
        assert row.first == expected.get(first, "other")
    rates = table.first_rates()[0.0]
    assert sum(rates.values()) == pytest.approx(1.0)
    frame = table.to_frame()
    assert list(frame.columns) == ["prompt", "beta", "text", "tokens", "correct", "wrong", "first"]
    import json

    assert json.loads(json.dumps(table.to_records()))[0]["tokens"] == list(table[0].tokens)


def test_sampling_is_seeded_and_top_k_one_is_greedy(tiny_gpt2):
    kwargs = {"beta": [0.0], "max_new_tokens": 6}
    greedy = ascale.generate(tiny_gpt2, None, [PROMPT], **kwargs)
    top1 = ascale.generate(tiny_gpt2, None, [PROMPT], do_sample=True, top_k=1, **kwargs)
    assert top1[0].tokens == greedy[0].tokens
    hot = {"do_sample": True, "temperature": 5.0, **kwargs}
    first = ascale.generate(tiny_gpt2, None, [PROMPT], seed=3, **hot)
    assert ascale.generate(tiny_gpt2, None, [PROMPT], seed=3, **hot)[0].tokens == first[0].tokens
    others = {ascale.generate(tiny_gpt2, None, [PROMPT], seed=s, **hot)[0].tokens for s in range(4)}
    assert len(others) > 1


def test_a_beta_that_overflows_float32_stops_generation(tiny_gpt2):
    dyn = _dynamic(tiny_gpt2, std=2.0)
    with pytest.raises(AscaleError, match=r"NaN or infinite values; beta .* lower \|beta\|"):
        ascale.generate(tiny_gpt2, dyn, PROMPT, beta=3e38, max_new_tokens=2)


@pytest.mark.parametrize(
    ("prompt", "beta", "message"),
    [
        (PROMPT, float("nan"), "beta must be a finite number .* got nan"),
        (PROMPT, float("inf"), "beta must be a finite number .* got inf"),
        (PROMPT, 1e39, "beta must be a finite number .*float32 holds"),
        (PROMPT, torch.tensor([1.0, -1.0]), r"beta must be a finite number .* got tensor"),
        (PROMPT, "1", "beta must be a finite number .* got '1'"),
        (PROMPT, [], "beta is an empty list"),
        ("", 1.0, "prompt 0 must be a non-empty string"),
        ([], 1.0, "prompts must be a string, a non-empty list"),
        ([PROMPT, 3], 1.0, "prompt 1 must be a non-empty string, got int"),
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


def test_cli_generate_writes_the_steered_vs_clean_table(tiny_gpt2, tiny_rows, tmp_path, capsys):
    import json

    folder = ascale.save(_dynamic(tiny_gpt2), tmp_path / "dyn")
    data = tiny_rows.subset(range(3))
    rows = data.to_jsonl(tmp_path / "rows.jsonl")
    out = tmp_path / "table"
    args = ["generate", "--intervention", str(folder), "--data", str(rows), "--beta", "-1,0,1",
            "--max-new-tokens", "3", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    written = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    expected = ascale.generate(tiny_gpt2, _dynamic(tiny_gpt2), data, beta=[-1.0, 0.0, 1.0],
                               max_new_tokens=3)  # fmt: skip
    assert written == expected.to_records()
    page = (out / "report.html").read_text()
    assert "Steered text" in page and "beta = +1" in page and "beta = -1" in page
    assert f"beta -1 | {data.prompts[0]} | " in capsys.readouterr().out
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in data.prompts))
    assert main([*args[:4], str(plain), "--beta", "0", "--max-new-tokens", "2"]) == 0
    assert [line.split(" | ")[2] for line in capsys.readouterr().out.splitlines()] == [
        repr(t) for t in ascale.generate(tiny_gpt2, None, list(data.prompts), beta=[0.0],
                                         max_new_tokens=2).texts(0.0)
    ]  # fmt: skip
    assert main([*args[:4], str(plain), "--prompt", PROMPT]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


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


@pytest.mark.real
def test_batched_cached_generation_on_smollm2_equals_each_prompt_recomputed(smol, one_thread):
    """CCC prompts of two lengths, three betas, one batch with the KV cache: every row's text
    is its text generated alone by recomputing the sequence."""
    data = ascale.tasks.ccc(smol).subset(range(3))
    prompts = [*data.prompts, "Harare is the capital city of Venezuela. The city of Harare is in"]
    dyn = DynamicScalars(smol, sites="mlp_out", layers=[18, 20])
    with torch.no_grad():
        dyn.params["mlp_out"][:, 0, -1] = -1.0
    table = ascale.generate(smol, dyn, prompts, beta=[-1.0, 0.0, 1.0], max_new_tokens=8)
    for row in table.rows:
        alone = ascale.generate(smol, dyn, [row.prompt], beta=[row.beta], max_new_tokens=8,
                                use_cache=False)  # fmt: skip
        assert row.tokens == alone[0].tokens, (row.prompt, row.beta)
    ioi = ascale.tasks.ioi(smol).subset(range(3))
    answered = ascale.generate(smol, None, ioi, beta=[0.0], max_new_tokens=1)
    assert [r.first for r in answered.rows] == ["correct"] * 3  # the clean model names them


def test_generation_past_the_context_or_with_nan_parameters_is_refused(tiny_gpt2):
    n_ctx = tiny_gpt2.cfg.n_ctx
    n = int(tiny_gpt2.to_tokens(PROMPT).shape[1])
    with pytest.raises(
        AscaleError,
        match=f"past the model's context window of {n_ctx}; use max_new_tokens <= {n_ctx - n}",
    ):
        ascale.generate(tiny_gpt2, None, PROMPT, max_new_tokens=n_ctx)
    long = " ".join(["word"] * n_ctx)
    with pytest.raises(AscaleError, match=f"context window of {n_ctx}: no token can follow"):
        ascale.generate(tiny_gpt2, None, long, max_new_tokens=1)
    with pytest.raises(AscaleError, match="max_new_tokens must be a whole number"):
        _as_users_get_it(ascale.generate)(tiny_gpt2, None, PROMPT, max_new_tokens=2.5)
    dyn = _dynamic(tiny_gpt2)
    with torch.no_grad():
        next(iter(dyn.parameters()))[0] = float("nan")
    with pytest.raises(AscaleError, match=r"parameter .* hold .*NaN or infinite value"):
        ascale.generate(tiny_gpt2, dyn, PROMPT, max_new_tokens=2)
