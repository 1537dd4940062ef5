"""Loading models (`ascale.loading`): local folders frozen in eval mode, the plain Bridge against
Hugging Face, clear errors for unknown names, and the embedded model's cache."""

import hashlib

import pytest
import torch

from ascale import _tl, loading
from ascale.errors import ModelNotAvailableError
from ascale.loading import cache_dir, load_model


def test_local_folders_load_frozen_in_eval_mode(tiny_dirs):
    for kind, folder in tiny_dirs.items():
        model = load_model(folder)
        assert not model.training, kind
        assert not any(p.requires_grad for p in model.parameters()), kind
        assert (
            "blocks.0.attn.hook_z" in model.hook_dict and "blocks.0.hook_mlp_out" in model.hook_dict
        )


def test_plain_bridge_matches_hugging_face_and_compat_keeps_differences(tiny_dirs):
    from transformers import AutoModelForCausalLM

    folder = tiny_dirs["llama"]
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    plain = load_model(folder, compatibility_mode=False)
    compat = load_model(folder)
    tokens = plain.to_tokens(["When Mary and John went to the store"])
    with torch.no_grad():
        expected = hf(tokens).logits
        torch.testing.assert_close(plain(tokens), expected, rtol=0, atol=1e-5)
        centred = compat(tokens)
    diff = lambda x: x[..., 5] - x[..., 7]  # noqa: E731 - logit differences survive centring
    torch.testing.assert_close(diff(centred), diff(expected), rtol=0, atol=1e-4)


def test_unknown_names_and_paths_fail_clearly(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import
    with pytest.raises(ModelNotAvailableError, match="embedded default"):
        load_model("no-such-org/no-such-model-ascale")
    with pytest.raises(ModelNotAvailableError, match="no GGUF file"):
        load_model(tmp_path / "missing.gguf")


def test_embedded_model_is_cached_by_gguf_hash(smol):
    assert _tl.dims(smol) == {
        "model_name": "smollm2-135m",
        "n_layers": 30,
        "n_heads": 9,
        "d_model": 576,
        "d_head": 64,
        "d_vocab": 49152,
    }
    assert smol.cfg.default_prepend_bos is False
    gguf = loading._embedded_gguf("smollm2-135m")
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()[:16]
    assert (cache_dir() / f"{gguf.stem}-{digest}" / "model.safetensors").is_file()
    assert smol.to_str_tokens("Rome is in")[0] == "Rome"  # no BOS
