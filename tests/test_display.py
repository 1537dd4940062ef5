"""Results that show themselves in Jupyter: `_repr_html_` tables, and `ascale.plot.figure`."""

import pytest

import ascale


@pytest.fixture(scope="module")
def fitted(planted):
    model, clean, corrupted = planted
    scalars = ascale.ActivationScalars(model, sites=["heads", "mlp_out"], positions=[-1])
    result = ascale.fit(model, scalars, clean, steps=4, stop="none", progress=False)
    return model, clean, corrupted, scalars, result


def test_an_unfitted_intervention_shows_its_repr_line(planted):
    model, *_ = planted
    html = ascale.ActivationScalars(model, sites=["heads"])._repr_html_()
    assert "unbound" in html and "<table" not in html


def test_a_fitted_intervention_shows_a_table_per_site(fitted):
    *_, scalars, _ = fitted
    summary = scalars.summary()
    assert list(summary.index) == ["heads", "mlp_out"]
    assert summary["params"].sum() == scalars.n_params
    assert summary["active"].sum() == scalars.n_active()
    assert summary["l1"].sum() == pytest.approx(float(scalars.l1().detach()), rel=1e-5)
    html = scalars._repr_html_()
    assert "<table" in html and "mlp_out" in html


def test_vectors_summarise_by_norm(planted):
    model, clean, _ = planted
    vectors = ascale.SteeringVectors(model, sites=["attn_out"], positions=[-1])
    ascale.fit(model, vectors, clean, steps=2, stop="none", progress=False)
    assert (vectors.summary()["min"] >= 0).all()  # norms, never negative


def test_fit_result_shows_first_kept_and_last_steps(fitted):
    *_, result = fitted
    html = result._repr_html_()
    assert "FitResult" in html and "<table" in html
    assert result.stop_reason in html
    assert html.count("<tr>") == 1 + 2  # the index-name row, steps 1 and 4 (kept = last)


def test_metrics_show_a_row_per_sign(fitted):
    model, clean, _, scalars, _ = fitted
    metrics = ascale.evaluate(model, scalars, clean)
    frame = metrics.to_frame()
    assert frame.loc["beta=+1 (to wrong)", "share at target"] == metrics.flip_rate_forward
    assert frame.loc["clean", "logit diff (wrong - correct)"] == metrics.logit_diff_clean
    assert "KL" in metrics._repr_html_()


def test_a_ranking_shows_its_top_ten_and_plots_its_map(fitted):
    model, clean, _, scalars, _ = fitted
    ranking = ascale.rank_components(scalars, model=model, data=clean)
    html = ranking._repr_html_()
    assert "<table" in html and html.count("<tr>") == 10  # the header row is styled
    assert "<th>effect</th>" in html
    fig = ascale.plot.figure(ranking, site="heads")
    assert fig.data and fig.data[0].type == "heatmap"


def test_patching_ranking_has_no_effect_column(planted):
    model, clean, corrupted = planted
    patched = ascale.attribution_patching(model, clean, corrupted, sites="heads", positions=[-1])
    assert "<th>effect</th>" not in patched._repr_html_()


def test_comparison_and_circuits_show_tables_and_plot_curves(fitted):
    model, clean, corrupted, scalars, _ = fitted
    result = ascale.compare(
        model,
        clean,
        corrupted,
        methods=["scalars", "attribution_patching", "random"],
        sites="heads,mlp_out",
        positions=[-1],
        fitted={"scalars": scalars},
        patch_n=4,
        n_random=2,
        progress=False,
    )
    html = result.agreement._repr_html_()
    assert "<table" in html and html.count("<tr>") == len(result.agreement.pairs())
    assert ascale.plot.figure(result.agreement).data
    for shown in (result, result.circuits):
        html = shown._repr_html_()
        assert "<table" in html and "attribution_patching" in html
        fig = ascale.plot.figure(shown)
        assert {t.name.split(" (")[0] for t in fig.data} == {
            "scalars",
            "attribution_patching",
            "random",
        }


def test_activation_patching_progress_bar_can_be_silenced(planted, capsys):
    model, clean, corrupted = planted
    ascale.activation_patching(
        model, clean.subset(range(2)), corrupted.subset(range(2)), sites="mlp_out", progress=False
    )
    assert "activation patching" not in capsys.readouterr().err
    ascale.activation_patching(
        model, clean.subset(range(2)), corrupted.subset(range(2)), sites="mlp_out", progress=True
    )
    assert "activation patching" in capsys.readouterr().err
