"""Circuit scalars (`ascale.CircuitScalars`, `ascale.fit_circuit`): the edit's two ends against the
clean model and `score_circuits`' ablation, the gradient against attribution patching, a planted
circuit recovered, and the errors, save/load, compare and the command line on tiny models."""

import json

import numpy as np
import pytest
import torch

import ascale
from ascale.analysis import _passes
from ascale.analysis.circuit_fit import _ablated
from ascale.cli import main
from ascale.data import ContrastSet
from ascale.errors import AscaleError
from ascale.interventions import soft_top_k
from ascale.testing import PLANTED_HEAD, PLANTED_LAYER, ioi_like_rows

GRIDS = [
    {"sites": "heads,mlp_out", "positions": "all"},
    {"sites": "heads", "positions": [-1, 2]},
    {"sites": "attn_out", "positions": "shared"},
]


@pytest.fixture(scope="module")
def ioi(tiny_gpt2):
    clean_rows, corrupt_rows = ioi_like_rows(12)
    return (
        tiny_gpt2,
        ContrastSet.from_rows(clean_rows, tiny_gpt2),
        ContrastSet.from_rows(corrupt_rows, tiny_gpt2),
    )


def _logits(model, circuit, data, source, keep):
    with circuit.circuit(model, source, keep):
        return model(data.tokens)[:, -1]


@pytest.mark.parametrize("where", GRIDS)
def test_keeping_everything_is_the_clean_model_and_keeping_nothing_is_score_circuits_ablation(
    ioi, where
):
    model, data, corrupted = ioi
    circuit = ascale.CircuitScalars(model, n_pos=data.n_pos, **where)
    grid = ascale.Grid.of(circuit).with_length(data.n_pos)
    source = _ablated(model, circuit, data, corrupted)
    n = len(grid)
    with torch.no_grad():
        clean = model(data.tokens)[:, -1]
        kept = _logits(model, circuit, data, source, torch.ones(n))
        ablated = _logits(model, circuit, data, source, torch.zeros(n))
        reference = _passes.patched_deltas(
            model, data, grid, torch.ones(1, n, dtype=torch.bool), source
        )[0]
    rows = torch.arange(len(data))
    delta = ablated[rows, data.wrong_ids] - ablated[rows, data.correct_ids]
    assert torch.equal(kept, clean)  # bit for bit
    assert torch.equal(delta, reference)  # exactly the ablation circuit scoring does
    # beta = 0 is the clean model whatever the mask
    with torch.no_grad(), circuit.circuit(model, source, torch.zeros(n), beta=0.0):
        assert torch.equal(model(data.tokens)[:, -1], clean)


@pytest.mark.parametrize("where", GRIDS[:2])
def test_the_gradient_at_the_clean_model_is_attribution_patching(ioi, where):
    model, data, corrupted = ioi
    circuit = ascale.CircuitScalars(model, n_pos=data.n_pos, **where)
    grid = ascale.Grid.of(circuit).with_length(data.n_pos)
    source = _ablated(model, circuit, data, corrupted)
    keep = torch.ones(len(grid), requires_grad=True)
    logits = _logits(model, circuit, data, source, keep)
    rows = torch.arange(len(data))
    m = logits[rows, data.correct_ids] - logits[rows, data.wrong_ids]
    (grad,) = torch.autograd.grad(m.sum(), keep)
    estimated = ascale.attribution_patching(model, data, corrupted, like=grid)
    values = estimated.components.set_index("component")["value"].reindex(list(grid.names))
    # attribution patching's noising effect is normalised by the clean-to-corrupt change of Δ
    gap = float(_passes.clean_deltas(model, corrupted).mean() + m.detach().mean())
    np.testing.assert_allclose(grad.numpy() / len(data) / gap, values.to_numpy(), atol=1e-5)


def test_soft_top_k_keeps_the_top_k_and_refuses_other_sizes():
    scores = torch.tensor([0.3, 2.0, -1.0, 1.0])
    assert soft_top_k(scores, 2, 0.0).tolist() == [0.0, 1.0, 0.0, 1.0]
    soft = soft_top_k(scores, 2, 0.5)
    assert bool((soft[[1, 3]] > 0.5).all() and (soft[[0, 2]] < 0.5).all())
    assert soft_top_k(scores, 4, 0.0).tolist() == [1.0] * 4
    with pytest.raises(AscaleError, match=r"k must lie in 1\.\.4"):
        soft_top_k(scores, 0, 0.5)


@pytest.mark.parametrize("objective", ["faithful", "logit_diff"])
def test_a_planted_circuit_is_recovered_at_its_size(planted, objective):
    model, clean, corrupted = planted
    circuit = ascale.CircuitScalars(model, sites="heads", positions=[-1], n_pos=clean.n_pos)
    result = ascale.fit_circuit(
        model, circuit, clean, corrupted, objective=objective, steps=40, progress=False
    )
    assert result.steps_run == 40 and result.method == "circuit"
    ranking = ascale.rank_components(circuit, model=model, data=clean)
    planted_name = f"heads L{PLANTED_LAYER}H{PLANTED_HEAD} @{clean.n_pos - 1}"
    assert ranking.top(1)["component"].tolist() == [planted_name]
    assert ranking.support().idxmax() == planted_name  # the CPR order agrees
    scored = ascale.score_circuits(model, clean, [ranking], grid=ascale.Grid.of(circuit),
                                   corrupted=corrupted, n_random=0)  # fmt: skip
    assert float(scored.f_at(1)["circuit"]) > 0.9  # the one head keeps the behaviour


def test_errors_name_what_is_missing(ioi):
    model, data, corrupted = ioi
    circuit = ascale.CircuitScalars(model, sites="heads", positions=[-1], n_pos=data.n_pos)
    with pytest.raises(AscaleError, match="'corrupted'"):
        ascale.fit_circuit(model, circuit, data, None, steps=2, progress=False)
    with pytest.raises(AscaleError, match="objective must be one of"):
        ascale.fit_circuit(model, circuit, data, corrupted, objective="kl", progress=False)
    with pytest.raises(AscaleError, match="fit_circuit"):
        ascale.fit(model, circuit, data, steps=2, progress=False)
    with pytest.raises(AscaleError, match=r"inside `with scalars\.circuit"), circuit.applied(model):
        model(data.tokens)
    with pytest.raises(AscaleError, match="no_grad"), torch.no_grad():
        ascale.fit_circuit(model, circuit, data, corrupted, steps=2, progress=False)
    with pytest.raises(AscaleError, match="ablation must be one of"):
        ascale.CircuitScalars(model, sites="heads", ablation="resample")


def test_mean_and_zero_ablation_need_no_counterfactual(ioi):
    model, data, _ = ioi
    for ablation in ("mean", "zero"):
        circuit = ascale.CircuitScalars(model, sites="mlp_out", ablation=ablation)
        result = ascale.fit_circuit(model, circuit, data, steps=2, progress=False)
        assert result.settings["ablation"] == ablation and len(result.history["loss"]) == 2


def test_save_and_load_keep_the_scores_and_the_ablation(ioi, tmp_path):
    model, data, _ = ioi
    circuit = ascale.CircuitScalars(model, sites="heads", ablation="mean", n_pos=data.n_pos)
    ascale.fit_circuit(model, circuit, data, steps=3, progress=False)
    ascale.save(circuit, tmp_path / "circuit")
    again = ascale.load(tmp_path / "circuit", model)
    assert isinstance(again, ascale.CircuitScalars) and again.ablation == "mean"
    assert torch.equal(again.scores(), circuit.scores())


def test_compare_ranks_and_times_the_circuit_method(planted):
    model, clean, corrupted = planted
    result = ascale.compare(
        model,
        clean,
        corrupted,
        methods=["circuit", "attribution_patching", "random"],
        sites="heads",
        positions=[-1],
        patch_n=4,
        n_random=2,
        fit_options={"circuit": {"steps": 5}},
        progress=False,
    )
    assert {"circuit", "attribution_patching", "random"} == set(result.circuits.methods)
    assert result.info["timings_s"]["circuit"] > 0
    assert isinstance(result.interventions["circuit"], ascale.CircuitScalars)


def test_the_command_line_fits_saves_and_scores_circuit_scalars(tiny_dirs, tiny_gpt2, tmp_path):
    clean_rows, corrupt_rows = ioi_like_rows(16)
    rows = [{**c, "corrupted": x["prompt"]} for c, x in zip(clean_rows, corrupt_rows, strict=True)]
    data_file = tmp_path / "rows.jsonl"
    data_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["fit", "--model", str(tiny_dirs["gpt2"]), "--method", "circuit", "--sites", "heads"]
    argv += ["--positions", "-1", "--steps", "3", "--data", str(data_file)]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    saved = ascale.load(tmp_path / "run", tiny_gpt2)
    assert isinstance(saved, ascale.CircuitScalars)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"cpr", "cmd"} <= set(metrics["test"][0])
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps(r) + "\n" for r in clean_rows))
    argv[-1] = str(bare)
    assert main([*argv, "--out", str(tmp_path / "bare")]) != 0
    assert not (tmp_path / "bare").exists()
