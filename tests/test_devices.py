"""Devices and precision: dtype and device checks, float32 interventions and loss on a
bfloat16 model, saves that do not depend on where they were made, and a model split by a device
map (Accelerate) giving the unsplit model's logits and fits.

No GPU here: a device map is tested with CPU and disk (offloaded) targets, which go through the
same Accelerate dispatch hooks as a map over GPUs.
"""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file

import ascale
from ascale import _tl, loading
from ascale.errors import AscaleError, ModelNotAvailableError
from ascale.loading import load_model
from ascale.training import _passes


def test_bad_devices_and_dtypes_fail_before_loading(tiny_dirs):
    folder = tiny_dirs["gpt2"]
    with pytest.raises(AscaleError, match="dtype must be one of float32, bfloat16, float16"):
        load_model(folder, dtype="float8")
    with pytest.raises(AscaleError, match="unknown device 'banana'"):
        load_model(folder, device="banana")
    if not torch.cuda.is_available():
        with pytest.raises(ModelNotAvailableError, match="'cuda' is not available here"):
            load_model(folder, device="cuda")
    with pytest.raises(AscaleError, match="device or device_map, not both"):
        load_model(folder, device="cuda:1", device_map="auto")
    with pytest.raises(AscaleError, match="device_map must be 'auto'"):
        load_model(folder, device_map="everywhere")
    assert loading.parse_dtype("bfloat16") is torch.bfloat16
    assert loading.parse_dtype(torch.float16) is torch.float16


@pytest.fixture(scope="module")
def bf16(tiny_dirs):
    return load_model(tiny_dirs["gpt2"], dtype="bfloat16")


@pytest.fixture(scope="module")
def rows():
    from ascale.testing import ioi_like_rows

    return ioi_like_rows(12)[0]


def test_a_bfloat16_model_trains_float32_scalars_on_a_float32_loss(bf16, rows):
    data = ascale.ContrastSet.from_rows(rows, bf16)
    assert next(bf16.parameters()).dtype is torch.bfloat16
    scalars = ascale.ActivationScalars(bf16, sites="attn_out,mlp_out,heads", n_pos=data.n_pos)
    assert {p.dtype for p in scalars.parameters()} == {torch.float32}
    logits = _passes.answer_logits(bf16, scalars, data, 1.0)
    assert logits.dtype is torch.float32
    seen = {}

    def record(act, hook):
        seen["dtype"] = act.dtype
        return act

    hook = (scalars.sites[0].hook_name(0), record)
    with scalars.applied(bf16, 1.0), _tl.attach(bf16, [hook]):
        _tl.run(bf16, data.tokens)
    assert seen["dtype"] is torch.bfloat16  # the model stays in its own dtype after the edit
    result = ascale.fit(bf16, scalars, data, steps=3, batch_size=6, stop="none", progress=False)
    assert all(torch.isfinite(torch.tensor(v)).all() for v in result.history.values())
    assert {p.dtype for p in scalars.parameters()} == {torch.float32}
    assert float(scalars.l1().detach()) > 0


def test_a_save_of_a_bfloat16_fit_is_float32_on_cpu_and_loads_with_the_same_metrics(
    bf16, tiny_dirs, rows, tmp_path
):
    data = ascale.ContrastSet.from_rows(rows, bf16)
    scalars = ascale.ActivationScalars(bf16, sites="attn_out,mlp_out", n_pos=data.n_pos)
    ascale.fit(bf16, scalars, data, steps=3, batch_size=6, stop="none", progress=False)
    before = ascale.evaluate(bf16, scalars, data)
    ascale.save(scalars, tmp_path / "iv")
    tensors = load_file(tmp_path / "iv" / "intervention.safetensors")
    assert {(t.dtype, t.device.type) for t in tensors.values()} == {(torch.float32, "cpu")}
    again = ascale.load(tmp_path / "iv", bf16)
    assert {p.device for p in again.parameters()} == {_tl.first_device(bf16)}
    assert ascale.evaluate(bf16, again, data) == before
    # the same file on the float32 model: same parameters, metrics within bfloat16's error
    f32 = load_model(tiny_dirs["gpt2"])
    on_f32 = ascale.load(tmp_path / "iv", f32)
    for name, p in scalars.params.items():
        assert torch.equal(on_f32.params[name], p)
    metrics = ascale.evaluate(f32, on_f32, data)
    assert metrics.logit_diff_forward == pytest.approx(before.logit_diff_forward, abs=0.1)


GPT2_MAP = {
    "transformer.wte": "cpu",
    "transformer.wpe": "cpu",
    "transformer.h.0": "cpu",
    "transformer.h.1": "disk",  # offloaded: Accelerate brings its weights in for each use
    "transformer.ln_f": "cpu",
    "lm_head": "cpu",
}


def test_a_model_split_by_a_device_map_gives_the_unsplit_logits_and_fit(tiny_dirs, rows):
    split = load_model(tiny_dirs["gpt2"], device_map=GPT2_MAP, compatibility_mode=False)
    whole = load_model(tiny_dirs["gpt2"], compatibility_mode=False)
    placed = split.original_model.hf_device_map
    assert placed == GPT2_MAP
    for name, p in split.original_model.named_parameters():
        if re.search(r"\.attn\.[qkv]\.", name):
            continue  # TransformerLens' own split copies of GPT-2's fused qkv, not HF weights
        module = next(m for m in GPT2_MAP if name.startswith(m))
        # on the mapped device; disk-offloaded weights wait on `meta` between uses
        assert p.device.type == {"cpu": "cpu", "disk": "meta"}[GPT2_MAP[module]], name
    data = ascale.ContrastSet.from_rows(rows, whole)
    assert torch.equal(_tl.run(split, data.tokens), _tl.run(whole, data.tokens))
    fitted = []
    for model in (split, whole):
        iv = ascale.ActivationScalars(model, sites="attn_out,mlp_out,heads", n_pos=data.n_pos)
        ascale.fit(model, iv, data, steps=3, batch_size=6, stop="none", progress=False)
        fitted.append((iv, ascale.evaluate(model, iv, data)))
    (a, metrics_a), (b, metrics_b) = fitted
    for name, p in a.params.items():
        torch.testing.assert_close(p, b.params[name], atol=1e-6, rtol=0)
    assert metrics_a.to_dict() == pytest.approx(metrics_b.to_dict(), abs=1e-5)


def test_the_command_line_takes_device_dtype_and_device_map(tiny_dirs, rows, tmp_path, capsys):
    import json

    from ascale.cli import main

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    base = ["fit", "--model", str(tiny_dirs["gpt2"]), "--data", str(data), "--steps", "2"]
    if not torch.cuda.is_available():
        assert main([*base, "--out", str(tmp_path / "gpu"), "--device", "cuda"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "'cuda' is not available here" in err
    assert main([*base, "--out", str(tmp_path / "f"), "--device-map", "nowhere"]) == 2
    assert "nor a JSON object of module name" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    evaluate = ["evaluate", "--intervention", str(tmp_path / "bf16"), "--data", str(data)]
    assert main([*evaluate, "--model", str(tiny_dirs["gpt2"]), "--dtype", "float32"]) == 0
    assert json.loads((tmp_path / "bf16" / "eval.json").read_text())["n_prompts"] == len(rows)
