"""Property-based round trips (hypothesis): data rows through jsonl, interventions through save."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ascale._rows import read_jsonl  # noqa: E402
from ascale.data import ContrastSet, load_jsonl  # noqa: E402
from ascale.interventions import ActivationScalars  # noqa: E402
from ascale.io import load, save  # noqa: E402

FEW = settings(max_examples=25, deadline=None)
# any text but lone surrogates (which no UTF-8 file can hold): newlines, quotes, emoji, ...
TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12)
ANSWERS = [" Mary", " John", " Alice", " Bob", " Italy", " France", " Paris", " Rome"]
ROW = st.fixed_dictionaries(
    {"prompt": TEXT, "correct": st.sampled_from(ANSWERS), "wrong": st.sampled_from(ANSWERS)}
).filter(lambda r: r["correct"] != r["wrong"])


@FEW
@given(rows=st.lists(ROW, min_size=1, max_size=5))
def test_rows_survive_jsonl_and_tokenise_the_same(tiny_gpt2, rows):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # prompts ending in a space warn; that is not tested here
        data = ContrastSet.from_rows(rows, tiny_gpt2)
        with tempfile.TemporaryDirectory() as tmp:
            path = data.to_jsonl(Path(tmp) / "rows.jsonl")
            assert read_jsonl(path) == rows
            again = load_jsonl(path, tiny_gpt2)
    assert again.rows() == rows
    assert torch.equal(again.tokens, data.tokens) and torch.equal(again.lengths, data.lengths)
    assert torch.equal(again.correct_ids, data.correct_ids)


FLOAT = st.floats(allow_nan=False, allow_infinity=False, width=32)


@st.composite
def scalars(draw, model):
    sites = draw(st.sets(st.sampled_from(["attn_out", "mlp_out", "heads", "resid"]), min_size=1))
    layers = draw(st.sets(st.integers(0, model.cfg.n_layers - 1), min_size=1))
    n_pos = draw(st.integers(1, 4))
    iv = ActivationScalars(model, sites=sorted(sites), layers=sorted(layers), n_pos=n_pos)
    with torch.no_grad():
        for p in iv.parameters():
            values = draw(st.lists(FLOAT, min_size=p.numel(), max_size=p.numel()))
            p.copy_(torch.tensor(values, dtype=p.dtype).view_as(p))
    return iv


@FEW
@given(data=st.data())
def test_random_scalars_survive_save_and_load_bit_for_bit(tiny_gpt2, data):
    iv = data.draw(scalars(tiny_gpt2))
    with tempfile.TemporaryDirectory() as tmp:
        again = load(save(iv, Path(tmp) / "iv", metadata={"x": 1}), tiny_gpt2)
    assert again.config() == iv.config()
    for name, p in iv.params.items():
        assert torch.equal(again.params[name].view(torch.int32), p.detach().view(torch.int32))
