"""compare() and sweep(): the pipeline as library calls, on the planted tiny model."""

import json

import pytest

import ascale
from ascale.errors import AscaleError


@pytest.fixture(scope="module")
def compared(planted):
    model, clean, corrupted = planted
    return ascale.compare(
        model,
        clean,
        corrupted,
        methods=["scalars", "vectors", "activation_patching", "attribution_patching", "random"],
        sites="heads,mlp_out",
        positions=[-1],
        patch_n=6,
        refit_ks=[1],
        fit_options={
            "scalars": {"steps": 40, "sparsity": "proximal", "stop": "none"},
            "vectors": {"steps": 5},
        },
        n_random=3,
        progress=False,
    )


def test_compare_scores_every_method_on_one_grid(compared, planted):
    _, clean, _ = planted
    summary = compared.summary()
    assert list(summary.index) == [
        "scalars",
        "vectors",
        "activation_patching",
        "attribution_patching",
        "random",
    ]
    assert len(compared.grid) == 2 * 4 + 2  # heads and MLPs at the last position
    curves = compared.circuits.curves
    assert set(curves.groupby("method").size()) == {10}
    # the planted head alone carries the task: patching's top-1 circuit keeps most of it
    assert compared.circuits.f_at(1)["activation_patching"] > 0.5
    assert summary.loc["random", "cpr"] < summary.loc["activation_patching", "cpr"]
    assert set(compared.agreement_by_type) == {"heads", "mlp_out"}
    assert compared.info["n_train"] + compared.info["n_test"] == len(clean)
    assert list(compared.refit.index) == [1]
    json.dumps(compared.to_dict())  # plain data all the way down


def test_compare_refuses_unknown_methods_and_bad_sizes(compared, planted):
    model, clean, corrupted = planted
    with pytest.raises(AscaleError, match="unknown method"):
        ascale.compare(model, clean, corrupted, methods=["scalar"])
    with pytest.raises(AscaleError, match="patch_n"):
        ascale.compare(model, clean, corrupted, patch_n=0)
    with pytest.raises(AscaleError, match=r"fitted_metrics for \['scalars'\]"):
        ascale.compare(
            model, clean, corrupted, fitted_metrics={"scalars": compared.metrics["scalars"]}
        )


def test_compare_takes_the_metrics_of_its_fitted_interventions_as_given(compared, planted):
    model, clean, corrupted = planted
    given = compared.interventions["vectors"]
    measured = compared.metrics["vectors"]
    marked = ascale.Metrics(**{**measured.to_dict(), "faithfulness_kl": 123.0})
    again = ascale.compare(
        model, clean, corrupted, methods=["vectors", "random"], sites="heads,mlp_out",
        positions=[-1], fitted={"vectors": given}, fitted_metrics={"vectors": marked},
        n_random=1, progress=False,
    )  # fmt: skip
    assert again.metrics["vectors"].faithfulness_kl == 123.0  # not measured again
    assert again.interventions["vectors"] is given


def test_sweep_returns_one_row_per_setting_and_split(planted):
    model, clean, _ = planted
    train, test = clean.split(test_size=0.5, seed=0)
    table = ascale.sweep(
        model,
        train,
        test,
        methods=["scalars"],
        lambda_min=[1e-3, 1.0],
        sites="mlp_out",
        fit_options={"steps": 3, "stop": "none"},
        progress=False,
    )
    assert len(table) == 4 and set(table["split"]) == {"train", "test"}
    assert {"flip_rate_forward", "faithfulness_kl", "n_active", "moved_rate_forward"} <= set(
        table.columns
    )
    fig = ascale.plot.plot_tradeoffs(table)
    assert len(fig.data) == 4 and fig.layout.xaxis.type == "log"
    assert "vectors" in fig.layout.xaxis.title.text  # a vector counts as one unit, not d_model


def test_effect_ranking_puts_the_planted_head_first_with_support_from_its_gradient(planted):
    model, clean, corrupted = planted
    result = ascale.compare(
        model, clean, corrupted, methods=["scalars_effect", "random"], sites="heads",
        positions=[-1], fit_options={"scalars": {"steps": 40}}, n_random=2, progress=False,
    )  # fmt: skip
    ranking = result.rankings["scalars_effect"]
    assert list(result.rankings) == ["scalars_effect"] and "support" in ranking.components
    top = ranking.top(1).iloc[0]
    assert top["component"] == f"heads L1H2 @{clean.n_pos - 1}"
    assert top["support"] > 0 and top["value"] > 0  # supports the correct answer; the edit flips
    assert result.summary().loc["scalars_effect", "cpr"] > result.summary().loc["random", "cpr"]


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
