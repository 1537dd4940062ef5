"""Task builders on the real embedded SmolLM2 model (the `smol` fixture of conftest.py)."""

from __future__ import annotations

import csv
import re
from importlib.resources import files

import pytest
import torch

from ascale._tl import answer_token_ids
from ascale.errors import AscaleError
from ascale.tasks import ccc, ccc_corrupt, ioi, ioi_corrupt
from ascale.tasks.ccc import CCC_TEMPLATES
from ascale.tasks.ioi import IOI_TEMPLATES

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def ccc_set(smol):
    return ccc(smol)


@pytest.fixture(scope="module")
def ioi_set(smol):
    return ioi(smol)


def _names_in(text: str, name: str) -> list[int]:
    return [m.start() for m in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", text)]


def _clean_diff(model, data, k: int = 100) -> torch.Tensor:
    """Correct-minus-wrong logit at the last token, on the first `k` rows (one length)."""
    data = data.subset(range(min(k, len(data))))
    with torch.no_grad():
        last = model(data.tokens)[:, -1]
    idx = torch.arange(len(data))
    return last[idx, data.correct_ids] - last[idx, data.wrong_ids]


def _check_set(model, data) -> None:
    assert 100 <= len(data) <= 200
    assert data.is_uniform
    assert (data.correct_ids != data.wrong_ids).all()
    for c, w in zip(data.correct[:20], data.wrong[:20], strict=True):
        assert c != w
        assert len(answer_token_ids(model, c)) == 1 == len(answer_token_ids(model, w))
    assert len(set(data.prompts)) == len(data)


def test_tables_are_clean():
    text = files("ascale.tasks").joinpath("countries.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    assert list(rows[0]) == ["country", "capital"]
    countries = [r["country"] for r in rows]
    capitals = [r["capital"] for r in rows]
    assert len(countries) >= 150
    assert len(set(countries)) == len(countries)
    assert len(set(capitals)) == len(capitals)
    assert all(c.strip() == c and c for c in countries + capitals)
    assert {"country": "Italy", "capital": "Rome"} in rows
    names = files("ascale.tasks").joinpath("names.txt").read_text(encoding="utf-8").split("\n")
    names = [n for n in names if n]
    assert len(names) >= 100
    assert len(set(names)) == len(names)
    assert all(n.isalpha() and n[0].isupper() for n in names)


def test_ccc_builds_one_length_of_conflicts(smol, ccc_set):
    _check_set(smol, ccc_set)
    assert CCC_TEMPLATES[0] == "{capital} is the capital of {false_country}. {capital} is in"
    for p, c, w in zip(ccc_set.prompts, ccc_set.correct, ccc_set.wrong, strict=True):
        capital = p.split(" is the capital of ")[0]
        assert p == f"{capital} is the capital of {w.strip()}. {capital} is in"
        assert _names_in(p, w.strip()) and not _names_in(p, c.strip())


def test_ccc_is_a_real_conflict(smol, ccc_set):
    diff = _clean_diff(smol, ccc_set)
    share = (diff > 0).float().mean().item()
    print(f"ccc: n_pos={ccc_set.n_pos} clean accuracy {share:.3f}, mean diff {diff.mean():.2f}")
    # SmolLM2-135M does not know every capital, and the context pushes the false country: the
    # clean model answers with world knowledge on about half the prompts (0.53 for seed 0 on the
    # first 100), so both steering directions are real work on this set.
    assert 0.5 <= share <= 0.95


def test_ccc_known_only_is_answered(smol):
    data = ccc(smol, n=40, known_only=True)
    diff = _clean_diff(smol, data)
    share = (diff > 0).float().mean().item()
    print(f"ccc known_only: {len(data)} prompts, accuracy {share:.3f}, diff {diff.mean():.2f}")
    assert share >= 0.7


def test_ccc_is_deterministic_per_seed(smol, ccc_set):
    assert ccc(smol, seed=0).prompts == ccc_set.prompts
    assert ccc(smol, seed=1).prompts != ccc_set.prompts


def test_ccc_lengths(smol, ccc_set):
    mixed = ccc(smol, template="all", length=None, n=150)
    assert len(set(mixed.lengths.tolist())) >= 3
    other = ccc(smol, length=ccc_set.n_pos + 1, n=20)
    assert set(other.lengths.tolist()) == {ccc_set.n_pos + 1}
    with pytest.raises(AscaleError):
        ccc(smol, length=2)


def test_ccc_corrupt_swaps_the_false_country(smol, ccc_set):
    bad = ccc_corrupt(ccc_set, smol)
    assert torch.equal(bad.lengths, ccc_set.lengths)
    assert bad.correct == ccc_set.correct and bad.wrong == ccc_set.wrong
    for p, q, c, w in zip(bad.prompts, ccc_set.prompts, bad.correct, bad.wrong, strict=True):
        assert p != q
        assert not _names_in(p, w.strip()) and not _names_in(p, c.strip())
    assert ccc_corrupt(ccc_set, smol, seed=0).prompts == bad.prompts


def test_ioi_builds_both_orders(smol, ioi_set):
    _check_set(smol, ioi_set)
    orders = []
    for p, c, w in zip(ioi_set.prompts, ioi_set.correct, ioi_set.wrong, strict=True):
        io, s = _names_in(p, c.strip()), _names_in(p, w.strip())
        assert len(io) == 1 and len(s) == 2
        orders.append("ABBA" if io[0] < s[0] else "BABA")
    assert orders[:4] == ["ABBA", "BABA", "ABBA", "BABA"]
    assert abs(orders.count("ABBA") - orders.count("BABA")) <= 1


def test_ioi_clean_model_solves_it(smol, ioi_set):
    diff = _clean_diff(smol, ioi_set)
    share = (diff > 0).float().mean().item()
    print(f"ioi: n_pos={ioi_set.n_pos} clean accuracy {share:.3f}, mean diff {diff.mean():.2f}")
    assert share >= 0.7


def test_ioi_seeds_orders_and_lengths(smol, ioi_set):
    assert ioi(smol, seed=0).prompts == ioi_set.prompts
    assert ioi(smol, seed=1).prompts != ioi_set.prompts
    abba = ioi(smol, orders=("ABBA",), n=20)
    assert all(
        p.startswith(f"When{c} and") for p, c in zip(abba.prompts, abba.correct, strict=True)
    )
    mixed = ioi(smol, templates="all", length=None, n=150)
    assert len(set(mixed.lengths.tolist())) >= 3
    assert ioi(smol, templates="all").is_uniform
    assert len(IOI_TEMPLATES) >= 8
    with pytest.raises(AscaleError):
        ioi(smol, orders=("ABAB",))
    with pytest.raises(AscaleError):
        ioi(smol, templates=["{A} met {B}, and {B} waved to"])


def test_ioi_corrupt_is_abc(smol, ioi_set):
    bad = ioi_corrupt(ioi_set, smol)
    assert torch.equal(bad.lengths, ioi_set.lengths)
    assert bad.correct == ioi_set.correct and bad.wrong == ioi_set.wrong
    template = IOI_TEMPLATES[0].replace("{A} and {B}", "(\\w+) and (\\w+)").replace("{B}", "(\\w+)")
    for p, q, c, w in zip(bad.prompts, ioi_set.prompts, bad.correct, bad.wrong, strict=True):
        assert p != q
        x, y, z = re.fullmatch(template, p).groups()
        assert len({x, y, z, c.strip(), w.strip()}) == 5


@pytest.mark.real
def test_ccc_prompts_share_one_layout(smol):
    data = ccc(smol, n=60, seed=0)
    where = {int((data.tokens[i] == data.wrong_ids[i]).nonzero()[0]) for i in range(len(data))}
    assert len(where) == 1  # the in-context country sits at the same position in every prompt
