import hashlib
import json
import os
import shutil
import stat
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from ascale import _outputs
from ascale.errors import AscaleError, AscaleWarning, IncompatibleModelError, SavedFileError
from ascale.interventions import ActivationScalars, SteeringVectors
from ascale.io import load, save
from ascale.loading import load_model


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


# ---- atomic, checked saves (issue 10) ----


def _scalars(model, seed: int) -> ActivationScalars:
    iv = ActivationScalars(model, sites="attn_out,mlp_out", n_pos=5)
    with torch.no_grad():
        for p in iv.parameters():
            p.normal_(generator=torch.Generator().manual_seed(seed))
    return iv


def _same(a, b) -> bool:
    return all(torch.equal(a.params[k], b.params[k]) for k in a.params)


def _fail_on_call(monkeypatch, target, name, n):
    """Make `target.name` raise on its `n`-th call (the calls before it run for real)."""
    real, calls = getattr(target, name), []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) == n:
            raise OSError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, flaky)
    return calls


@pytest.mark.parametrize("earlier", [True, False], ids=["over-an-earlier-save", "new-folder"])
def test_a_failure_between_the_two_files_leaves_the_earlier_save_or_nothing(
    tiny_gpt2, tmp_path, monkeypatch, earlier
):
    old, new = _scalars(tiny_gpt2, 0), _scalars(tiny_gpt2, 1)
    folder = tmp_path / "iv"
    if earlier:
        save(old, folder)
    calls = _fail_on_call(monkeypatch, _outputs, "_write_bytes", 2)  # the JSON, after the tensors
    with pytest.raises(OSError, match="injected"):
        save(new, folder)
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == (["iv"] if earlier else [])  # no temp
    if earlier:
        assert _same(load(folder, tiny_gpt2), old)


def test_a_failure_while_swapping_the_folder_in_restores_the_earlier_save(
    tiny_gpt2, tmp_path, monkeypatch
):
    old = _scalars(tiny_gpt2, 0)
    folder = save(old, tmp_path / "iv")
    _fail_on_call(monkeypatch, _outputs.os, "rename", 2)  # old aside, then the new one in: fails
    with pytest.raises(OSError, match="injected"):
        save(_scalars(tiny_gpt2, 1), folder)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iv"]
    assert _same(load(folder, tiny_gpt2), old)


def test_metadata_json_cannot_hold_is_refused_before_anything_is_written(tiny_gpt2, tmp_path):
    old = _scalars(tiny_gpt2, 0)
    folder = save(old, tmp_path / "iv")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(AscaleError, match="cannot be written as JSON"):
        save(_scalars(tiny_gpt2, 1), folder, metadata={"when": object()})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    with pytest.raises(AscaleError, match="cannot be written as JSON"):
        save(old, tmp_path / "new", metadata={"path": tmp_path})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iv"]


def test_nan_parameters_are_refused_before_anything_is_written(tiny_gpt2, tmp_path):
    iv = _scalars(tiny_gpt2, 0)
    with torch.no_grad():
        iv.params["mlp_out"][1, 2] = float("inf")
    with pytest.raises(AscaleError, match="'mlp_out' holds NaN or infinite values; nothing saved"):
        save(iv, tmp_path / "iv")
    assert not any(tmp_path.iterdir())


def test_both_files_get_the_usual_mode_and_tilde_is_expanded(tiny_gpt2, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    umask = os.umask(0o022)
    try:
        folder = save(_scalars(tiny_gpt2, 0), "~/runs/iv")
    finally:
        os.umask(umask)
    assert folder == tmp_path / "home" / "runs" / "iv" and not (tmp_path / "~").exists()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert modes == {"intervention.json": 0o644, "intervention.safetensors": 0o644}
    assert _same(load("~/runs/iv", tiny_gpt2), _scalars(tiny_gpt2, 0))


def test_saving_beside_other_files_warns_and_keeps_them(tiny_gpt2, tmp_path):
    folder = save(_scalars(tiny_gpt2, 0), tmp_path / "iv")
    (folder / "eval.json").write_text("{}")
    with pytest.warns(AscaleWarning, match="also holds \\['eval.json'\\]"):
        save(_scalars(tiny_gpt2, 1), folder)
    assert (folder / "eval.json").is_file()
    assert _same(load(folder, tiny_gpt2), _scalars(tiny_gpt2, 1))


def test_a_tensors_file_changed_after_saving_fails_the_checksum(tiny_gpt2, tmp_path):
    folder = save(_scalars(tiny_gpt2, 0), tmp_path / "iv")
    other = save(_scalars(tiny_gpt2, 1), tmp_path / "other")
    shutil.copy(other / "intervention.safetensors", folder / "intervention.safetensors")
    with pytest.raises(
        SavedFileError, match=r"intervention\.safetensors' does not match the checksum"
    ):
        load(folder, tiny_gpt2)


def _edit(folder, **changes):
    meta = folder / "intervention.json"
    config = json.loads(meta.read_text())
    config.update(changes)
    meta.write_text(json.dumps(config))


def _rehash(folder):
    blob = (folder / "intervention.safetensors").read_bytes()
    _edit(folder, tensors_sha256=hashlib.sha256(blob).hexdigest())


def _truncate(folder):
    path = folder / "intervention.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    _rehash(folder)


def _plant_nan(folder):
    tensors = load_file(folder / "intervention.safetensors")
    tensors["attn_out"][0, 0] = float("nan")
    save_file(tensors, folder / "intervention.safetensors")
    _rehash(folder)


EDITS = {
    "unknown version": (lambda f: _edit(f, format_version=99), "json.*format_version 99"),
    "no version": (lambda f: _edit(f, format_version=None), "json.*format_version None"),
    "unknown method": (lambda f: _edit(f, method="nope"), "json.*unknown method 'nope'"),
    "method edited": (
        lambda f: _edit(f, method="vectors"),
        "json': 'method' was edited after saving \\(it reads 'vectors'; the save recorded "
        "'scalars'",
    ),
    "n_pos edited": (lambda f: _edit(f, n_pos=7), "json': 'n_pos' was edited after saving"),
    "positions edited": (lambda f: _edit(f, positions=[0]), "json': 'positions' was edited"),
    "method edited in an older save": (
        lambda f: (_strip_header(f), _edit(f, method="vectors")),
        "safetensors.*has shape",
    ),
    "hooks edited": (
        lambda f: _edit(f, hooks=["blocks.1.hook_attn_out", "blocks.1.hook_mlp_out"]),
        "json.*do not match 'sites'",
    ),
    "json damaged": (
        lambda f: (f / "intervention.json").write_text("{not json"),
        "json.*not valid JSON",
    ),
    "key missing": (lambda f: _drop(f), "json.*misses the key\\(s\\) \\['tensors_sha256'\\]"),
    "truncated tensors": (_truncate, "safetensors.*not a readable safetensors file"),
    "nan tensor": (_plant_nan, "safetensors.*'attn_out' holds NaN"),
    "tensors missing": (
        lambda f: (f / "intervention.safetensors").unlink(),
        "holds no saved intervention \\(missing intervention.safetensors",
    ),
}


def _strip_header(folder):
    """The save as ascale wrote it before the tensors file's header held the JSON's fields."""
    tensors = load_file(folder / "intervention.safetensors")
    save_file(tensors, folder / "intervention.safetensors")
    _rehash(folder)


def _drop(folder):
    meta = folder / "intervention.json"
    config = json.loads(meta.read_text())
    del config["tensors_sha256"]
    meta.write_text(json.dumps(config))


@pytest.mark.parametrize("edit", EDITS, ids=list(EDITS))
def test_an_edited_or_damaged_save_fails_naming_the_file(tiny_gpt2, tmp_path, edit):
    folder = save(_scalars(tiny_gpt2, 0), tmp_path / "iv")
    change, message = EDITS[edit]
    change(folder)
    with pytest.raises(SavedFileError, match=message) as info:
        load(folder, tiny_gpt2)
    assert str(tmp_path / "iv") in str(info.value)


def test_a_format_1_save_without_checksum_loads_with_a_warning(tiny_gpt2, tmp_path):
    folder = save(_scalars(tiny_gpt2, 0), tmp_path / "iv")
    _drop(folder)
    _edit(folder, format_version=1)
    with pytest.warns(AscaleWarning, match="format 1, which records no checksum"):
        assert _same(load(folder, tiny_gpt2), _scalars(tiny_gpt2, 0))


def test_editing_the_version_to_1_does_not_skip_the_checksum(tiny_gpt2, tmp_path):
    folder = save(_scalars(tiny_gpt2, 0), tmp_path / "iv")
    other = save(_scalars(tiny_gpt2, 1), tmp_path / "other")
    shutil.copy(other / "intervention.safetensors", folder / "intervention.safetensors")
    _edit(folder, format_version=1)
    with pytest.raises(SavedFileError, match="does not match the checksum"):
        load(folder, tiny_gpt2)


def test_loading_into_a_model_of_another_name_warns(tiny_gpt2, tmp_path, monkeypatch):
    folder = save(_scalars(tiny_gpt2, 0), tmp_path / "iv")
    saved = tiny_gpt2.cfg.model_name
    monkeypatch.setattr(tiny_gpt2.cfg, "model_name", "another-model")
    with pytest.warns(
        AscaleWarning, match=f"trained on model '{saved}' and is loaded into 'another-model'"
    ):
        assert _same(load(folder, tiny_gpt2), _scalars(tiny_gpt2, 0))


def test_an_edited_ablation_is_refused_naming_the_field(tiny_gpt2, tmp_path):
    """Issue 36: the checksum covers the JSON's fields (through the tensors file's header), so
    an edit that keeps every shape (circuit scalars' ablation, scalars read as circuit
    scores) is refused instead of loading as something else."""
    from ascale.interventions import CircuitScalars

    circuit = CircuitScalars(tiny_gpt2, sites="mlp_out", positions="all", n_pos=5)
    for field, value in (("ablation", "zero"), ("method", "scalars")):
        folder = save(circuit, tmp_path / field)
        _edit(folder, **{field: value})
        with pytest.raises(SavedFileError, match=f"'{field}' was edited after saving"):
            load(folder, tiny_gpt2)


def test_edited_metadata_loads_with_a_warning_naming_the_key(tiny_gpt2, tmp_path):
    folder = save(_scalars(tiny_gpt2, 0), tmp_path / "iv", metadata={"lr": 0.1, "task": "ioi"})
    meta = json.loads((folder / "intervention.json").read_text())
    _edit(folder, metadata={**meta["metadata"], "lr": 5})
    with pytest.warns(AscaleWarning, match=r"'metadata' edited after saving \(\['lr'\]"):
        assert _same(load(folder, tiny_gpt2), _scalars(tiny_gpt2, 0))


def test_an_older_save_without_the_header_loads_without_a_warning(tiny_gpt2, tmp_path):
    folder = save(_scalars(tiny_gpt2, 0), tmp_path / "iv")
    _strip_header(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _same(load(folder, tiny_gpt2), _scalars(tiny_gpt2, 0))
