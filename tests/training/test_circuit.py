"""Fitting circuit scalars (`ascale.fit_circuit`, `ascale.training.circuit`): a planted circuit
recovered at its size, the errors, and the ablations that need no counterfactual (tiny models)."""

import pytest
import torch

import ascale
from ascale.errors import AscaleError
from ascale.testing import PLANTED_HEAD, PLANTED_LAYER


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


def test_errors_name_what_is_missing(tiny_ioi):
    model, data, corrupted = tiny_ioi
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


def test_mean_and_zero_ablation_need_no_counterfactual(tiny_ioi):
    model, data, _ = tiny_ioi
    for ablation in ("mean", "zero"):
        circuit = ascale.CircuitScalars(model, sites="mlp_out", ablation=ablation)
        result = ascale.fit_circuit(model, circuit, data, steps=2, progress=False)
        assert result.settings["ablation"] == ablation and len(result.history["loss"]) == 2
