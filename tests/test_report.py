"""The HTML report works offline; `ascale compare` writes it and the agreement numbers."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from ascale.analysis.agreement import agreement
from ascale.analysis.results import AttributionResult
from ascale.cli import main
from ascale.report import write_report

SCRIPT = re.compile(r"<script([^>]*)>(.*?)</script>", re.DOTALL | re.IGNORECASE)


def _ranking(method, seed):
    values = np.random.default_rng(seed).normal(size=6)
    rows = pd.DataFrame(
        {
            "site": "attn_out",
            "layer": [0, 0, 0, 1, 1, 1],
            "head": None,
            "pos": [0, 1, 2] * 2,
            "token": ["a", " b", " c"] * 2,
            "value": values,
        }
    )
    return AttributionResult.from_rows(method, "v", rows)


def _assert_offline(html: str) -> None:
    """No tag loads anything from elsewhere: scripts are inline, and outside them (where the
    inlined plotly.js keeps links in its own strings) no URL appears at all."""
    scripts = SCRIPT.findall(html)
    assert scripts and not [attrs for attrs, _ in scripts if "src" in attrs.lower()]
    outside = SCRIPT.sub("", html)
    assert not re.findall(r"(?:https?:)?//[\w.-]+\.\w+", outside)
    assert "<link" not in outside.lower() and "@import" not in outside
    assert sum("plotly.js v" in body for _, body in scripts) == 1  # the library, inlined once


def test_report_is_self_contained(tmp_path):
    rankings = [_ranking("scalars", 0), _ranking("activation_patching", 1)]
    path = write_report(
        tmp_path / "out",
        rankings,
        agreement=agreement(rankings, k=2),
        metrics={"scalars": {"flip_rate_forward": 0.9, "n_params": 6}},
        title="unit <report>",
    )
    assert path == tmp_path / "out" / "report.html"
    html = path.read_text(encoding="utf-8")
    _assert_offline(html)
    assert "unit &lt;report&gt;" in html and "flip rate, beta=+1" in html
    assert "Agreement between methods" in html and "Top 20 components" in html


@pytest.mark.real
def test_compare_on_smollm2_writes_report_and_agreement(tmp_path):
    out = tmp_path / "cmp"
    code = main(
        ["compare", "--task", "ioi", "--n", "10", "--test-size", "0.4", "--steps", "4",
         "--layers", "28,29", "--positions", "-1", "--patch-n", "4", "--k", "5",
         "--lr", "0.1", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    numbers = json.loads((out / "compare.json").read_text())
    ranked = ["scalars", "circuit", "activation_patching", "attribution_patching"]
    pairs = {f"{a}|{b}" for i, a in enumerate(ranked) for b in ranked[i + 1 :]}
    agree = numbers["agreement"]
    assert set(agree["spearman"]) == pairs and set(agree["topk_overlap"]) == pairs
    assert agree["k"] == 5 and numbers["n_components"] == 2 * 9
    assert all(-1 <= r <= 1 for r in agree["spearman"].values() if r is not None)
    summary = {row["method"]: row for row in numbers["summary"]}
    methods = {"scalars", "circuit", "activation_patching", "attribution_patching", "random"}
    assert set(summary) == methods
    assert all(row["cpr"] is not None and row["cmd"] >= 0 for row in summary.values())
    assert len(numbers["top"]["activation_patching"]) == 10
    html = (out / "report.html").read_text(encoding="utf-8")
    _assert_offline(html)
    assert " to" in html  # the position axis carries the tokens


def test_the_edge_section_draws_curves_table_and_circuit(tmp_path, tiny_ioi):
    import ascale

    model, clean, corrupted = tiny_ioi
    ranking = ascale.eap(model, clean, corrupted)
    scored = ascale.score_edges(model, clean, corrupted, [ranking], n_random=1)
    html = write_report(
        tmp_path, edge_circuits=scored, edge_rankings=[ranking], edge_k=12
    ).read_text(encoding="utf-8")
    _assert_offline(html)
    assert '<a href="#edges">Edge circuits</a>' in html and "eap: the circuit as a graph" in html
    assert html.count("plotly-graph-div") == 3  # signed and absolute curves, the drawing
    top = ranking.to_frame()["edge"].iloc[0]
    assert top.replace("<", "&lt;").replace(">", "&gt;") in html  # the top edges' table
