"""``ascale compare --level edges`` (issue 34): compare.json, report.html with the edge section,
one MIB graph file per ranking, the prompt cap, and its bad inputs as one-line errors."""

import json
from html import escape

import pytest
import torch

import ascale
from ascale.analysis.edge_compare import EDGE_METHODS
from ascale.analysis.edge_results import CARRIED, MIB_CIRCUIT_FRACTIONS
from ascale.cli import main
from ascale.data import ContrastSet, corrupted_from_rows
from ascale.testing import ioi_like_rows


@pytest.fixture
def planted_model(monkeypatch, planted):
    """`ascale.load_model` gives the tiny GPT-2 with one planted IOI head."""
    monkeypatch.setattr(ascale, "load_model", lambda *args, **kwargs: planted[0])
    return planted[0]


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: the command must refuse before any work."""

    def refuse(*args, **kwargs):
        raise AssertionError("the command loaded a model before checking its inputs")

    monkeypatch.setattr(ascale, "load_model", refuse)


def _rows_file(path, corrupted=True, n=12):
    clean, corrupt = ioi_like_rows(n)
    rows = [
        {**row, "corrupted": c["prompt"]} if corrupted else row
        for row, c in zip(clean, corrupt, strict=True)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ascale compare: error: ") and "Traceback" not in err
    return lines[0]


def test_edge_compare_writes_the_summary_the_report_and_mib_files(tmp_path, capsys, planted_model):
    data = _rows_file(tmp_path / "rows.jsonl")
    out = tmp_path / "out"
    argv = ["compare", "--level", "edges", "--data", str(data), "--steps", "2", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "compare.json").read_text())
    summary = {row["method"]: row for row in result["summary"]}
    assert list(summary) == list(EDGE_METHODS)  # every edge method by default, random last
    for row in summary.values():
        assert isinstance(row["cpr"], float) and isinstance(row["cmd"], float)
    info = result["info"]
    assert set(info["timings_s"]) >= {"eap", "eap_ig", "edge_circuit", "circuits"}
    assert info["level"] == "edges" and info["counterfactuals"] == "the rows' 'corrupted' prompts"
    assert info["n_train"] + info["n_test"] == info["n_used"] == 12  # under --edge-n's 32
    assert {row["method"] for row in result["curves"]} == set(EDGE_METHODS)
    graph = ascale.EdgeGraph.of(planted_model)
    assert result["n_edges"] == graph.n_edges
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="edges"' in html and f"{info['drawn']}: the circuit as a graph" in html
    assert info["drawn"] in ("eap", "eap_ig", "edge_circuit")
    # one MIB file per ranking (not random), read back to the same scores as the Python API's
    assert sorted(p.name for p in (out / "mib").iterdir()) == [
        f"{m}.json" for m in ("eap", "eap_ig", "edge_circuit")
    ]
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    clean = ContrastSet.from_rows(rows, planted_model)
    corrupt = corrupted_from_rows(rows, planted_model, clean=clean)
    again = ascale.compare_edges(
        planted_model, clean, corrupt, methods=("eap", "eap_ig"), n_random=1, progress=False
    )
    for method in ("eap", "eap_ig"):
        read_graph, scores, _ = ascale.read_mib_json(out / "mib" / f"{method}.json")
        assert read_graph.edges == graph.edges
        assert torch.equal(scores, again.rankings[method].scores.float()), method
    for method in ("eap", "eap_ig", "edge_circuit"):  # and to compare.json's top edges
        _, scores, _ = ascale.read_mib_json(out / "mib" / f"{method}.json")
        for top in result["top"][method]:
            assert float(scores[graph.edge_ids[top["edge"]]]) == pytest.approx(top["score"])
    printed = capsys.readouterr().out
    assert "edge circuits on the test split" in printed and "cpr" in printed


def test_edge_n_caps_the_prompts_of_each_split(tmp_path, capsys, planted_model):
    data = _rows_file(tmp_path / "rows.jsonl")
    out = tmp_path / "out"
    argv = ["compare", "--level", "edges", "--data", str(data), "--methods", "eap,random"]
    assert main([*argv, "--edge-n", "3", "--out", str(out)]) == 0
    info = json.loads((out / "compare.json").read_text())["info"]
    assert info["n_train"] <= 3 and info["n_test"] <= 3 and info["n_used"] == 6
    assert info["edge_n"] == 3 and info["n_prompts"] == 12
    assert [p.name for p in (out / "mib").iterdir()] == ["eap.json"]


def test_edge_compare_on_a_task_builds_its_counterfactuals(tmp_path, capsys, planted_model):
    out = tmp_path / "out"
    argv = ["compare", "--level", "edges", "--task", "ioi", "--n", "12", "--methods", "eap"]
    assert main([*argv, "--out", str(out)]) == 0
    result = json.loads((out / "compare.json").read_text())
    assert result["info"]["counterfactuals"] == "ascale.tasks.ioi_corrupt"
    assert [row["method"] for row in result["summary"]] == ["eap"]
    assert result["info"]["drawn"] == "eap" and (out / "mib" / "eap.json").is_file()


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_edge_compare_ablates_to_the_mean_or_zero_without_counterfactuals(
    ablation, tmp_path, capsys, planted_model, monkeypatch
):
    calls = []
    original = ascale.compare_edges

    def spy(model, data, corrupted, **kwargs):
        calls.append((corrupted, kwargs["ablation"]))
        return original(model, data, corrupted, **kwargs)

    monkeypatch.setattr(ascale, "compare_edges", spy)
    data = _rows_file(tmp_path / "bare.jsonl", corrupted=False)  # none needed
    out = tmp_path / "out"
    argv = ["compare", "--level", "edges", "--data", str(data), "--methods", "eap,random"]
    assert main([*argv, "--ablation", ablation, "--out", str(out)]) == 0
    assert calls == [(None, ablation)]
    info = json.loads((out / "compare.json").read_text())["info"]
    assert info["ablation"] == ablation
    assert info["counterfactuals"] == f"none used ({ablation} ablation)"
    page = (out / "report.html").read_text(encoding="utf-8")
    said = f"{ablation} ablation: an edge outside a circuit carries {CARRIED[ablation]}."
    assert escape(said) in page  # the description
    assert escape(f"every other edge carries {CARRIED[ablation]} ({ablation} ablation)") in page
    assert f"{ablation} ablation)" in capsys.readouterr().out


def test_mib_binary_writes_the_scored_circuits_at_mibs_fractions(tmp_path, capsys, planted_model):
    """``--mib-binary``: per ranking, MIB's nine binary circuits in each order, read back to
    the edge counts `score_edges` scored (compare.json's curves) and to the ranking's scores."""
    data = _rows_file(tmp_path / "rows.jsonl")
    out = tmp_path / "out"
    argv = ["compare", "--level", "edges", "--data", str(data), "--methods", "eap,random"]
    assert main([*argv, "--mib-binary", "--out", str(out)]) == 0
    result = json.loads((out / "compare.json").read_text())
    assert result["info"]["mib_binary"] == ["mib/eap/abs-False/", "mib/eap/abs-True/"]
    assert sorted(p.name for p in (out / "mib").iterdir()) == ["eap", "eap.json"]
    _, scores, _ = ascale.read_mib_json(out / "mib" / "eap.json")
    curves = {row["fraction"]: row for row in result["curves"] if row["method"] == "eap"}
    for absolute, column in ((False, "n_signed"), (True, "n_abs")):
        folder = out / "mib" / "eap" / f"abs-{absolute}"
        assert len(list(folder.iterdir())) == len(MIB_CIRCUIT_FRACTIONS) == 9
        for p in MIB_CIRCUIT_FRACTIONS:
            _, read, in_graph = ascale.read_mib_json(folder / f"{p:g}.json")
            assert int(in_graph.sum()) == curves[p][column] <= curves[p]["k"], (absolute, p)
            assert torch.equal(read, scores)
    assert any(curves[p]["n_signed"] > 0 for p in MIB_CIRCUIT_FRACTIONS)  # not all empty


EDGES = "compare --level edges --out {tmp}/out --data {tmp}/"
BAD = {  # id: (argv after formatting {tmp}, split on spaces; exit status; a piece of the line)
    "edges without corrupted rows": (
        EDGES + "bare.jsonl",
        1,
        "--level edges ablates edges to counterfactual prompts unless --ablation says "
        "otherwise, and",
    ),
    "counterfactual ablation without corrupted rows": (
        EDGES + "bare.jsonl --ablation counterfactual",
        1,
        "or use --ablation mean or --ablation zero",
    ),
    "unknown edge method": (
        EDGES + "rows.jsonl --methods eap,eap_gi",
        2,
        "unknown method 'eap_gi' in 'eap,eap_gi'; methods are",
    ),
    "node method at edge level": (
        EDGES + "rows.jsonl --methods eap,scalars",
        1,
        "--methods: 'scalars' ranks components (--level nodes); at --level edges methods are",
    ),
    "edge method at node level": (
        "compare --out {tmp}/out --data {tmp}/rows.jsonl --methods eap_ig",
        1,
        "--methods: 'eap_ig' ranks edges (--level edges)",
    ),
    "node option at edge level": (
        EDGES + "rows.jsonl --patch-n 4",
        1,
        "--patch-n applies at --level nodes only",
    ),
    "unknown ablation at edge level": (
        EDGES + "rows.jsonl --ablation median",
        2,
        "argument --ablation: invalid choice: 'median'",
    ),
    "mib-binary at node level": (
        "compare --out {tmp}/out --data {tmp}/rows.jsonl --mib-binary",
        1,
        "--mib-binary writes edge circuits: add --level edges",
    ),
    "edge-n at node level": (
        "compare --out {tmp}/out --data {tmp}/rows.jsonl --edge-n 8",
        1,
        "--edge-n caps the prompts of --level edges",
    ),
    "edge-n 1": (EDGES + "rows.jsonl --edge-n 1", 2, "--edge-n: '1' is not a whole number"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_edge_input_is_one_line_before_any_work(case, tmp_path, capsys, no_model):
    _rows_file(tmp_path / "rows.jsonl")
    _rows_file(tmp_path / "bare.jsonl", corrupted=False)
    template, status, piece = BAD[case]
    assert main(template.format(tmp=tmp_path).split(" ")) == status
    line = _one_error_line(capsys)
    assert piece in line, line
    assert not (tmp_path / "out").exists()
