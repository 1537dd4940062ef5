"""The benchmarks' one entry point and one result writer (the benchmarks themselves are not run)."""

import importlib
import inspect
import json

import pytest

from benchmarks import common
from benchmarks.__main__ import main, scripts


def test_every_script_is_found_and_has_a_main_that_takes_argv():
    found = scripts()
    assert {"step", "studies.circuits", "studies.fit_defaults", "gpu.step"} <= set(found)
    assert not {"common", "floor", "setups"} & set(found)  # helpers, not scripts
    for name in found:
        entry = importlib.import_module(f"benchmarks.{name}").main
        assert list(inspect.signature(entry).parameters) == ["argv"], name


def test_the_entry_point_passes_the_arguments_on(capsys):
    with pytest.raises(SystemExit) as done:  # argparse's --help exits 0
        main(["studies.precision", "--help"])
    assert done.value.code == 0
    assert "--rounds" in capsys.readouterr().out


def test_an_unknown_name_lists_the_scripts_and_the_closest(capsys):
    assert main(["stpe"]) == 2
    err = capsys.readouterr().err
    assert "did you mean step?" in err
    assert all(name in err for name in scripts())


def test_every_result_file_says_where_it_came_from(tmp_path):
    path = common.write_result("r", {"x": 1}, folder=tmp_path)
    written = json.loads(path.read_text())
    assert written["x"] == 1
    assert {"cpu", "torch_threads", "load_average_1_5_15", "versions"} <= set(written["machine"])
    head = common.git("rev-parse", "--short", "HEAD")  # None outside a git checkout
    expected = {None} if head is None else {head, f"{head}+dirty"}
    assert written["machine"]["commit"] in expected
    kept = {"x": 2, "machine": {"cpu": "given"}}
    assert json.loads(common.write_result("r", kept, folder=tmp_path).read_text()) == kept


@pytest.mark.parametrize("folder", ["benchmarks/results", "benchmarks/studies/results"])
def test_the_provenance_table_names_each_committed_result_and_the_package_commits_since(folder):
    from benchmarks.summary import provenance_section

    if common.git("rev-parse", "--is-shallow-repository") != "false":
        pytest.skip("not a git checkout with its history (the table counts commits)")
    lines = provenance_section(common.ROOT / folder)
    listed = common.git("ls-tree", "-r", "--name-only", "HEAD", folder).split()
    depth = folder.count("/") + 1
    committed = {  # in the last commit and still here
        f
        for f in listed
        if f.endswith(".json") and f.count("/") == depth and (common.ROOT / f).is_file()
    }
    rows = [line for line in lines if line.startswith("| `")]
    assert {f"{folder}/{row.split('`')[1]}" for row in rows} == committed
    assert all(row.rstrip(" |").rsplit("|", 1)[1].strip().isdigit() for row in rows)


def test_the_suite_and_the_record_are_apart_and_no_fitted_tensors_are_committed():
    suite = {p.stem for p in common.RESULTS.glob("*.json")}
    assert {"step", "memory", "scaling", "demo"} <= suite
    assert not suite & {p.stem for p in common.RECORD.glob("*.json")}
    committed = common.git("ls-files", "benchmarks")
    assert committed is None or ".safetensors" not in committed


def test_the_docs_generated_tables_are_what_the_results_give():
    """A figure on more than one page comes from a result file: ``python -m benchmarks
    summary`` rewrites each generated region, and a page edited by hand fails here."""
    from benchmarks.summary import GENERATED, GENERATED_PAGES, fill_generated

    names = set()
    for page in GENERATED_PAGES:
        text = (common.ROOT / page).read_text(encoding="utf-8")
        assert fill_generated(text) == text, f"{page}: run python -m benchmarks summary"
        names |= {name for name in GENERATED if f"<!-- generated: {name} " in text}
    assert names == set(GENERATED)
