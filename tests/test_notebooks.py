"""Every notebook runs top to bottom (smoke setting) and its closing cells assert its claims."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.real
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("ASCALE_SMOKE", "1")
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "strip outputs"
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    assert "all claims hold" in outputs


def test_there_is_a_quickstart():
    assert NOTEBOOKS[0].name == "01_quickstart.ipynb"


def test_every_docs_page_of_a_notebook_has_its_notebook():
    """`make gallery` pages in docs/notebooks/ are made from notebooks that still exist."""
    docs = Path(__file__).parents[1] / "docs" / "notebooks"
    stems = {p.stem for p in NOTEBOOKS}
    assert {p.stem for p in docs.glob("*.md")} <= stems
    for image in (docs / "img").glob("*.png"):
        assert image.stem.rsplit("-", 1)[0] in stems, image
