"""The namespace of the package's docstring examples (``--doctest-modules`` in pyproject.toml).

Examples run on the tiny random GPT-2 of `ascale.testing` (2 layers, 4 heads, ``d_model``
32): ``model``, IOI-like prompts ``train`` / ``test`` and their ABC corruption ``corrupted``,
seeded ``scalars`` on them, and ``ranking`` of those scalars. Each example runs in a fresh
temporary folder, so the files it writes go nowhere else. Examples that need the real SmolLM2
stay ``# doctest: +SKIP``.
"""

from typing import Any

import pytest


@pytest.fixture(scope="session")
def _doctest_objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import torch

    import ascale
    from ascale import testing
    from ascale.data import ContrastSet

    torch.manual_seed(0)
    model = ascale.load_model(testing.build_tiny("gpt2", tmp_path_factory.mktemp("doctest")))
    clean_rows, corrupt_rows = testing.ioi_like_rows(12)
    data = ContrastSet.from_rows(clean_rows, model)
    corrupted = ContrastSet.from_rows(corrupt_rows, model)
    train, test = data.split(test_size=0.5, seed=0)
    scalars = ascale.ActivationScalars(model, sites=["attn_out", "mlp_out"], n_pos=data.n_pos)
    with torch.no_grad():
        for p in scalars.parameters():
            p.normal_(std=0.5)
    return {
        "ascale": ascale,
        "torch": torch,
        "model": model,
        "data": data,
        "corrupted": corrupted,
        "train": train,
        "test": test,
        "tokens": data.tokens,
        "scalars": scalars,
        "ranking": ascale.rank_components(scalars, model=model, data=data),
    }


@pytest.fixture(autouse=True)
def _doctest_namespace(request: pytest.FixtureRequest, doctest_namespace: dict[str, Any]) -> None:
    if type(request.node).__name__ != "DoctestItem":
        return
    doctest_namespace.update(request.getfixturevalue("_doctest_objects"))
    request.getfixturevalue("monkeypatch").chdir(request.getfixturevalue("tmp_path"))
