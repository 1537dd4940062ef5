import json

import pytest
import torch

from ascale.errors import AscaleError, IncompatibleModelError
from ascale.interventions import ActivationScalars, SteeringVectors
from ascale.io import load, save
from ascale.models import load_model


@pytest.mark.parametrize("cls", [ActivationScalars, SteeringVectors])
def test_save_load_round_trip_gives_identical_logits(tiny, tmp_path, cls):
    tokens = tiny.to_tokens(["When Mary and John went", "When Alice and Bob went"])
    iv = cls(tiny, sites="heads,mlp_out", layers=[1], positions=[0, -1], n_pos=tokens.shape[1])
    with torch.no_grad():
        for p in iv.parameters():
            p.normal_()
    folder = save(iv, tmp_path / "iv", metadata={"task": "unit"})
    assert sorted(f.name for f in folder.iterdir()) == [
        "intervention.json",
        "intervention.safetensors",
    ]
    meta = json.loads((folder / "intervention.json").read_text())
    assert meta["method"] == cls.method and meta["metadata"] == {"task": "unit"}
    assert "blocks.1.attn.hook_z" in meta["hooks"] and meta["model"]["n_layers"] == 2
    again = load(folder, tiny)
    assert type(again) is cls and repr(again) == repr(iv)
    with torch.no_grad():
        with iv.applied(tiny):
            first = tiny(tokens)
        with again.applied(tiny):
            second = tiny(tokens)
    assert torch.equal(first, second)


def test_loading_into_another_shape_fails_clearly(tiny_dirs, tmp_path):
    gpt2, neox = load_model(tiny_dirs["gpt2"]), load_model(tiny_dirs["neox"])
    iv = ActivationScalars(gpt2, sites="attn_out", positions="shared")
    save(iv, tmp_path / "iv")
    with pytest.raises(IncompatibleModelError, match="n_layers: saved 2, model 3"):
        load(tmp_path / "iv", neox)


def test_no_intervention_in_folder(tiny_gpt2, tmp_path):
    with pytest.raises(AscaleError, match="holds no saved intervention"):
        load(tmp_path, tiny_gpt2)


def test_applying_to_the_wrong_model_fails(tiny_dirs):
    gpt2, neox = load_model(tiny_dirs["gpt2"]), load_model(tiny_dirs["neox"])
    iv = ActivationScalars(gpt2, sites="attn_out", positions="shared")
    with pytest.raises(IncompatibleModelError, match="n_layers"), iv.applied(neox):
        pass
