"""Rank agreement between attribution methods."""

import math

import pandas as pd
import pytest

from ascale.analysis.agreement import agreement
from ascale.analysis.results import AttributionResult
from ascale.errors import AscaleError, AscaleWarning


def ranking(method, values, site="mlp_out"):
    rows = pd.DataFrame(
        {
            "site": site,
            "layer": 0,
            "head": None,
            "pos": range(len(values)),
            "token": "t",
            "value": values,
        }
    )
    return AttributionResult.from_rows(method, "v", rows)


def test_identical_and_reversed_rankings():
    a = ranking("a", [5.0, 4.0, 3.0, 2.0, 1.0])
    b = ranking("b", [-50.0, 40.0, 30.0, 20.0, 10.0])  # magnitudes count, not signs
    c = ranking("c", [1.0, 2.0, 3.0, 4.0, 5.0])
    result = agreement([a, b, c], k=2)
    assert result.methods == ("a", "b", "c") and result.n_components == 5
    assert result.spearman.loc["a", "b"] == pytest.approx(1.0)
    assert result.spearman.loc["a", "c"] == pytest.approx(-1.0)
    assert result.topk_overlap.loc["a", "b"] == 1.0 and result.topk_overlap.loc["a", "c"] == 0.0
    assert result.to_dict() == {
        "spearman": {"a|b": 1.0, "a|c": -1.0, "b|c": -1.0},
        "topk_overlap": {"a|b": 1.0, "a|c": 0.0, "b|c": 0.0},
        "k": 2,
        "n_components": 5,
    }
    assert result.to_frame().shape == (3, 4)


def test_partial_overlap_and_shared_components_only():
    a = ranking("a", [5.0, 4.0, 3.0, 2.0, 1.0])
    b = ranking("b", [5.0, 1.0, 4.0, 2.0, 3.0, 100.0])  # position 5 exists only in b
    result = agreement({"x": a, "y": b}, k=2)
    assert result.n_components == 5
    assert result.topk_overlap.loc["x", "y"] == 0.5
    assert result.spearman.loc["x", "y"] == pytest.approx(0.3)


def test_constant_rankings_have_no_correlation_and_say_so():
    zeros = [ranking("a", [0.0] * 12), ranking("b", [0.0] * 12)]  # every patching effect zero
    with pytest.warns(AscaleWarning, match=r"\['a', 'b'\] give all 12 shared components the same"):
        result = agreement([*zeros, ranking("c", [float(i) for i in range(12)])], k=3)
    assert math.isnan(result.spearman.loc["a", "b"]) and result.to_dict()["spearman"]["a|b"] is None
    # not 1.0 (the tie-breaking artefact of before): no order, no overlap
    assert math.isnan(result.topk_overlap.loc["a", "b"])
    assert result.to_dict()["topk_overlap"]["a|c"] is None


def test_bad_inputs_are_refused():
    a = ranking("a", [1.0, 2.0])
    with pytest.raises(AscaleError, match="at least two"):
        agreement([a])
    with pytest.raises(AscaleError, match="pass a dict"):
        agreement([a, ranking("a", [2.0, 1.0])])
    with pytest.raises(AscaleError, match="share no component"):
        agreement([a, ranking("b", [1.0, 2.0], site="attn_out")])
