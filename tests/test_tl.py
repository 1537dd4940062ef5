"""The TransformerLens adapter (`ascale._tl`): `run` is the model's own forward (all logits, the
last position's, chosen columns), `capture` sees what attached hooks made, `attach` leaves no hook
behind, `tokenize` right-pads each prompt as tokenised alone, and `dims` names a model's shape."""

import pytest
import torch

from ascale import _tl
from ascale.errors import IncompatibleModelError

PROMPTS = ["When Mary and John went to the store", "Rome is the capital of"]
SITE = "blocks.0.hook_mlp_out"


def _zero(act, hook):
    return torch.zeros_like(act)


def test_run_is_the_models_own_forward(tiny):
    tokens = tiny.to_tokens(PROMPTS)
    with torch.no_grad():
        own = tiny(tokens)
        assert torch.equal(_tl.run(tiny, tokens), own)
        # a mask without padding is dropped: the same pass, bit for bit
        assert torch.equal(_tl.run(tiny, tokens, torch.ones_like(tokens)), own)


def test_last_only_logits_equal_the_last_column_of_all_logits(tiny):
    tokens = tiny.to_tokens(["When Mary and John went to the store", "Rome is the capital of"])
    with torch.no_grad():
        full = _tl.run(tiny, tokens)
        last = _tl.run(tiny, tokens, last_only=True)
    assert _tl._run.keeps_logits(type(tiny.original_model))  # really computed at one position
    assert last.shape == (2, 1, full.shape[-1])
    torch.testing.assert_close(last[:, 0], full[:, -1], rtol=0, atol=1e-5)


def test_chosen_columns_equal_those_columns_of_all_logits(tiny):
    # right-padded prompts of several lengths: only each length's answer column is unembedded
    tokens = tiny.to_tokens(["When Mary and John went to the store", "Rome is the capital of"])
    columns = torch.tensor([2, 5])
    with torch.no_grad():
        full = _tl.run(tiny, tokens)
        kept = _tl.run(tiny, tokens, positions=columns)
    assert kept.shape == (2, 2, full.shape[-1])
    torch.testing.assert_close(kept, full[:, columns], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="not both"):
        _tl.run(tiny, tokens, last_only=True, positions=columns)


def test_capture_sees_the_attached_hooks_edits_and_attach_leaves_no_hook(tiny_gpt2):
    tokens = tiny_gpt2.to_tokens(PROMPTS)
    with torch.no_grad():
        clean = _tl.run(tiny_gpt2, tokens)
        logits, acts = _tl.capture(tiny_gpt2, tokens, [SITE, "blocks.1.hook_resid_post"])
        assert torch.equal(logits, clean)  # capturing changes nothing
        assert set(acts) == {SITE, "blocks.1.hook_resid_post"}
        assert acts[SITE].shape == (*tokens.shape, tiny_gpt2.cfg.d_model)
        assert bool(acts[SITE].abs().sum() > 0)
        with _tl.attach(tiny_gpt2, [(SITE, _zero)]):
            edited, edited_acts = _tl.capture(tiny_gpt2, tokens, [SITE])
        assert torch.equal(edited_acts[SITE], torch.zeros_like(acts[SITE]))  # the edit is seen
        assert not torch.allclose(edited, clean)
        with pytest.raises(RuntimeError, match="body"), _tl.attach(tiny_gpt2, [(SITE, _zero)]):
            raise RuntimeError("the body fails")
        assert torch.equal(_tl.run(tiny_gpt2, tokens), clean)  # no hook left behind either way
    assert SITE in _tl.hook_names(tiny_gpt2)


def test_tokenize_right_pads_each_prompt_as_tokenised_alone(tiny_gpt2):
    tokens, lengths = _tl.tokenize(tiny_gpt2, PROMPTS)
    alone = [tiny_gpt2.to_tokens(p)[0] for p in PROMPTS]
    assert lengths.tolist() == [len(a) for a in alone] and lengths[0] > lengths[1]
    assert tokens.shape == (2, int(lengths.max()))
    for row, own, n in zip(tokens, alone, lengths.tolist(), strict=True):
        assert torch.equal(row[:n], own)
        assert bool((row[n:] == (tiny_gpt2.tokenizer.pad_token_id or 0)).all())
    # an answer's ids are the tokens it gets after a prompt (no BOS), and read back as its text
    (mary,) = _tl.answer_token_ids(tiny_gpt2, " Mary")
    assert int(alone[0][2]) == mary
    assert "".join(_tl.str_tokens(tiny_gpt2, alone[0][1:])) == PROMPTS[0]


def test_dims_name_the_shape_and_a_mismatch_names_each_entry(tiny_gpt2):
    dims = _tl.dims(tiny_gpt2)
    cfg = tiny_gpt2.cfg
    assert (dims["n_layers"], dims["n_heads"], dims["d_model"], dims["d_vocab"]) == (
        cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_vocab,
    )  # fmt: skip
    _tl.check_same_shape(dims, dict(dims, model_name="another name"))  # names may differ
    other = dict(dims, n_layers=dims["n_layers"] + 1, d_vocab=7)
    message = rf"n_layers: saved {dims['n_layers'] + 1}, model {dims['n_layers']}, d_vocab: saved 7"
    with pytest.raises(IncompatibleModelError, match=message):
        _tl.check_same_shape(other, dims)
    assert _tl.first_device(tiny_gpt2) == _tl.output_device(tiny_gpt2) == torch.device("cpu")
